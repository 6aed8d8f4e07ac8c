"""Streaming a corpus file into shards (minilm.corpus via `python -m minilm.embed --output DIR/`).

Order, ids, every input format, bad lines, resume after a kill or Ctrl-C, bounded memory, and the
stored precisions. The long runs share one uninterrupted 50,000-line run (`streamed_50k`), which
is the reference the 5,000-line run must reproduce. They test the pipeline, not the model's
numbers, so they run on the small random-weight checkpoint (conftest.tiny_checkpoint); the first
test checks the real model's shards against `encode`. Kills, Ctrl-C, SIGTERM and damaged files are
tests/faults/'s, at named points of the writer rather than at moments that race it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilm.corpus import load_shards

from conftest import ROOT, real_lines, run_module, write_lines


@pytest.mark.slow
def test_shards_hold_every_line_in_order(tmp_path: Path, encoder):
    lines = real_lines(1200)
    corpus = write_lines(tmp_path / "corpus.txt", lines)
    proc = run_module("minilm.embed", "--input", str(corpus), "--output", f"{tmp_path / 'out'}/", "--shard-size", "500")
    assert proc.returncode == 0, proc.stderr.decode()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        [s["rows"] for s in manifest["shards"]] == [500, 500, 200] and manifest["complete"] and manifest["rows"] == 1200
    )
    assert manifest["model_sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert manifest["dim"] == 384 and manifest["normalized"] is True
    ids, vectors = load_shards(tmp_path / "out")
    assert ids == [str(i) for i in range(1, 1201)]  # line numbers
    assert np.abs(vectors - encoder.encode(lines)).max() <= 1e-6


# Peak RSS of a command, from a parent that only waits for it (ru_maxrss is in KiB on Linux).
PEAK_RSS = "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"


def tiny_args(model: Path) -> list[str]:
    return ["--model", str(model), "--no-verify"]


def stream_with_peak_rss(model: Path, corpus: Path, out: Path, *args: str) -> int:
    """Run `python -m minilm.embed --input corpus --output out/` to the end; its peak RSS in bytes."""
    command = [
        sys.executable,
        "-c",
        PEAK_RSS,
        sys.executable,
        "-m",
        "minilm.embed",
        *tiny_args(model),
        "--input",
        str(corpus),
        "--output",
        f"{out}/",
        *args,
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1]) * 1024


@pytest.fixture(scope="module")
def streamed_50k(tmp_path_factory, tiny_checkpoint) -> tuple[list[str], np.ndarray, int]:
    """One uninterrupted CLI run over 50,000 real lines (default shard size): (lines, embeddings, peak RSS).

    The lines are shuffled, so that the first 5,000 have the same mix of lengths as all 50,000: the
    peak during a window depends on its longest batch, and the memory test is about the line count.
    """
    folder = tmp_path_factory.mktemp("streamed_50k")
    lines = real_lines(50_000)
    random.Random(0).shuffle(lines)
    peak = stream_with_peak_rss(tiny_checkpoint, write_lines(folder / "corpus.txt", lines), folder / "out")
    ids, vectors = load_shards(folder / "out")
    assert ids == [str(i) for i in range(1, 50_001)]
    return lines, vectors, peak


@pytest.mark.slow
def test_memory_stays_flat_from_5k_to_50k_lines(tmp_path: Path, streamed_50k, tiny_checkpoint):
    lines, vectors, peak_50k = streamed_50k
    peak_5k = stream_with_peak_rss(
        tiny_checkpoint, write_lines(tmp_path / "corpus.txt", lines[:5000]), tmp_path / "out"
    )
    print(f"peak RSS: 5,000 lines {peak_5k / 2**20:.0f} MiB, 50,000 lines {peak_50k / 2**20:.0f} MiB")
    assert peak_50k - peak_5k <= 300 * 2**20, (
        f"streaming 50k lines peaked {(peak_50k - peak_5k) / 2**20:.0f} MiB above 5k lines"
    )
    assert np.abs(load_shards(tmp_path / "out")[1] - vectors[:5000]).max() <= 1e-6


@pytest.mark.slow
def test_a_different_run_is_refused_without_force(tmp_path: Path):
    corpus = write_lines(tmp_path / "corpus.txt", real_lines(60))
    out = f"{tmp_path / 'out'}/"
    assert run_module("minilm.embed", "--input", str(corpus), "--output", out, "--shard-size", "50").returncode == 0
    other = run_module("minilm.embed", "--input", str(corpus), "--output", out, "--shard-size", "20")
    assert other.returncode == 2
    assert other.stderr.decode().strip().splitlines() == [
        f"error: {tmp_path / 'out'} holds a run with a different shard_rows; rerun with the same settings to resume, or pass --force to start over"
    ]
    forced = run_module("minilm.embed", "--input", str(corpus), "--output", out, "--shard-size", "20", "--force")
    assert forced.returncode == 0
    assert [s["rows"] for s in json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]] == [20, 20, 20]
    assert not (tmp_path / "out" / "part-00003.npy").exists()

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    refused = run_module("minilm.embed", "--input", str(corpus), "--output", f"{stranger}/")
    assert refused.returncode == 2 and "is not a minilm shard folder" in refused.stderr.decode()
    assert (stranger / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_jsonl_ids_and_bad_lines(tmp_path: Path, encoder):
    texts = real_lines(5)
    records = tmp_path / "corpus.jsonl"
    records.write_text(
        "".join(json.dumps({"doc": f"d{i}", "body": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    proc = run_module(
        "minilm.embed",
        "--input",
        str(records),
        "--output",
        f"{tmp_path / 'out'}/",
        "--text-field",
        "body",
        "--id-field",
        "doc",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    ids, vectors = load_shards(tmp_path / "out")
    assert ids == [f"d{i}" for i in range(5)]
    assert np.abs(vectors - encoder.encode(texts)).max() <= 1e-6

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken}\n', encoding="utf-8")
    proc = run_module("minilm.embed", "--input", str(bad), "--output", f"{tmp_path / 'bad_out'}/")
    assert proc.returncode == 2
    assert (
        proc.stderr.decode().splitlines()[-1].startswith(f"error: {bad}:2: invalid JSON")
    )  # small input: no progress bar either
    assert len(proc.stderr.decode().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["some text"], ["-"]])
def test_shards_need_an_input_file(tmp_path: Path, extra: list[str]):
    proc = run_module("minilm.embed", *extra, "--output", f"{tmp_path}/out/", stdin=b"x\n")
    assert proc.returncode == 2 and "give it with --input FILE" in proc.stderr.decode()
