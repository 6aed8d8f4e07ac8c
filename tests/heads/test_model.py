"""heads.model: the nn modules: shapes, determinism, each head part, the cached frozen layers, the losses, the scalar mix and the BiLSTM by hand."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from headkit import TEXTS, fresh_model, words_of

from heads.data import read_conll
from heads.model import Features, MultiTaskModel
from heads.tasks import TASKS, batch_labels, batch_words, encode_examples
from heads.training import TrainConfig
from minilm.text.tokenization import right_pad

from conftest import require_data


def test_forward_returns_every_task_with_the_right_shapes_and_is_deterministic(encoder):
    ids, mask, words = words_of(encoder, TEXTS)
    out = fresh_model(encoder)(ids, mask, words)
    B, W = words.mask.shape
    assert W == 7 and words.mask.sum(1).tolist() == [4, 6, 7]  # words as the pre-tokenizer splits the raw text
    assert {k: tuple(v.shape) for k, v in out.logits.items()} == {
        "question_type": (B, 6),
        "sentiment": (B, 2),
        "ner": (B, W, 9),
    }
    assert out.losses == {}
    assert set(fresh_model(encoder)(ids, mask).logits) == {"question_type", "sentiment"}  # no words, no token head
    empty_ids, empty_mask, no_words = words_of(encoder, ["", "   "])  # texts without a single word
    assert tuple(fresh_model(encoder)(empty_ids, empty_mask, no_words).logits["ner"].shape) == (2, 0, 9)
    again = fresh_model(encoder)(ids, mask, words)  # same seed, separately built
    other = fresh_model(encoder, seed=1)(ids, mask, words)
    for name in out.logits:
        assert torch.equal(out.logits[name], again.logits[name])
        assert not torch.equal(out.logits[name], other.logits[name])


def test_head_parts_follow_their_task_spec(encoder):
    from dataclasses import replace

    tasks = [replace(TASKS["sentiment"], hidden=64), TASKS["ner"]]
    model = MultiTaskModel(copy.deepcopy(encoder.model), tasks).eval()
    sentiment, ner = model.heads["sentiment"], model.heads["ner"]
    # BiLSTM of 128 a direction over the 384-d mix, then mean and max side by side: 2 * 2 * 128 = 512 into the MLP
    assert (
        sentiment.lstm.left_to_right.input_size == 384 and sentiment.lstm.units == 128 and sentiment.pool == "meanmax"
    )
    assert tuple(sentiment.hidden.weight.shape) == (64, 512) and sentiment.attention is None
    assert (
        ner.lstm.right_to_left.input_size == 384 + 12 and ner.classifier.in_features == 2 * 256 and ner.crf is not None
    )
    plain = [
        replace(TASKS["sentiment"], hidden=None, lstm=0, pool="mean", layers="last"),
        replace(TASKS["ner"], shapes=False, lstm=0, crf=False, layers="last"),
    ]
    model = MultiTaskModel(copy.deepcopy(encoder.model), plain).eval()
    sentiment, ner = model.heads["sentiment"], model.heads["ner"]
    parts = (sentiment.mix, sentiment.lstm, sentiment.attention, sentiment.hidden, ner.mix, ner.lstm, ner.crf)
    assert parts == (None,) * 7
    assert ner.classifier.in_features == 384
    ids, mask, words = words_of(encoder, TEXTS)
    with torch.no_grad():
        out = model(ids, mask, words)
        states = model.bert(ids, mask)  # (B, T, C): the last layer
    # the linear probe on the last layer, by hand: mean pooling -> linear; each word's first piece -> linear
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(out.logits["sentiment"], sentiment.classifier(pooled), atol=1e-5)
    first = states[torch.arange(3)[:, None], words.positions]  # (B, W, C)
    assert torch.allclose(out.logits["ner"], ner.classifier(first), atol=1e-5)
    # attention pooling by hand: a softmax over each text's real tokens of one learned score per token
    attentive = MultiTaskModel(copy.deepcopy(encoder.model), [replace(plain[0], pool="attention")]).eval()
    head = attentive.heads["sentiment"]
    with torch.no_grad():
        logits = attentive(ids, mask).logits["sentiment"]
        expected = []
        for row, n in enumerate(mask.sum(1).tolist()):
            x = states[row, :n]  # (n, C)
            weights = head.attention(x).squeeze(-1).softmax(0)  # (n,)
            expected.append(head.classifier(weights @ x))
    assert torch.allclose(logits, torch.stack(expected), atol=1e-5)


def test_forward_from_cached_frozen_layers_equals_forward(encoder):
    """Training caches the frozen bottom's states and resumes at block k: the outputs must not change."""
    model = fresh_model(encoder)
    ids, mask, words = words_of(encoder, TEXTS)
    with torch.no_grad():
        expected = model(ids, mask, words)
        for k in range(model.num_layers + 1):
            tokens = torch.stack(model.bert.hidden_states(ids, mask, num_blocks=k), dim=2)  # (B, T, k + 1, C)
            resumed = model.forward_from_layer(Features(mask, tokens), k, words)
            assert set(resumed.logits) == set(expected.logits)
            assert all(torch.equal(resumed.logits[n], expected.logits[n]) for n in expected.logits), k
            assert torch.equal(resumed.embedding, expected.embedding)
        words_only = model.forward_from_layer(
            Features(None, words=tokens[torch.arange(3)[:, None], words.positions]), k, words
        )
        assert set(words_only.logits) == {"ner"} and words_only.embedding is None
        assert torch.equal(words_only.logits["ner"], expected.logits["ner"])


