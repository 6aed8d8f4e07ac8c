"""benchmarks/speed.py --quick runs end to end and prints every column (its speeds are not asserted: they are noise here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require_data

REFERENCE = "sentence-transformers fp32"
COLUMNS = [
    "engine",
    "corpus",
    "sent/s",
    "tokens/s",
    "peak RSS MB",
    "× ST fp32",
    "roofline",
    "STS-B ρ×100",
    "min cos vs fp32",
    "note",
]


@pytest.mark.slow
def test_quick_benchmark_prints_every_column(tmp_path: Path):
    require_data("stsbenchmark/sts-test.csv")
    require_data("conll2003/train.txt")
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == COLUMNS
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(r) == len(COLUMNS) for r in rows)

    data = json.loads(out.read_text())
    assert data["gemm_peak_gflops"]["float32"] > 0 and data["gemm_peak_gflops"]["bfloat16"] > 0
    by_key = {(r["engine"], r["corpus"]): r for r in data["rows"]}
    engines = {r["engine"] for r in data["rows"]}
    assert {
        "sentence-transformers fp32",
        "sentence-transformers bf16 autocast",
        "onnxruntime fp32",
        "ours fp32 (default)",
    } <= engines
    assert len(data["rows"]) == 3 * len(engines) == len(rows)  # every engine on short, long and mixed
    for r in data["rows"]:
        assert (
            r["sentences_per_s"] > 0
            and r["tokens_per_s"] > r["sentences_per_s"]
            and r["ratio"] > 0
            and r["roofline"] > 0
        )
    for corpus in ("short", "long", "mixed"):
        assert by_key[("sentence-transformers fp32", corpus)]["ratio"] == 1.0
        assert by_key[("ours fp32 (default)", corpus)]["min_cos"] > 0.99999  # the reference of that column: itself
        assert by_key[("onnxruntime fp32", corpus)]["min_cos"] > 0.99999  # same weights, same maths
        assert by_key[(REFERENCE, corpus)]["min_cos"] > 0.99999  # sentence-transformers: our parity
    # the quality column is real: on the same 100 pairs, our fp32 ranks exactly as sentence-transformers does
    st, mine = (
        by_key[("sentence-transformers fp32", "short")]["spearman"],
        by_key[("ours fp32 (default)", "short")]["spearman"],
    )
    assert 50 < st < 100 and abs(st - mine) < 0.01
