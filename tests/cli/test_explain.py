"""python -m minilm.explain: its report and picture come out (the trace itself: tests/encoders/test_trace.py)."""

from __future__ import annotations

import pytest

from minilm.cli import DEMO_SENTENCES

from conftest import run_module


@pytest.mark.slow
def test_explain_cli_report_and_picture(tmp_path):
    from PIL import Image

    picture = tmp_path / "attention.png"
    result = run_module("minilm.explain", "--plot", str(picture))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "sentence 1: 'The dog ran across the grass.'" in out
    assert "    2  dog              3899  (4, 7)    'dog'" in out
    assert "layer 6: self-attention, then feed-forward                (3, 9, 384)" in out
    assert out.count("to [CLS]/[SEP]") == 6 * len(DEMO_SENTENCES)
    assert "0.376084  The dog ran across the grass.  The cat jumped into the weeds." in out  # the demo's cosine
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.size == (2600, 1300)
        image.load()
    again = run_module("minilm.explain", "One more.", "--plot", str(picture))
    assert (
        again.returncode == 2
        and "already exists; pass --force" in again.stderr.decode()
        and b"Traceback" not in again.stderr
    )


@pytest.mark.slow
def test_explain_without_matplotlib(tmp_path):
    blocker = tmp_path / "blocked" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked for this test')\n")
    picture = tmp_path / "attention.png"
    result = run_module(
        "minilm.explain", "Hello there.", "--plot", str(picture), env={"PYTHONPATH": str(blocker.parent)}
    )
    assert result.returncode == 2 and not picture.exists()
    assert (
        result.stderr.decode().strip().splitlines()[-1]
        == "error: --plot needs matplotlib, which is not installed: pip install 'minilm[viz]' (or pip install matplotlib)"
    )