def test_labels_give_one_loss_per_task(encoder):
    data = encode_examples(TASKS["ner"], read_conll(require_data("conll2003/dev.txt"))[:4], encoder.tokenizer)
    ids, mask = right_pad(data.ids)
    words, tags = batch_words(data, [0, 1, 2, 3]), batch_labels(data, [0, 1, 2, 3])
    model = fresh_model(encoder)
    out = model(ids, mask, words, {"ner": tags, "sentiment": torch.tensor([0, 1, 1, 0])})
    assert set(out.losses) == {"ner", "sentiment"}
    # the CRF's loss is the mean over sentences of -log p(gold path), by its own pieces
    crf = model.heads["ner"].crf
    emissions = out.logits["ner"]
    by_hand = crf.log_partition(emissions, words.mask) - crf.score(emissions, tags, words.mask)
    assert out.losses["ner"].item() == pytest.approx(by_hand.mean().item(), rel=1e-6)
    # an untrained head is near chance: each word picks among about 9 tags, a 2-way head near log 2
    per_word = out.losses["ner"].item() * 4 / words.mask.sum().item()
    assert 1.0 < per_word < 3.0 and 0.3 < out.losses["sentiment"].item() < 1.2


def test_head_options_change_only_the_parts_they_name():
    from heads.training import head_spec

    shipped = head_spec(TrainConfig(output=Path("x")), TASKS["sentiment"])
    assert shipped == TASKS["sentiment"] and shipped.hidden == 512
    probe = head_spec(
        TrainConfig(output=Path("x"), sentence_hidden=0, sentence_lstm=0, layers="last"), TASKS["sentiment"]
    )
    assert (probe.hidden, probe.lstm, probe.layers, probe.pool) == (None, 0, "last", "meanmax")
    ner = head_spec(TrainConfig(output=Path("x"), ner_crf=False, dropout=0.2), TASKS["ner"])
    assert (ner.crf, ner.lstm, ner.shapes, ner.dropout) == (False, 256, True, 0.2)


def test_scalar_mix_starts_as_the_mean_and_learns_a_weighting_by_hand():
    from heads.model import ScalarMix

    torch.manual_seed(0)
    states = [torch.randn(2, 5, 8) for _ in range(7)]  # L + 1 = 7 hidden states of (B, T, C)
    stacked = torch.stack(states, dim=2)  # (B, T, S, C), as the heads read them
    mix = ScalarMix(7)
    assert torch.allclose(mix(stacked), torch.stack(states).mean(0), atol=1e-6)  # softmax(0) is uniform, gamma 1
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0, 0, 0, 0, 1, 2]))
        mix.gamma.fill_(0.5)
    share = torch.tensor([1.0, 1, 1, 1, 1, torch.e, torch.e**2])
    share = share / share.sum()  # the softmax, by hand
    expected = 0.5 * sum(s * h for s, h in zip(share, states))
    assert torch.allclose(mix(stacked), expected, atol=1e-6)
    pooled = stacked.mean(1)  # (B, S, C) mixes the same way: mean pooling commutes with the mix
    assert torch.allclose(mix(pooled), mix(stacked).mean(1), atol=1e-6)
    mix(stacked).sum().backward()
    assert mix.weights.grad.abs().sum() > 0 and mix.gamma.grad is not None


def test_bilstm_equals_torchs_bidirectional_lstm_on_packed_rows():
    """heads.model.BiLSTM (two one-way LSTMs on dense rows) against nn.LSTM(bidirectional=True) on a
    PackedSequence, the reference that never lets padding reach a real step, with the same weights."""
    from heads.model import BiLSTM

    torch.manual_seed(0)
    lstm = BiLSTM(6, 4)
    reference = torch.nn.LSTM(6, 4, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, value in lstm.left_to_right.named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in lstm.right_to_left.named_parameters():
            getattr(reference, f"{name}_reverse").copy_(value)
    lengths = torch.tensor([5, 3, 1, 0])  # a row with no step at all too (a text with no word)
    x = torch.randn(4, 5, 6) * 3  # padding holds large values: they must not reach any real step
    mask = torch.arange(5) < lengths.unsqueeze(1)  # (B, N)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x[:3], lengths[:3], batch_first=True)
    expected = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=5)[0]
    out = lstm(x, mask)
    assert out.shape == (4, 5, 8)
    assert torch.allclose(out[:3], expected, atol=1e-6)
    assert (out[~mask] == 0).all()  # padding and the empty row are zero
    assert lstm(x[:, :0], mask[:, :0]).shape == (4, 0, 8)
