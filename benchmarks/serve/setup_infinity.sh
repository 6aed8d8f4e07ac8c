#!/usr/bin/env bash
# A throwaway venv for infinity (infinity-emb), the peer server of benchmarks/serve_load.py.
# Its pins (transformers, sentence-transformers, fastapi, ...) are its own, so it lives here
# (benchmarks/serve/.venv, git-ignored) and never touches ./.venv.
#
#   bash benchmarks/serve/setup_infinity.sh    # a few minutes, ~1.5 GB; rerunning it is a no-op
#
# serve_load.py finds the venv by itself and skips infinity, saying why, without it.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# torch pinned first (CPU build), as in conda_env_setup.sh
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "torch==2.13.0" "infinity-emb[server,torch]==${INFINITY_VERSION:-0.0.78}"
.venv/bin/infinity_emb --help >/dev/null
.venv/bin/python -c "import infinity_emb; print('[infinity] ready:', infinity_emb.__version__)"
