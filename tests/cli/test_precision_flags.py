"""`--dtype` (compute precision) on the command line of `python -m minilm.embed`: the float32
fallback note in a real process, the usage errors of the compute options, and --help keeping
compute precision (--dtype) and storage precision (--precision) apart."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from minilm.corpus.quantize import STORED_PRECISIONS
from minilm.embed import main as embed_main
from minilm.model.precision import DTYPE_CHOICES

from conftest import ROOT


@pytest.mark.slow
def test_cli_bfloat16_prints_one_note_and_float32_embeddings(encoder):
    sentences = ["A man is playing a guitar.", "The stock market fell today."]
    # the CLI in a subprocess that sees a CPU without bfloat16, whatever this one has
    without_bf16 = "import sys, minilm.model.precision, minilm.embed; minilm.model.precision.cpu_flags = frozenset; sys.exit(minilm.embed.main())"
    command = [sys.executable, "-c", without_bf16, "--dtype", "bfloat16", "--format", "jsonl", *sentences]
    result = subprocess.run(command, capture_output=True, cwd=ROOT, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert stderr.startswith("note: bfloat16 needs a CPU with") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in records] == sentences
    assert np.abs(np.array([r["embedding"] for r in records]) - encoder.encode(sentences)).max() <= 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dtype", "int4"],
            "argument --dtype: invalid choice: 'int4' (choose from 'float32', 'bfloat16', 'float16', 'int8', 'auto')",
        ),
        (["--max-batch-tokens", "0"], "argument --max-batch-tokens: must be an integer >= 1, got 0"),
    ],
)
def test_cli_usage_errors_exit_2(capsys, args, message):
    """argparse rejects these before any model work; `main` is what `python -m minilm.embed` runs
    (tests/cli/test_embed.py checks user errors through the subprocess), so this runs in-process to save 2 s each."""
    with pytest.raises(SystemExit) as exit_info:
        embed_main([*args, "Some text."])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {message}; see python -m minilm.embed --help\n"


@pytest.mark.parametrize("dtype", [[], ["--dtype", "bfloat16"]], ids=["default float32", "bfloat16"])
def test_cli_fuse_without_int8_is_refused_before_loading(capsys, dtype):
    assert embed_main([*dtype, "--fuse", "Some text."]) == 2
    shown = dtype[1] if dtype else "float32"
    assert capsys.readouterr().err == (
        f"error: --fuse compiles int8's steps between its matmuls: add --dtype int8 (or auto), not {shown}\n"
    )


def test_fuse_says_when_it_has_no_effect_and_refuses_a_dtype_it_cannot_fuse(checkpoint_dir, monkeypatch):
    from minilm import SentenceEncoder

    with pytest.raises(ValueError, match=r'fuse=True .* needs dtype "int8" or "auto", not \'bfloat16\''):
        SentenceEncoder.from_pretrained(str(checkpoint_dir), dtype="bfloat16", fuse=True)
    monkeypatch.setattr("minilm.model.precision.cpu_flags", frozenset)  # a CPU without VNNI or AVX512-BF16
    with pytest.warns(RuntimeWarning, match="running float32 instead"):
        fell_back = SentenceEncoder.from_pretrained(str(checkpoint_dir), dtype="int8", fuse=True)
    auto = SentenceEncoder.from_pretrained(str(checkpoint_dir), dtype="auto", fuse=True)
    for encoder in (fell_back, auto):
        assert encoder.dtype == "float32" and type(encoder.runner).__name__ == "BertModel"  # no compile attempted
        assert encoder.fuse_note == "fuse has no effect: float32 runs here, not int8"


def test_help_calls_dtype_compute_precision_and_precision_storage_precision(capsys):
    with pytest.raises(SystemExit) as exit_info:
        embed_main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the same at any terminal width
    assert f"--dtype {{{','.join(DTYPE_CHOICES)}}} compute precision, what the model runs in:" in text
    assert f"--precision {{{','.join(STORED_PRECISIONS)}}} storage precision, how shards store the vectors:" in text
    assert (
        "--dtype is the compute precision (what the model runs in); --precision is how shards store the vectors."
        in text
    )
