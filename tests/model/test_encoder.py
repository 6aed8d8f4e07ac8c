"""Tier 1: the hand-written encoder against transformers' BertModel on a tiny random config (no download)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minilm.model.encoder import BertModel, attention_probs, key_mask, reference_attention
from minilm.model.loading import bert_config, load_state_strict
from minilm.model.pooling import cls_pool, l2_normalize, max_pool, mean_pool, pool

from conftest import TINY


def tiny_pair(seed: int = 0):
    """A random transformers BertModel and our encoder holding the same weights."""
    from transformers import BertConfig as HFBertConfig
    from transformers import BertModel as HFBertModel

    torch.manual_seed(seed)
    hf = HFBertModel(HFBertConfig(**TINY, hidden_act="gelu", layer_norm_eps=1e-12), add_pooling_layer=True).eval()
    # randomize LayerNorm and biases too, so a wrong eps, missing bias or swapped norm shows up
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = BertModel(bert_config({**TINY, "hidden_act": "gelu", "layer_norm_eps": 1e-12}))
    load_state_strict(ours, hf.state_dict())  # exercises the pooler / position_ids tolerance
    return hf, ours.eval()


def random_batch(lengths: list[int], vocab: int = 99, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids * mask, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_random_config_matches_transformers_bert(seed):
    hf, ours = tiny_pair(seed)
    ids, mask = random_batch([17, 5, 1, 12], seed=seed)
    types = torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(seed)) * mask
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        actual = ours(ids, mask, types)
    real = mask.bool()
    assert (actual[real] - expected[real]).abs().max().item() <= 1e-5
    # the tolerance discriminates: letting real tokens attend to padding moves them far past it
    assert (
        expected[real] - hf(input_ids=ids, attention_mask=torch.ones_like(mask)).last_hidden_state[real]
    ).abs().max() > 1e-3


def test_state_dict_keys_are_the_checkpoint_names():
    hf, ours = tiny_pair()
    hf_keys = {k for k in hf.state_dict() if not k.startswith("pooler.") and "position_ids" not in k}
    assert set(ours.state_dict()) == hf_keys
    assert "encoder.layer.2.attention.self.query.weight" in ours.state_dict()


def test_sdpa_attention_matches_plain_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 9, 8, generator=g) for _ in range(3))
    key_mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    key_mask[1, ..., 4:] = False
    key_mask[2, ..., 1:] = False
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    plain = reference_attention(q, k, v, key_mask)
    assert (fused - plain).abs().max().item() <= 1e-6
    # masked keys really get zero weight: changing them leaves the output alone
    v2 = v.clone()
    v2[1, :, 4:] += 100.0
    assert torch.allclose(reference_attention(q, k, v2, key_mask)[1], plain[1], atol=1e-6)


def test_key_mask_by_hand():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])  # (B, T): lengths 2, 4, 1
    keys = key_mask(mask)
    assert keys.shape == (3, 1, 1, 4) and keys.dtype == torch.bool
    assert keys.squeeze(2).squeeze(1).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    # broadcast over heads and queries: every query of text 0 gives its two padding keys zero weight
    q = k = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(0))  # (B, H, T, D)
    probs = attention_probs(q, k, keys)  # (B, H, T, T)
    assert probs[0, :, :, 2:].abs().max().item() == 0.0 and probs[2, :, :, 1:].abs().max().item() == 0.0
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, 4))


def tiny_model(seed: int = 0) -> BertModel:
    """Our encoder alone with random weights, in eval mode (no transformers needed)."""
    torch.manual_seed(seed)
    return BertModel(bert_config({**TINY, "hidden_act": "gelu", "layer_norm_eps": 1e-12})).eval()


@pytest.mark.parametrize("k", range(TINY["num_hidden_layers"] + 1))
def test_run_layers_in_two_slices_equals_forward_exactly(k):
    model = tiny_model()
    ids, mask = random_batch([7, 3, 1])
    with torch.no_grad():
        expected = model(ids, mask)  # (B, T, C)
        x = model.embeddings(ids)  # (B, T, C)
        bottom = model.run_layers(x, mask, slice(0, k))  # the cached frozen bottom in heads.train
        actual = model.run_layers(bottom, mask, slice(k, None))
    assert torch.equal(actual, expected)


def test_run_layers_slices_select_blocks():
    model = tiny_model()
    ids, mask = random_batch([5, 2])
    with torch.no_grad():
        x = model.embeddings(ids)  # (B, T, C)
        assert torch.equal(model.run_layers(x, mask, slice(0, 0)), x)  # no blocks: the input unchanged
        first = model.run_layers(x, mask, slice(0, 1))
        assert torch.equal(first, model.encoder.layer[0](x, key_mask(mask)))
        assert (first - x).abs().max().item() > 1e-2  # the block did something
        assert torch.equal(model.run_layers(first, mask, slice(1, 2)), model.encoder.layer[1](first, key_mask(mask)))


def test_hidden_states_are_every_block_of_one_pass():
    model = tiny_model()
    ids, mask = random_batch([6, 4, 2])
    with torch.no_grad():
        states = model.hidden_states(ids, mask)
        assert len(states) == TINY["num_hidden_layers"] + 1  # the embeddings' output, then one per block
        assert torch.equal(states[0], model.embeddings(ids))
        for i in range(1, len(states)):  # state i is the input run through blocks 0..i-1
            assert torch.equal(states[i], model.run_layers(states[0], mask, slice(0, i)))
        assert torch.equal(states[-1], model(ids, mask))


def test_padding_does_not_change_real_tokens():
    _, ours = tiny_pair()
    ids, mask = random_batch([6])
    padded_ids = torch.cat([ids, torch.zeros(1, 10, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 10, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = ours(ids, mask)
        padded = ours(padded_ids, padded_mask)
    assert (alone - padded[:, :6]).abs().max().item() <= 1e-6


def test_config_rejects_what_the_encoder_cannot_reproduce():
    with pytest.raises(ValueError, match="erf"):
        bert_config({"hidden_act": "gelu_new"})
    with pytest.raises(ValueError, match="relative_key"):
        bert_config({"position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="divisible"):
        bert_config({"hidden_size": 30, "num_attention_heads": 4})


def test_pooling_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # (1, 3, 2); the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, -1.0]]
    assert cls_pool(hidden, mask).tolist() == [[1.0, 2.0]]
    assert max_pool(hidden, mask).tolist() == [[3.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 2.0]]
    assert mean_pool(hidden, torch.zeros(1, 3)).tolist() == [[0.0, 0.0]]  # all padding: zeros, not NaN
    assert l2_normalize(torch.tensor([[3.0, 4.0]])).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    with pytest.raises(ValueError, match="mean, cls, max"):
        pool(hidden, mask, "sum")
