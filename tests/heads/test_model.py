"""Multi-task heads: shapes, determinism, training steps, freezing, save/load, the shipped heads and the CLIs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from heads.data import read_conll, read_trec
from heads.metrics import entity_scores
from heads.model import MultiTaskModel, load_model, save_model
from heads.predict import SHIPPED_HEADS, MultiTaskPredictor
from heads.tasks import TASKS, encode_examples, predict_logits, read_split, score
from heads.train import apply_freezing, frozen_layers, frozen_states, task_probabilities
from minilm.text.tokenization import right_pad

from conftest import DATA_DIR, require_data, run_module

ALL_TASKS = list(TASKS.values())


@pytest.fixture(scope="module")
def stock_sha(encoder) -> str:
    return encoder.checkpoint.sha256


def fresh_model(encoder, seed: int = 0) -> MultiTaskModel:
    return MultiTaskModel(copy.deepcopy(encoder.model), ALL_TASKS, seed=seed).eval()


def test_forward_returns_every_task_with_the_right_shapes_and_is_deterministic(encoder):
    encodings, _ = encoder.tokenizer.encode(
        ["Who wrote Hamlet?", "A gorgeous, witty film.", "Angela Merkel met Macron in Paris ."]
    )
    batch = encoder.tokenizer.pad(encodings)
    out = fresh_model(encoder)(batch.input_ids, batch.attention_mask)
    B, T = batch.input_ids.shape
    assert {k: tuple(v.shape) for k, v in out.logits.items()} == {
        "question_type": (B, 6),
        "sentiment": (B, 2),
        "ner": (B, T, 9),
    }
    assert out.losses == {}
    again = fresh_model(encoder)(batch.input_ids, batch.attention_mask)  # same seed, separately built
    other = fresh_model(encoder, seed=1)(batch.input_ids, batch.attention_mask)
    for name in out.logits:
        assert torch.equal(out.logits[name], again.logits[name])
        assert not torch.equal(out.logits[name], other.logits[name])


def test_a_sentence_head_with_a_hidden_layer(encoder):
    from dataclasses import replace

    tasks = [replace(TASKS["sentiment"], hidden=64), TASKS["ner"]]
    model = MultiTaskModel(copy.deepcopy(encoder.model), tasks).eval()
    assert tuple(model.heads["sentiment"].hidden.weight.shape) == (64, 384)
    assert model.heads["ner"].classifier.in_features == 384
    batch = encoder.tokenizer.pad(encoder.tokenizer.encode(["one", "two words"])[0])
    assert tuple(model(batch.input_ids, batch.attention_mask).logits["sentiment"].shape) == (2, 2)


def test_forward_from_cached_frozen_layers_equals_forward(encoder):
    """Training caches the output of the frozen bottom and resumes at block k: the logits must not change."""
    model = fresh_model(encoder)
    batch = encoder.tokenizer.pad(encoder.tokenizer.encode(["Who wrote Hamlet?", "Merkel met Macron in Paris ."])[0])
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        expected = model(ids, mask).logits
        for k in range(model.num_layers + 1):
            cached = model.bert.run_layers(model.bert.embeddings(ids), mask, slice(0, k))  # (B, T, C)
            resumed = model.forward_from_layer(cached, mask, k).logits
            assert set(resumed) == set(expected)
            assert all(torch.equal(resumed[name], expected[name]) for name in expected), k


def test_predictions_from_frozen_states_match_the_full_pass(encoder):
    """heads.train's own cache (frozen_states, one (T_i, C) tensor per example, re-padded per batch)."""
    model = fresh_model(encoder)
    data = encode_examples(TASKS["ner"], read_conll(require_data("conll2003/dev.txt"))[:6], encoder.tokenizer)
    full = predict_logits(model, data, None, 0)
    for k in (2, model.num_layers):
        resumed = predict_logits(model, data, frozen_states(model, data, k), k)
        assert [r.shape for r in resumed] == [f.shape for f in full]
        assert max((r - f).abs().max().item() for r, f in zip(resumed, full)) <= 1e-5


