"""minilm.encoders.trace: the trace is the real forward pass, and its attention links are the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minilm.encoders.trace import strongest_links, trace


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
