"""python -m minilm.explain: its trace is the real forward pass, and its report and picture come out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minilm.cli import DEMO_SENTENCES
from minilm.explain import strongest_links, trace

from conftest import run_module


def test_trace_is_the_forward_pass(encoder):
    texts = ["A man is playing a guitar.", "Someone plays an instrument on a stage tonight."]
    result = trace(encoder, texts)
    assert [s.tensor.shape for s in result.stages] == [(2, 11), (2, 11, 384)] + [(2, 11, 384)] * 6 + [
        (2, 384),
        (2, 384),
    ]
    assert np.abs(result.embeddings - encoder.encode(texts)).max() <= 1e-6
    assert len(result.attention) == 6 and result.attention[0].shape == (2, 12, 11, 11)
    # Attention rows are probability distributions, and the shorter sentence's padding gets nothing.
    assert torch.allclose(result.attention[3].sum(-1), torch.ones(2, 12, 11), atol=1e-5)
    assert result.attention[3][0, :, :, 9:].abs().max() == 0
    # The weights are the ones the layer uses: softmax(q k^T / sqrt(32)) recomputed by hand for one head.
    layer = encoder.model.encoder.layer[0].attention.self
    x = result.stages[1].tensor[1]  # (T, C) embeddings of sentence 2, no padding there
    with torch.no_grad():
        q = (x @ layer.query.weight.T + layer.query.bias)[:, 64:96]  # head 3 is channels 64..95
        k = (x @ layer.key.weight.T + layer.key.bias)[:, 64:96]
    assert torch.allclose(result.attention[0][1, 2], (q @ k.T / 32**0.5).softmax(-1), atol=1e-6)


def test_strongest_links_by_hand(encoder):
    result = trace(encoder, ["A man is playing a guitar."])
    tokens = result.encodings[0].tokens
    to_special, links = strongest_links(result, layer=0, top=3)
    mean = result.attention[0][0].mean(0)  # (T, T)
    assert to_special == pytest.approx((mean[:, 0] + mean[:, -1]).mean().item(), abs=1e-6)
    weights = [w for _, _, w in links]
    assert weights == sorted(weights, reverse=True) and len(links) == 3
    for query, key, weight in links:
        i, j = int(query.split("(")[-1][:-1]), int(key.split("(")[-1][:-1])
        assert i != j and tokens[i] not in ("[CLS]", "[SEP]") and tokens[j] not in ("[CLS]", "[SEP]")
        assert weight == pytest.approx(mean[i, j].item(), abs=1e-6)
    word_links = [mean[i, j].item() for i in range(1, 7) for j in range(1, 7) if i != j]
    assert weights[0] == pytest.approx(max(word_links), abs=1e-6)


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
