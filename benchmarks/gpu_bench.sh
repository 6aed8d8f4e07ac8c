#!/usr/bin/env bash
# The GPU benchmark as one command, run from the repository root on the device machine (benchmarks/GPU.md).
#
#   bash benchmarks/gpu_bench.sh                                       # GPU: 100,000 texts per engine + float32 parity
#   bash benchmarks/gpu_bench.sh --device cpu --n 300 --parity-n 100   # CPU smoke test
#
# Extra arguments go to benchmarks/gpu_bench.py. Before it runs, this checks what the device machine
# may lack and names it: the Python packages, and the two carried inputs made here (the float16
# checkpoint from convert_fp16.py, the corpus from gpu_bench.py --write-corpus). Wheels carried in
# .whl/ are installed into /tmp/site first, since that machine reaches no package registry.
# With $OUT set, the log (progress and table) and gpu_bench.json land there.
# Exit status: gpu_bench.py's (0 ok, 1 parity FAIL, 2 bad input), or 3 when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

FOLDER="${FOLDER:-weights/all-MiniLM-L6-v2-fp16}"
CORPUS="${CORPUS:-gpu_carry/mixed_corpus.txt}"
if [ -z "${PY:-}" ]; then  # this checkout's virtual environment here; the image's python3 (which holds PyTorch) there
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null || { echo "error: no Python interpreter '$PY'; set PY=/path/to/python" >&2; exit 3; }

if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing the wheels carried in .whl/ into /tmp/site" >&2
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

# Presence and versions only (find_spec, metadata): importing torch and transformers twice would cost seconds of the lease.
"$PY" - <<'EOF' || exit 3
import importlib.metadata, importlib.util, platform, sys
needed = {"torch": "torch", "numpy": "numpy", "tokenizers": "tokenizers", "safetensors": "safetensors", "tqdm": "tqdm",
          "huggingface_hub": "huggingface-hub", "transformers": "transformers", "sentence_transformers": "sentence-transformers"}
missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
found = [f"{package} {importlib.metadata.version(package)}" for package in needed.values() if package not in missing]
print(f"== python {platform.python_version()} ({sys.executable}): {', '.join(found)}", file=sys.stderr)
if missing:
    print(f"error: missing Python packages: {' '.join(missing)}; carry them as wheels in .whl/ (benchmarks/GPU.md)", file=sys.stderr)
    sys.exit(1)
EOF

[ -f "$FOLDER/model.safetensors" ] || { echo "error: $FOLDER/model.safetensors is missing; make it here with python benchmarks/convert_fp16.py and carry $FOLDER" >&2; exit 3; }
[ -f "$CORPUS" ] || { echo "error: $CORPUS is missing; make it here with python benchmarks/gpu_bench.py --write-corpus $CORPUS and carry $(dirname "$CORPUS")" >&2; exit 3; }
if command -v nvidia-smi >/dev/null; then
  echo "== $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)" >&2
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  "$PY" benchmarks/gpu_bench.py --folder "$FOLDER" --corpus "$CORPUS" --out "$OUT/gpu_bench.json" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
else
  "$PY" benchmarks/gpu_bench.py --folder "$FOLDER" --corpus "$CORPUS" "$@"
fi
