#!/usr/bin/env bash
# A throwaway venv for the peer engines of benchmarks/speed.py: sentence-transformers with its
# ONNX Runtime and OpenVINO backends, and NNCF with datasets for OpenVINO's static int8 (calibrated
# offline on STS-B dev sentences, a datasets.Dataset built in memory). Their optimum/transformers pins differ from the project's,
# so they live here (benchmarks/peers/.venv, git-ignored) and never touch ./.venv.
#
#   bash benchmarks/peers/setup.sh      # about 3 minutes, ~1.5 GB; rerunning it is a no-op
#
# speed.py finds the venv by itself and runs each peer in its own process with its python; delete
# the folder to drop the peers (speed.py then prints why it skipped them).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# torch pinned first (CPU build), as in conda_env_setup.sh; the rest are the versions issue 16 measured,
# plus NNCF and datasets (issue 31's static int8). optimum-intel[openvino] asks only nncf>=2.19 and
# openvino>=2025.4, so openvino, its tokenizers and NNCF are pinned to one release train here; datasets
# 5 needs huggingface-hub 1.x, which transformers <4.58 (optimum-intel 1.27's bound) does not take: 4.8.5.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "torch==2.13.0" "sentence-transformers[onnx,openvino]==5.7.0" "optimum-intel==1.27.0" \
  "onnxruntime==1.32.0" "openvino==2026.4.1" "openvino-tokenizers==2026.4.1.0" "nncf==3.4.0" \
  "datasets==4.8.5" scipy
.venv/bin/python -m pip check --disable-pip-version-check
.venv/bin/python -c "import sentence_transformers, optimum.intel, optimum.onnxruntime, openvino, nncf, datasets; print('[peers] ready: sentence-transformers', sentence_transformers.__version__, '/ openvino', openvino.__version__, '/ nncf', nncf.__version__)"
