"""benchmarks/speed.py --quick end to end: each engine in its own worker process, every column
printed. The run here takes the engines whose rows the checks need (sentence-transformers, our
fp32, bfloat16, int8 and auto, and the peers where benchmarks/peers/.venv exists), as a whole --quick
run takes 5-8 minutes; that every engine is listed, and how the tables and the batch sweep are
written, are checked on their own, without workers. Speeds are not asserted (they are noise
here); the quality columns, memory and load times are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require_data

sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # benchmarks/ is not a package: from its folder, put on the path above
from speed import OURS_FP32, REFERENCE, Row

PEERS_VENV = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
COLUMNS = [
    "engine",
    "corpus",
    "sent/s (default)",
    "best batch: sent/s (size)",
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
        "ours --dtype int8 --fuse",
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
        "sentence-transformers openvino static int8 (NNCF, 300 STS-B dev)",
    ]
    # every row is swept but the emulated one (minutes per encode, and only there to show the fallback)
    assert [e.name for e in speed.engines(compile_too=True, with_peers=True) if not e.swept] == [
        "ours bf16 forced (emulated)"
    ] * (not bf16)


def row(engine: str, corpus: str = "short", sweep: dict[int, float] | None = None) -> Row:
    """A table row with made-up numbers; `sweep` (batch size -> sentences/s) as run() fills it."""
    sweep = sweep or {}
    best = max(sweep, key=sweep.get, default=None)
    return Row(engine, corpus, 300.0, 4200.0, 800.0, 3.0, "float32", sweep=sweep, best_batch=best)


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_shows_the_default_batch_and_the_sweeps_best():
    """Short rows carry the best batch as "sent/s (size)"; rows without a sweep (long, mixed, or a row
    that was not swept) a dash."""
    lines = speed.table(
        [row("a", sweep={32: 310.0, 256: 1234.4, 1024: 900.0}), row("a", "long"), row("b")]
    ).splitlines()
    assert cells(lines[0]) == COLUMNS
    assert len(cells(lines[1])) == len(COLUMNS)  # the separator
    by_engine_corpus = {(c[0], c[1]): c for c in map(cells, lines[2:])}
    assert by_engine_corpus["a", "short"][2:4] == ["300", "1,234 (256)"]
    assert by_engine_corpus["a", "long"][3] == "–" and by_engine_corpus["b", "short"][3] == "–"


def test_the_sweep_table_gives_each_size_and_the_slowest_share_of_the_best():
    sweep = {32: 400.0, 64: 500.0, 1024: 300.0}
    lines = speed.sweep_table(
        [row("ours", sweep=sweep), row("ours", "long"), row("not swept"), row("peer", sweep={32: 80.0})]
    ).splitlines()
    assert cells(lines[0]) == ["engine (short corpus, sent/s)", "32", "64", "1024", "slowest ÷ best"]
    assert [cells(line)[0] for line in lines[2:]] == ["ours", "peer"]  # short rows that were swept, in order
    assert cells(lines[2])[1:] == ["400", "**500**", "300", "0.60"]  # the best in bold; 300 / 500
    assert cells(lines[3])[1:] == ["**80**", "–", "–", "1.00"]  # a size an engine did not run: a dash


def test_batch_sizes_parse_the_sweep_option():
    from speed_worker import batch_sizes

    assert batch_sizes("32,64, 1024") == (32, 64, 1024)
    assert batch_sizes("") == ()  # no sweep
    with pytest.raises(Exception, match="positive"):
        batch_sizes("32,0")


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
    main_table, _, sweep_part = proc.stdout.partition("Batch-size sweep")
    lines = [line for line in main_table.splitlines() if line.startswith("|")]
    assert cells(lines[0]) == COLUMNS
    rows = [cells(line) for line in lines[2:]]
    assert all(len(r) == len(COLUMNS) for r in rows)
    sweep_lines = [line for line in sweep_part.splitlines() if line.startswith("|")]
    assert cells(sweep_lines[0])[1:] == ["32", "128", "slowest ÷ best"]  # --quick's sweep

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
        if r["corpus"] == "short":  # every engine here is swept, at --quick's two sizes
            assert sorted(r["sweep"]) == ["128", "32"] and r["best_sentences_per_s"] == max(r["sweep"].values()), r
        else:
            assert r["sweep"] == {} and r["best_batch"] is None, r
    assert len(sweep_lines) == 2 + len(engines)
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
    assert len(peers) == 4, peers
    int8 = next(e for e in peers if e.startswith("sentence-transformers onnx int8 ("))
    static = "sentence-transformers openvino static int8 (NNCF, 300 STS-B dev)"
    for quantized in (int8, static):
        assert by_key[(quantized, "short")]["compute"] == "int8"  # its roofline is against the int8 peak
    assert by_key[(static, "short")]["note"].startswith("NNCF static int8")
    for peer in ("sentence-transformers onnx fp32", int8, "sentence-transformers openvino", static):
        assert by_key[(peer, "short")]["min_cos"] > 0.95, peer
    assert by_key[("sentence-transformers openvino", "short")]["min_cos"] > 0.999
    assert "OpenVINO picks its own precision" in by_key[("sentence-transformers openvino", "short")]["note"]