def test_labels_give_one_loss_per_task(encoder):
    data = encode_examples(TASKS["ner"], read_conll(require_data("conll2003/dev.txt"))[:4], encoder.tokenizer)
    ids, mask = right_pad(data.ids)
    labels, _ = right_pad(data.labels, -100)
    out = fresh_model(encoder)(ids, mask, {"ner": labels, "sentiment": torch.tensor([0, 1, 1, 0])})
    assert set(out.losses) == {"ner", "sentiment"}
    # an untrained 9-way head is near chance: about log(9) = 2.2
    assert 1.5 < out.losses["ner"].item() < 3.0 and 0.3 < out.losses["sentiment"].item() < 1.2


def test_training_steps_lower_the_loss_and_leave_frozen_parameters_bit_identical(encoder):
    model = fresh_model(encoder)
    apply_freezing(model, frozen_layers("layers:4", model.num_layers), frozen_heads=["sentiment"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = encode_examples(TASKS["question_type"], read_trec(require_data("trec/train.txt"))[:32], encoder.tokenizer)
    ids, mask = right_pad(data.ids)
    labels = {"question_type": torch.tensor(data.labels)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(ids, mask, labels).losses["question_type"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    after = model.state_dict()
    frozen = [
        k
        for k in after
        if k.startswith(("bert.embeddings.", "heads.sentiment."))
        or any(k.startswith(f"bert.encoder.layer.{i}.") for i in range(4))
    ]
    trained = [k for k in after if k.startswith(("bert.encoder.layer.5.", "heads.question_type."))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))


def test_freeze_policies_and_task_sampling():
    assert [frozen_layers(p, 6) for p in ("none", "embeddings", "layers:2", "backbone")] == [None, 0, 2, 6]
    for bad in ("layers:7", "top", "layers:x"):
        with pytest.raises(ValueError, match="--freeze"):
            frozen_layers(bad, 6)
    sizes = {"question_type": 4952, "sentiment": 6920, "ner": 500}
    assert task_probabilities(sizes, "uniform", 1)["ner"] == pytest.approx(1 / 3)
    assert task_probabilities(sizes, "proportional", 1)["ner"] == pytest.approx(500 / 12372)
    t2 = task_probabilities(sizes, "temperature", 2)
    assert t2["ner"] == pytest.approx(500**0.5 / (4952**0.5 + 6920**0.5 + 500**0.5))
    assert task_probabilities(sizes, "temperature", 1) == pytest.approx(task_probabilities(sizes, "proportional", 1))


def test_save_then_load_gives_identical_predictions(tmp_path, encoder, stock_sha):
    model = fresh_model(encoder)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p))
    save_model(model, tmp_path, backbone_sha256=stock_sha, backbone_trained=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "heads.safetensors"]
    loaded, config = load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
    assert config["backbone"] == {"sha256": stock_sha, "file": None}
    encodings, _ = encoder.tokenizer.encode(["Save me.", "And load me again, please."])
    batch = encoder.tokenizer.pad(encodings)
    a, b = model(batch.input_ids, batch.attention_mask), loaded(batch.input_ids, batch.attention_mask)
    assert all(torch.equal(a.logits[k], b.logits[k]) for k in a.logits)


def test_a_trained_backbone_is_saved_and_its_hash_checked(tmp_path, encoder, stock_sha):
    model = fresh_model(encoder)
    with torch.no_grad():
        model.bert.encoder.layer[5].output.dense.bias.add_(0.01)
    save_model(model, tmp_path, backbone_sha256=stock_sha, backbone_trained=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backbone"]["file"] == "backbone.safetensors" and config["backbone"]["base_sha256"] == stock_sha
    loaded, _ = load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
    assert torch.equal(loaded.bert.encoder.layer[5].output.dense.bias, model.bert.encoder.layer[5].output.dense.bias)
    data = bytearray((tmp_path / "backbone.safetensors").read_bytes())
    data[-10] ^= 1
    (tmp_path / "backbone.safetensors").write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256 mismatch"):
        load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)


# --------------------------------------------------------------------------- the shipped heads


@pytest.fixture(scope="module")
def shipped():
    return MultiTaskPredictor.from_folder(SHIPPED_HEADS)


def test_predict_gives_the_exact_embedding_from_the_same_single_pass(shipped, encoder, stsb_sentences):
    """The point of frozen heads: one encoder pass per batch gives every prediction and the embedding
    that SentenceEncoder.encode gives (the shipped heads sit on the stock backbone)."""
    texts = stsb_sentences[:48]
    calls = []
    hook = shipped.model.bert.encoder.register_forward_hook(lambda module, args, output: calls.append(len(output)))
    try:
        records = shipped.predict(texts, batch_size=16, with_embedding=True)
    finally:
        hook.remove()
    assert calls == [16, 16, 16]  # the layer stack ran once per batch of 16, for every head and the embedding
    embeddings = np.array([r["embedding"] for r in records], dtype=np.float32)
    expected = encoder.encode(texts)
    assert embeddings.shape == expected.shape == (48, 384)
    assert np.abs(embeddings - expected).max() <= 1e-6
    assert "embedding" not in shipped.predict(texts[:1])[0]  # only when asked for


@pytest.fixture(scope="module")
def shipped_config() -> dict:
    return json.loads((SHIPPED_HEADS / "config.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("task", ["question_type", "sentiment", "ner"])
def test_shipped_heads_reach_their_recorded_test_scores(shipped, shipped_config, task):
    """On the first 200 test items, at most 5 points below the full-test score written in the config."""
    require_data("")
    data = encode_examples(TASKS[task], read_split(task, "test", DATA_DIR)[:200], shipped.tokenizer)
    measured = score(data, predict_logits(shipped.model, data, None, 0))
    recorded = shipped_config["scores"]["test"][task]
    print(f"shipped {task}: first 200 test items {measured:.2f}, recorded full test {recorded:.2f}")
    assert measured >= recorded - 5


def test_entity_f1_matches_seqeval_on_real_predictions(shipped):
    from seqeval.metrics import f1_score, precision_score, recall_score

    examples = read_conll(require_data("conll2003/test.txt"))[:300]
    data = encode_examples(TASKS["ner"], examples, shipped.tokenizer)
    logits = predict_logits(shipped.model, data, None, 0)
    from heads.ner import first_subtoken_predictions

    predicted = [
        [TASKS["ner"].labels[i] for i in first_subtoken_predictions(w, l.argmax(-1).tolist())]
        for w, l in zip(data.word_ids, logits)
    ]
    ours = entity_scores(predicted, data.gold)
    assert 0.3 < ours["f1"] < 1.0  # real, imperfect predictions
    assert ours["f1"] == pytest.approx(f1_score(data.gold, predicted), abs=1e-9)
    assert ours["precision"] == pytest.approx(precision_score(data.gold, predicted), abs=1e-9)
    assert ours["recall"] == pytest.approx(recall_score(data.gold, predicted), abs=1e-9)


def test_character_offsets_point_at_the_entity_text(shipped):
    texts = [
        "Angela Merkel flew from Berlin to Washington on Monday .",
        "  Shares of  Microsoft and Google fell in New York.",
    ]
    for text, record in zip(texts, shipped.predict(texts)):
        assert record["entities"], text
        for entity in record["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert entity["label"] in {"PER", "ORG", "LOC", "MISC"} and 0 < entity["score"] <= 1
    found = {(e["text"], e["label"]) for e in shipped.predict(texts[:1])[0]["entities"]}
    assert ("Berlin", "LOC") in found


def test_windowing_finds_an_entity_after_token_300(shipped):
    filler = "the weather was mild and the day passed quietly . " * 35  # 350 word pieces
    text = filler + "Later , Angela Merkel flew to Berlin ."
    assert len(shipped.tokenizer.split([text])[0].ids) > 300
    record = shipped.predict([text])[0]
    found = {(e["text"], e["label"]) for e in record["entities"]}
    assert ("Berlin", "LOC") in found
    berlin = next(e for e in record["entities"] if e["text"] == "Berlin")
    assert berlin["start"] == text.index("Berlin") > len(filler)
    # the sentence heads still see the truncated first window
    assert record["question_type"] == shipped.predict([filler])[0]["question_type"]


# --------------------------------------------------------------------------- command lines


@pytest.mark.slow
def test_predict_cli_prints_one_json_record_per_text():
    proc = run_module("heads.predict", "Who is the president of France?", "", "A tedious, joyless movie .")
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["text"] for r in records] == ["Who is the president of France?", "", "A tedious, joyless movie ."]
    assert set(records[0]) == {"text", "question_type", "sentiment", "entities"}
    assert records[0]["question_type"]["label"] == "HUM"
    assert records[2]["sentiment"]["label"] == "negative"
    assert records[1]["entities"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/folder", "hi"], "does not exist"),
        ([], "no texts given"),
        (["--input", "/no/such/file.txt"], "does not exist"),
    ],
)
@pytest.mark.slow
def test_predict_cli_errors_are_one_line(args, message):
    proc = run_module("heads.predict", *args)
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.slow
def test_train_cli_runs_saves_and_refuses_to_overwrite(tmp_path):
    require_data("")
    out = tmp_path / "run"
    args = [
        "--tasks",
        "question_type,ner",
        "--sentence-hidden",
        "32",
        "--limit",
        "question_type=64",
        "--limit",
        "ner=32",
        "--freeze",
        "layers:5",
        "--max-steps",
        "6",
        "--batch-size",
        "16",
        "--dev-limit",
        "48",
        "--quiet",
        "--output",
        str(out),
        "--data-dir",
        str(DATA_DIR),
    ]
    proc = run_module("heads.train", *args)
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 6 and set(summary["scores"]["dev"]) == {"question_type", "ner"}
    assert sorted(p.name for p in out.iterdir()) == ["backbone.safetensors", "config.json", "heads.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert {t["name"]: t["hidden"] for t in config["tasks"]} == {"question_type": 32, "ner": None}
    assert config["training"]["command"].startswith("python -m heads.train --tasks question_type,ner")
    predicted = MultiTaskPredictor.from_folder(out).predict(["Where is Paris?"])[0]  # loads with its trained backbone
    assert set(predicted) == {"text", "question_type", "entities"}
    again = run_module("heads.train", *args)
    assert again.returncode == 2 and "--force" in again.stderr.decode()
    bad = run_module("heads.train", "--tasks", "topic", "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and "choose from" in bad.stderr.decode()


def test_scalar_mix_starts_as_the_mean_and_learns_a_weighting_by_hand():
    from heads.model import ScalarMix

    torch.manual_seed(0)
    states = [torch.randn(2, 5, 8) for _ in range(7)]  # L + 1 = 7 hidden states of (B, T, C)
    mix = ScalarMix(7)
    assert torch.allclose(mix(states), torch.stack(states).mean(0), atol=1e-6)  # softmax(0) is uniform, gamma 1
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0, 0, 0, 0, 1, 2]))
        mix.gamma.fill_(0.5)
    share = torch.tensor([1.0, 1, 1, 1, 1, torch.e, torch.e**2])
    share = share / share.sum()  # the softmax, by hand
    expected = 0.5 * sum(s * h for s, h in zip(share, states))
    assert torch.allclose(mix(states), expected, atol=1e-6)
    pooled = [h.mean(1) for h in states]  # (B, C) states mix the same way: mean pooling commutes with the mix
    assert torch.allclose(mix(pooled), mix(states).mean(1), atol=1e-6)
    mix(states).sum().backward()
    assert mix.weights.grad.abs().sum() > 0 and mix.gamma.grad is not None
