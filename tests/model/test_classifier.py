"""minilm.model.classifier: BertForSequenceClassification against transformers' own, on a tiny random
config (no download), and the activations against torch.nn's modules of the same names."""

from __future__ import annotations

import pytest
import torch

from minilm.model.classifier import ACTIVATIONS, BertForSequenceClassification
from minilm.model.loading import bert_config, load_state_strict

from conftest import TINY


def tiny_pair(num_labels: int, seed: int = 0):
    """A random transformers BertForSequenceClassification and ours holding the same weights, loaded strictly."""
    from transformers import BertConfig as HFBertConfig
    from transformers import BertForSequenceClassification as HFClassifier

    torch.manual_seed(seed)
    config = {**TINY, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    hf = HFClassifier(HFBertConfig(**config, num_labels=num_labels)).eval()
    with torch.no_grad():  # randomize LayerNorm and biases too, so a missing bias or a wrong norm shows
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = BertForSequenceClassification(bert_config(config), num_labels)
    load_state_strict(ours, hf.state_dict())  # the module names are the checkpoint's keys
    return hf, ours.eval()


def pair_batch():
    """Two (query, passage) pairs of different lengths, padded: token type 1 from the passage on."""
    ids = torch.tensor([[2, 11, 12, 3, 21, 22, 23, 3], [2, 13, 3, 24, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]])
    return ids, mask, types


@pytest.mark.parametrize("num_labels", [1, 3])
def test_logits_equal_transformers(num_labels: int):
    hf, ours = tiny_pair(num_labels)
    ids, mask, types = pair_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        logits = ours(ids, mask, types)
    assert logits.shape == (2, num_labels)
    assert (logits - expected).abs().max().item() <= 1e-5


def test_token_types_and_padding_matter_as_they_should():
    _, ours = tiny_pair(1)
    ids, mask, types = pair_batch()
    with torch.no_grad():
        logits = ours(ids, mask, types)
        swapped = ours(ids, mask, 1 - types * mask)  # the two texts' roles exchanged
        longer = ours(
            torch.cat([ids, torch.zeros(2, 4, dtype=ids.dtype)], 1),
            torch.cat([mask, torch.zeros(2, 4, dtype=mask.dtype)], 1),
            torch.cat([types, torch.zeros(2, 4, dtype=types.dtype)], 1),
        )
    assert (logits - swapped).abs().min().item() > 1e-4  # a cross-encoder reads which text is which
    assert (logits - longer).abs().max().item() <= 1e-6  # more padding changes nothing


def test_dropout_acts_only_in_training():
    _, ours = tiny_pair(1)
    ids, mask, types = pair_batch()
    with torch.no_grad():
        assert torch.equal(ours(ids, mask, types), ours(ids, mask, types))
        ours.train()
        torch.manual_seed(0)
        first = ours(ids, mask, types)
        torch.manual_seed(1)
        assert not torch.equal(first, ours(ids, mask, types))


def test_activations_are_torch_nn_modules_of_the_same_name():
    logits = torch.linspace(-6, 6, 25)
    for name, activation in ACTIVATIONS.items():
        assert torch.equal(activation(logits), getattr(torch.nn, name)()(logits)), name
