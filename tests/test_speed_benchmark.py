"""benchmarks/speed.py --quick end to end: each engine in its own worker process, every column
printed. The run here takes the engines whose rows the checks need (sentence-transformers, our
fp32, bfloat16, int8 and auto, and the peers where benchmarks/peers/.venv exists), as a whole --quick
run takes 2-5 minutes; that every engine is listed is checked on its own. Speeds are not asserted
(they are noise here); the quality columns, memory and load times are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require_data

sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # benchmarks/ is not a package: from its folder, put on the path above
from speed import OURS_FP32, REFERENCE

PEERS_VENV = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
COLUMNS = [
    "engine",
    "corpus",
    "sent/s",
    "tokens/s",
    "peak RSS MB",
    "load s",
    "× ST fp32",
    "roofline",
    "STS-B ρ×100",
    "min cos vs fp32",
    "note",
]


def test_every_engine_is_listed_and_the_cpu_decides_the_precision_rows():
    """What a whole run (--quick or not) runs: the always-run engines, float16 only where it is native
    (else it is the float32 row again), a forced-bf16 row only where bf16 would fall back, and the
    compiled and peer rows when asked for."""
    always = [
        REFERENCE,
        "sentence-transformers bf16 autocast",
        "onnxruntime fp32",
        OURS_FP32,
        "ours fp32 max_batch_tokens=2048",
        "ours --dtype bfloat16",
        "ours --dtype int8",
        "ours --dtype auto",
    ]
    plain = [engine.name for engine in speed.engines(compile_too=False, with_peers=False)]
    fp16, bf16 = speed.native("float16"), speed.native("bfloat16")
    assert plain == always + ["ours --dtype float16"] * fp16 + ["ours bf16 forced (emulated)"] * (not bf16)
    every = [engine.name for engine in speed.engines(compile_too=True, with_peers=True)]
    compiled = ["ours fp32 torch.compile"] + ["ours bf16 torch.compile"] * bf16
    compiled += ["ours int8 torch.compile"] * speed.native("int8")
    assert every == plain + compiled + [
        "sentence-transformers onnx fp32",
        f"sentence-transformers onnx int8 ({speed.int8_quantize_config()})",
        "sentence-transformers openvino",
    ]


@pytest.mark.slow
def test_quick_benchmark_prints_every_column(tmp_path: Path):
    require_data("stsbenchmark/sts-test.csv")
    require_data("conll2003/train.txt")
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "speed.py"),
            "--quick",
            "--json",
            str(out),
            "--only",  # with the reference and our fp32, which always run
            "ours --dtype",  # bfloat16, int8, auto (and float16 where it is native)
            "sentence-transformers onnx",
            "sentence-transformers openvino",
        ],
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
    peaks = data["gemm_peak_gflops"]
    assert peaks["float32"] > 0 and peaks["bfloat16"] > 0 and peaks["int8"] > 0
    assert {r["compute"] for r in data["rows"]} <= set(peaks)  # each row's roofline has its peak
    assert data["cpu"] and data["cpu"] in proc.stdout  # the top of the output names the machine
    assert isinstance(data["cpu_flags"], list)
    by_key = {(r["engine"], r["corpus"]): r for r in data["rows"]}
    engines = {r["engine"] for r in data["rows"]}
    ours = {REFERENCE, OURS_FP32, "ours --dtype bfloat16", "ours --dtype int8", "ours --dtype auto"}
    assert ours <= engines and "onnxruntime fp32" not in engines  # --only ran these, and only these
    assert len(data["rows"]) == 3 * len(engines) == len(rows)  # every engine on short, long and mixed
    for r in data["rows"]:
        assert (
            r["sentences_per_s"] > 0
            and r["tokens_per_s"] > r["sentences_per_s"]
            and r["ratio"] > 0
            and r["roofline"] > 0
        )
        # each engine in its own process: at least Python plus torch, and the model
        assert 100 < r["peak_rss_mb"] < 8000, r
        assert r["load_s"] > 0, r
    for corpus in ("short", "long", "mixed"):
        assert by_key[(REFERENCE, corpus)]["ratio"] == 1.0
        assert by_key[(OURS_FP32, corpus)]["min_cos"] > 0.99999  # the reference of that column: itself
        assert by_key[(REFERENCE, corpus)]["min_cos"] > 0.99999  # sentence-transformers: our parity
    # the reduced precisions keep their quality budgets (where one falls back it is float32: closer still)
    assert by_key[("ours --dtype int8", "short")]["min_cos"] > 0.99
    assert by_key[("ours --dtype bfloat16", "short")]["min_cos"] > 0.999
    assert by_key[("ours --dtype auto", "short")]["note"].startswith("auto: ")  # what auto picked, and why
    # the quality column is real: on the same 100 pairs, our fp32 ranks exactly as sentence-transformers does
    st, mine = by_key[(REFERENCE, "short")]["spearman"], by_key[(OURS_FP32, "short")]["spearman"]
    assert 50 < st < 100 and abs(st - mine) < 0.01

    peers = sorted(e for e in engines if e.startswith(("sentence-transformers onnx", "sentence-transformers openvino")))
    if not PEERS_VENV.is_file():
        assert peers == [] and "peers skipped" in proc.stdout and "peers skipped" in proc.stderr
        return
    assert len(peers) == 3, peers
    int8 = next(e for e in peers if e.startswith("sentence-transformers onnx int8 ("))
    assert by_key[(int8, "short")]["compute"] == "int8"  # its roofline is against the int8 peak
    for peer in ("sentence-transformers onnx fp32", int8, "sentence-transformers openvino"):
        assert by_key[(peer, "short")]["min_cos"] > 0.95, peer
    assert by_key[("sentence-transformers openvino", "short")]["min_cos"] > 0.999
    assert "OpenVINO picks its own precision" in by_key[("sentence-transformers openvino", "short")]["note"]
