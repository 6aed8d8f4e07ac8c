"""How heads.training steps: which task each step draws (`task_probabilities`), its batches
(`batches_of`), the optimizer with its two learning rates (`make_optimizer`) and schedule
(`linear_schedule`), and the moving average of the weights that is scored and saved (`WeightAverage`)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .model import MultiTaskModel
from .tasks import Encoded


def task_probabilities(sizes: dict[str, int], sampling: str, temperature: float) -> dict[str, float]:
    """proportional: n_i / N; uniform: 1 / k; temperature: n_i^(1/T), normalized (T=1 is proportional)."""
    if sampling == "uniform":
        weights = dict.fromkeys(sizes, 1.0)
    elif sampling == "proportional":
        weights = {t: float(n) for t, n in sizes.items()}
    elif sampling == "temperature":
        # n^(1/T) in log space, relative to the largest: a small T (0.01) overflowed float's range
        logs = {t: math.log(n) / temperature if n else -math.inf for t, n in sizes.items()}
        weights = {t: math.exp(v - max(logs.values())) for t, v in logs.items()}
    else:
        raise ValueError(f"--sampling {sampling!r}: use proportional, uniform or temperature")
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def batches_of(data: Encoded, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within chunks of 50 batches, cut, shuffle the batches."""
    order = list(range(len(data)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(data.ids[i]))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def linear_schedule(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def make_optimizer(
    model: MultiTaskModel, lr_backbone: float, lr_heads: float, weight_decay: float
) -> torch.optim.AdamW:
    """Two learning rates; no weight decay on biases and LayerNorm weights, as in BERT fine-tuning."""
    groups = []
    for params, lr in ((model.bert.named_parameters(), lr_backbone), (model.heads.named_parameters(), lr_heads)):
        trainable = [(n, p) for n, p in params if p.requires_grad]
        decay = [p for n, p in trainable if p.ndim > 1]
        no_decay = [p for n, p in trainable if p.ndim <= 1]
        groups += [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]
    return torch.optim.AdamW([g for g in groups if g["params"]])


class WeightAverage:
    """An exponential moving average of a model's trained parameters (Polyak averaging), swapped in to score.

    After each optimizer step, `update` folds in the new value of every parameter that the step trained
    (it has a gradient: one task's head, and the backbone when it trains), with weight (1 - decay). The
    average starts at zero and is divided by 1 - decay^n after n updates (Adam's bias correction), so it
    is a weighted mean of the values the training reached and holds nothing of the initial weights: a
    scarce task's head after 30 steps is the mean of those 30, not 86 % its random start.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [torch.zeros_like(p) for p in self.params]
        self.updates = [0] * len(self.params)

    @torch.no_grad()
    def update(self) -> None:
        for i, (param, average) in enumerate(zip(self.params, self.average)):
            if param.grad is not None:
                average.lerp_(param, 1 - self.decay)
                self.updates[i] += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averages inside the block (a tensor never trained keeps its value), its
        trained weights again after it."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, average, n in zip(self.params, self.average, self.updates):
                if n:
                    param.copy_(average / (1 - self.decay**n))
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, trained):
                    param.copy_(value)
