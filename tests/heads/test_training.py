"""heads.training with heads.freezing and heads.schedule: the frozen-layer cache, training steps, freezing,
task sampling, weight averaging, the config checks and a diverging run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from headkit import fresh_model

from heads.data import read_trec
from heads.freezing import apply_freezing, frozen_features, frozen_layers
from heads.schedule import WeightAverage, task_probabilities
from heads.tasks import TASKS, encode_examples, predict, read_split
from heads.training import TrainConfig, train
from minilm.text.tokenization import right_pad

from conftest import DATA_DIR, require_data


def test_predictions_from_frozen_states_match_the_full_pass(encoder):
    """heads.train's own cache (frozen_features, one Features per example, padded per batch)."""
    model = fresh_model(encoder)
    for task in ("ner", "sentiment"):
        data = encode_examples(TASKS[task], read_split(task, "dev", DATA_DIR)[:6], encoder.tokenizer)
        full = predict(model, data, None, 0)
        for k in (2, model.num_layers):
            resumed = predict(model, data, frozen_features(model, data, k), k)
            if task == "ner":
                assert resumed == full and len(full[0]) == len(data.starts[0])
            else:
                assert max((r - f).abs().max().item() for r, f in zip(resumed, full)) <= 1e-5


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
        loss = model(ids, mask, labels=labels).losses["question_type"]
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
    for bad in ("layers:7", "top", "layers:x", "layers:²"):
        with pytest.raises(ValueError, match="--freeze"):
            frozen_layers(bad, 6)
    sizes = {"question_type": 4952, "sentiment": 6920, "ner": 500}
    assert task_probabilities(sizes, "uniform", 1)["ner"] == pytest.approx(1 / 3)
    assert task_probabilities(sizes, "proportional", 1)["ner"] == pytest.approx(500 / 12372)
    t2 = task_probabilities(sizes, "temperature", 2)
    assert t2["ner"] == pytest.approx(500**0.5 / (4952**0.5 + 6920**0.5 + 500**0.5))
    assert task_probabilities(sizes, "temperature", 1) == pytest.approx(task_probabilities(sizes, "proportional", 1))
    # a small T tends to the largest task alone (n^(1/T) overflowed float's range: a traceback at T = 0.01)
    assert task_probabilities(sizes, "temperature", 0.01) == pytest.approx(
        {"question_type": 0, "sentiment": 1, "ner": 0}
    )


def test_weight_average_moves_only_trained_tensors_and_swaps_in_for_scoring():
    """heads.train's --ema: each step moves the average of the tensors that had a gradient, by hand."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Linear(2, 1)})
    model["b"].bias.requires_grad_(False)  # frozen: never averaged
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.9)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # two steps of head "a" alone: "b" gets no gradient
        optimizer.zero_grad(set_to_none=True)
        model["a"](torch.ones(1, 2)).sum().backward()
        optimizer.step()
        average.update()
    # a's weight and bias have gradient 1 each step: values v1 = w0 - 0.5, then v2 = w0 - 1.0. The average
    # starts at 0 and is divided by 1 - 0.9^2: (0.9 * 0.1 * v1 + 0.1 * v2) / 0.19, nothing of w0 itself
    w0, b0 = start["a.weight"], start["a.bias"]
    expected_weight = (0.9 * 0.1 * (w0 - 0.5) + 0.1 * (w0 - 1.0)) / (1 - 0.9**2)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        assert torch.allclose(model["a"].weight, expected_weight, atol=1e-6)
        assert torch.allclose(model["a"].bias, b0 - 0.145 / 0.19, atol=1e-6)  # w0 - (0.045 + 0.1) / 0.19
        assert torch.equal(model["b"].weight, start["b.weight"]) and torch.equal(model["b"].bias, start["b.bias"])
    for key, value in model.state_dict().items():  # the trained weights are back for the next step
        assert torch.equal(value, trained[key])
    with pytest.raises(ValueError, match="--ema"):
        TrainConfig(output=Path("x"), ema=1.0)
    one = WeightAverage(model, decay=0.995)  # one update: the average is that step's value, whatever the decay
    model["a"].weight.grad = torch.ones_like(model["a"].weight)
    one.update()
    with one.applied():
        assert torch.allclose(model["a"].weight, trained["a.weight"], atol=1e-6)


def test_train_config_checks_numbers_given_in_code(tmp_path):
    """The library's TrainConfig holds the same ranges as the options (NUMBER_OPTIONS), for callers without argparse."""
    with pytest.raises(ValueError, match="--lr-heads must be a finite number >= 0, got nan"):
        TrainConfig(output=tmp_path, lr_heads=float("nan"))
    with pytest.raises(ValueError, match="--epochs must be an integer >= 1, got 2.0"):
        TrainConfig(output=tmp_path, epochs=2.0)
    assert TrainConfig(output=tmp_path, lr_heads=0.5, warmup=1).warmup == 1.0


def test_training_that_diverges_stops_before_saving_nan_heads(tmp_path, encoder):
    """A rate that sends the loss to NaN or infinity stops training with one line; nothing is saved."""
    require_data("trec")
    out = tmp_path / "run"
    config = TrainConfig(
        output=out,
        tasks=["question_type"],
        limit={"question_type": 32},
        data_dir=DATA_DIR,
        lr_heads=1e30,
        warmup=0,
        ema=0,
        max_grad_norm=0,
        max_steps=8,
        batch_size=16,
        dev_limit=16,
        quiet=True,
    )
    with pytest.raises(ValueError, match=r"training diverged at step [2-8]: the question_type loss is (nan|inf)"):
        train(config)
    assert not out.exists()
