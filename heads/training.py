"""Training task heads (and optionally the backbone) on one shared minilm encoder: the library behind
`python -m heads.train` (heads/train.py, the command line).

    train(TrainConfig(output=Path("runs/heads")))  # one job: build, fit, score, save

Freezing (--freeze): `backbone` (the default) freezes the whole encoder, so the heads' pass still
gives the exact sentence-transformers embedding; `layers:K` freezes the embeddings and the lowest K
blocks; `embeddings` freezes the embedding layer; `none` trains everything. The frozen bottom is
deterministic, so it runs once over every example before training and its states are cached and
reused each epoch: a frozen backbone costs one forward pass in all. --freeze-heads keeps named
heads fixed (to measure what a shared backbone forgets).

Heads (the "heads" options): by default each is the shipped one (heads.tasks.TASKS): sentence heads
mix all hidden states, run a BiLSTM over the tokens, pool mean and max, and end in an MLP; the NER
head mixes the states at each word's first sub-token, adds its casing shape, runs a BiLSTM over the
words and decodes with an IOB2-constrained CRF. Options switch parts off (docs/experiments.md).

Each step draws one task (--sampling proportional to its data, uniform, or temperature T:
p ∝ n^(1/T)) and one batch of it; its loss is scaled by --loss-weight. AdamW with separate
backbone and head learning rates, linear warmup then linear decay. Dev is scored after every
epoch. With the backbone frozen, each head is kept from its own best dev epoch (the heads then share
no trained weight); otherwise the epoch with the best mean dev score of the trained tasks is kept.

--ema D (default 0.995; 0: off) scores, keeps and saves an exponential moving average of the trained
weights instead of the weights of the last step (Polyak averaging): each tensor's average moves on
the steps that train it, so a head averages over about its own last 1 / (1 - D) = 200 steps, and it is
bias-corrected, so it holds nothing of the initial weights even after a few steps. On
the frozen backbone the raw weights' TREC test accuracy swung by 3 points from one epoch to the next
(92.8 to 96.0) while dev, 500 questions, could not tell those epochs apart; the average held
95.6-96.0 from epoch 3 on (docs/experiments.md).
"""

from __future__ import annotations

import math
import random
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from minilm import SentenceEncoder
from minilm.base.numbers import checked_number
from minilm.text.tokenization import SentenceTokenizer, right_pad

from .freezing import apply_freezing, frozen_features, frozen_layers
from .model import Features, MultiTaskModel, TaskSpec
from .schedule import WeightAverage, batches_of, linear_schedule, make_optimizer, task_probabilities
from .storage import load_model, save_model
from .tasks import TASKS, Encoded, batch_labels, batch_words, encode_examples, predict, read_split, score

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --------------------------------------------------------------------------- the job

# TrainConfig's numbers and their ranges (minilm.base.numbers.checked_number's bounds), for the dataclass
# and for the options alike (heads/train.py's checked_option).
NUMBER_OPTIONS: dict[str, dict] = {
    "temperature": {"above": 0},
    "lr_backbone": {"minimum": 0},
    "lr_heads": {"minimum": 0},
    "weight_decay": {"minimum": 0},
    "max_grad_norm": {"minimum": 0},  # 0: no clipping
    "warmup": {"minimum": 0, "maximum": 1},  # a fraction of the steps
    "ema": {"minimum": 0},  # and < 1: __post_init__
    "dropout": {"minimum": 0},  # and < 1: __post_init__
    "epochs": {"integer": True, "minimum": 1},
    "max_steps": {"integer": True, "minimum": 0},
    "batch_size": {"integer": True, "minimum": 1, "maximum": 4096},
    "dev_limit": {"integer": True, "minimum": 0},
    "seed": {"integer": True, "minimum": 0, "maximum": 2**32 - 1},  # numpy's seed range
    # head sizes: far above what helps (docs/experiments.md), far below what cannot be allocated
    "sentence_hidden": {"integer": True, "minimum": 0, "maximum": 16384},
    "sentence_lstm": {"integer": True, "minimum": 0, "maximum": 4096},
    "ner_lstm": {"integer": True, "minimum": 0, "maximum": 4096},
}


@dataclass
class TrainConfig:
    """One training job: `python -m heads.train`'s options, one field each (see --help for what they do)."""

    output: Path
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    data_dir: Path = DEFAULT_DATA_DIR
    backbone: str | None = None  # checkpoint name or folder; None: all-MiniLM-L6-v2
    init_from: Path | None = None
    freeze: str = "backbone"  # none | embeddings | layers:K | backbone
    freeze_heads: list[str] = field(default_factory=list)
    limit: dict[str, int] = field(default_factory=dict)  # task -> training examples (a seeded sample)
    sampling: str = "proportional"  # proportional | uniform | temperature
    temperature: float = 2.0
    loss_weight: dict[str, float] = field(default_factory=dict)
    epochs: int = 3
    max_steps: int = 0  # 0: the epochs decide
    batch_size: int = 32
    lr_backbone: float = 5e-5
    lr_heads: float = 1e-3
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # 0: no clipping
    warmup: float = 0.1  # fraction of the steps
    ema: float = 0.995  # decay of the weights' moving average that is scored and kept (0: the raw weights)
    # the parts of the heads; None keeps each head's own, from heads.tasks.TASKS (the shipped heads)
    dropout: float | None = None
    layers: str | None = None  # mix | last: a ScalarMix of every hidden state, or the last one
    sentence_hidden: int | None = None  # 0: sentence heads end in one linear layer
    sentence_lstm: int | None = None  # BiLSTM units per direction (0: none)
    sentence_pool: str | None = None  # mean | attention | meanmax
    ner_shapes: bool | None = None
    ner_lstm: int | None = None  # BiLSTM units per direction (0: none)
    ner_crf: bool | None = None
    seed: int = 0
    bf16: bool = False
    eval_test: bool = False
    dev_limit: int = 0  # 0: every dev example
    quiet: bool = False
    command: str = "python -m heads.train"  # recorded in the saved config

    def __post_init__(self) -> None:
        # Every number, through the one check (minilm.base.numbers): NaN or a negative rate trained and saved
        # all-NaN heads with status 0. The options' argparse types check the same ranges (NUMBER_OPTIONS).
        for name, bounds in NUMBER_OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, checked_number(value, f"--{name.replace('_', '-')}", **bounds))
        if not self.ema < 1:
            raise ValueError(f"--ema {self.ema}: give a decay in [0, 1), such as 0.995 (0: no averaging)")
        if self.dropout is not None and not self.dropout < 1:
            raise ValueError(f"--dropout {self.dropout}: give a probability in [0, 1)")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"--tasks {','.join(self.tasks)!r}: choose from {', '.join(TASKS)}")
        for option, values in (("--limit", self.limit), ("--loss-weight", self.loss_weight)):
            for name, value in values.items():
                if name not in TASKS:
                    raise ValueError(f"{option} '{name}={value}': expected TASK=VALUE with TASK in {', '.join(TASKS)}")
                checked_number(value, f"{option} {name}", integer=option == "--limit", minimum=0)
                if option == "--limit" and value < 1:
                    raise ValueError(
                        f"{option} '{name}={value}': train on at least 1 example "
                        "(leave the task out of --tasks to train none)"
                    )


# --------------------------------------------------------------------------- training


@dataclass
class Job:
    """What the build step makes: the model on the stock backbone, its tokenizer, and how much of it is frozen."""

    model: MultiTaskModel
    tokenizer: SentenceTokenizer
    stock_sha256: str  # the backbone the heads are pinned to
    n_frozen: int | None  # frozen blocks (None: nothing frozen, not even the embeddings)
    backbone_trained_before: bool  # --init-from a model whose backbone was trained

    @property
    def first_layer(self) -> int:
        """The first block that trains: the cached frozen states are its input."""
        return self.n_frozen or 0


def head_spec(config: TrainConfig, task: TaskSpec) -> TaskSpec:
    """A task's head as the options build it: TASKS' head with the parts the options name changed."""
    if task.kind == "sentence":
        changes = {"lstm": config.sentence_lstm, "pool": config.sentence_pool}
    else:
        changes = {"shapes": config.ner_shapes, "lstm": config.ner_lstm, "crf": config.ner_crf}
    changes |= {"layers": config.layers, "dropout": config.dropout}
    spec = replace(task, **{k: v for k, v in changes.items() if v is not None})
    if task.kind == "sentence" and config.sentence_hidden is not None:
        spec = replace(spec, hidden=config.sentence_hidden or None)  # 0: no hidden layer (None in a TaskSpec)
    return spec


def build(config: TrainConfig) -> Job:
    """1. The model: the stock backbone with new heads, or a saved model (--init-from), frozen as asked."""
    stock = SentenceEncoder.from_pretrained(config.backbone)
    backbone_trained = False
    if config.init_from:
        new_tasks = [head_spec(config, TASKS[t]) for t in config.tasks]  # heads the saved model lacks
        model, init_config = load_model(
            config.init_from,
            stock.model,
            stock.checkpoint.sha256,
            extra_tasks=new_tasks,
            seed=config.seed,
            normalize=stock.config.normalize,
        )
        backbone_trained = bool(init_config["backbone"].get("file"))
    else:
        model = MultiTaskModel(
            stock.model,
            [head_spec(config, TASKS[t]) for t in config.tasks],
            pooling=stock.config.pooling,
            seed=config.seed,
            normalize=stock.config.normalize,
        )
    if bad_heads := [h for h in config.freeze_heads if h not in model.tasks]:
        raise ValueError(f"--freeze-heads {','.join(bad_heads)}: the model has heads {', '.join(model.tasks)}")
    n_frozen = frozen_layers(config.freeze, model.num_layers)
    apply_freezing(model, n_frozen, config.freeze_heads)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"--freeze {config.freeze} with --freeze-heads {','.join(config.freeze_heads)} leaves nothing to train; "
            "keep at least one trained head out of --freeze-heads"
        )
    return Job(model, stock.tokenizer, stock.checkpoint.sha256, n_frozen, backbone_trained)


def load_data(config: TrainConfig, job: Job) -> dict[str, dict[str, Encoded]]:
    """2. The data, tokenized: split -> task -> examples. Train for the trained tasks; dev (and test) for every head."""
    splits: dict[str, dict[str, Encoded]] = {"train": {}, "dev": {}, "test": {}}
    for name in job.model.tasks:
        if name in config.tasks:
            examples = read_split(name, "train", config.data_dir)
            if not examples:
                raise ValueError(f"no {name} training examples in {config.data_dir}; check --data-dir")
            if name in config.limit:
                examples = random.Random(config.seed).sample(examples, min(int(config.limit[name]), len(examples)))
            splits["train"][name] = encode_examples(TASKS[name], examples, job.tokenizer)
        dev = read_split(name, "dev", config.data_dir)[: config.dev_limit or None]
        splits["dev"][name] = encode_examples(TASKS[name], dev, job.tokenizer)
        if config.eval_test:
            splits["test"][name] = encode_examples(
                TASKS[name], read_split(name, "test", config.data_dir), job.tokenizer
            )
    return splits


def cache_frozen(
    config: TrainConfig, job: Job, splits: dict[str, dict[str, Encoded]]
) -> dict[tuple[str, str], list[Features]]:
    """3. The frozen bottom's states for every example, run once: (split, task) -> one Features per example.

    Empty when nothing is frozen.
    """
    if job.n_frozen is None:
        return {}
    states = {}
    total = sum(len(data) for sets in splits.values() for data in sets.values())
    with tqdm(total=total, desc="Frozen layers", unit="ex", file=sys.stderr, disable=config.quiet) as bar:
        for split, sets in splits.items():
            for name, data in sets.items():
                states[split, name] = frozen_features(job.model, data, job.first_layer, progress=bar.update)
    return states


@dataclass
class Fit:
    """What the fit step reports: the epoch each head was kept from (its weights are loaded into the model),
    their dev scores, and the whole history."""

    history: list[dict]
    best_epochs: dict[str, int]  # trained task -> the epoch its head comes from
    best_dev: dict[str, float]  # every head's dev score, as kept
    steps: int
    task_probabilities: dict[str, float]
    loss_weights: dict[str, float]


def fit(config: TrainConfig, job: Job, splits: dict[str, dict[str, Encoded]], states: dict) -> Fit:
    """4. Train: each step draws a task and a batch of it; dev is scored after every epoch and the best epoch kept."""
    model, first_layer, train_sets = job.model, job.first_layer, splits["train"]
    loss_weights = dict.fromkeys(config.tasks, 1.0) | config.loss_weight
    sizes = {t: len(d) for t, d in train_sets.items()}
    probs = task_probabilities(sizes, config.sampling, config.temperature)
    steps_per_epoch = math.ceil(sum(sizes.values()) / config.batch_size)
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config.lr_backbone, config.lr_heads, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(max(1, int(config.warmup * total_steps)), total_steps)
    )
    rng = random.Random(config.seed)
    queues: dict[str, list[list[int]]] = {t: [] for t in train_sets}
    average = WeightAverage(model, config.ema) if config.ema else None

    # With the whole backbone frozen the heads share no trained weight, so each keeps its own best epoch;
    # otherwise they share the backbone, and the epoch with the best mean dev score is kept for all.
    per_head = job.n_frozen == model.num_layers
    kept: dict[str, tuple[float, int, dict]] = {}  # "all" or a task -> (dev score, epoch, state)
    history, step, losses = [], 0, []
    model.train()
    if states:
        model.bert.encoder.layer[:first_layer].eval()  # (already run) keep the frozen bottom's dropout off
    with tqdm(total=total_steps, desc="Training", unit="step", file=sys.stderr, disable=config.quiet) as bar:
        for epoch in range(math.ceil(total_steps / steps_per_epoch)):
            for _ in range(min(steps_per_epoch, total_steps - step)):
                name = rng.choices(list(probs), weights=list(probs.values()))[0]
                if not queues[name]:
                    queues[name] = batches_of(train_sets[name], config.batch_size, rng)
                indices = queues[name].pop()
                data = train_sets[name]
                words, target = batch_words(data, indices), {name: batch_labels(data, indices)}
                with autocast(config):
                    if states:
                        below = Features.batch([states["train", name][i] for i in indices])
                        out = model.forward_from_layer(below, first_layer, words, target, tasks=[name])
                    else:
                        ids, mask = right_pad([data.ids[i] for i in indices])
                        out = model(ids, mask, words, target, tasks=[name])
                loss = loss_weights.get(name, 1.0) * out.losses[name].float()
                if not torch.isfinite(loss):  # every later weight would be NaN, and saved as such
                    raise ValueError(
                        f"training diverged at step {step + 1}: the {name} loss is {loss.item()}; "
                        "lower --lr-heads or --lr-backbone, or that task's --loss-weight"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.requires_grad], config.max_grad_norm
                    )
                optimizer.step()
                if average is not None:
                    average.update()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            # the averaged weights, when there are some, are what is scored and kept; the trained ones go on training
            with average.applied() if average is not None else nullcontext():
                dev = evaluate(config, job, splits["dev"], states, "dev")
                history.append(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "train_loss": round(float(np.mean(losses[-steps_per_epoch:])), 4),
                        "dev": dev,
                    }
                )
                if not config.quiet:
                    print(f"epoch {epoch + 1}: dev {dev}", file=sys.stderr)
                candidates = (
                    {t: (dev[t], model.heads[t]) for t in train_sets}
                    if per_head
                    else {"all": (float(np.mean([dev[t] for t in train_sets])), model)}
                )
                for key, (value, part) in candidates.items():
                    if key not in kept or value > kept[key][0]:
                        kept[key] = (value, epoch + 1, {k: v.detach().clone() for k, v in part.state_dict().items()})
    if per_head:
        for task, (_, _, state) in kept.items():
            model.heads[task].load_state_dict(state)
        best_epochs = {task: epoch for task, (_, epoch, _) in kept.items()}
    else:
        model.load_state_dict(kept["all"][2])
        best_epochs = dict.fromkeys(train_sets, kept["all"][1])
    best_dev = history[-1]["dev"] | {t: history[e - 1]["dev"][t] for t, e in best_epochs.items()}
    model.eval()
    return Fit(history, best_epochs, best_dev, step, probs, loss_weights)


def autocast(config: TrainConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16) if config.bf16 else nullcontext()


def evaluate(config: TrainConfig, job: Job, sets: dict[str, Encoded], states: dict, split: str) -> dict[str, float]:
    """Each task's score (0..100) on one split, from the cached frozen states where there are some."""
    with autocast(config):
        return {
            name: round(score(d, predict(job.model, d, states.get((split, name)), job.first_layer)), 2)
            for name, d in sets.items()
        }


def summarize(
    config: TrainConfig, job: Job, splits: dict[str, dict[str, Encoded]], states: dict, result: Fit, started: float
) -> dict:
    """5. The summary printed as JSON and saved in the model's config.json, with the test scores under --eval-test."""
    summary = {
        "command": config.command,
        "tasks_trained": config.tasks,
        "freeze": config.freeze,
        "frozen_heads": config.freeze_heads,
        "sampling": config.sampling if config.sampling != "temperature" else f"temperature T={config.temperature}",
        "task_probabilities": {t: round(p, 4) for t, p in result.task_probabilities.items()},
        "loss_weights": result.loss_weights,
        "max_grad_norm": config.max_grad_norm,
        "ema": config.ema,
        "train_sizes": {t: len(d) for t, d in splits["train"].items()},
        "steps": result.steps,
        "best_epochs": result.best_epochs,
        "history": result.history,
        "scores": {"dev": result.best_dev},
        "trainable_parameters": sum(p.numel() for p in job.model.parameters() if p.requires_grad),
        "seed": config.seed,
        "bf16": config.bf16,
    }
    if splits["test"]:
        summary["scores"]["test"] = evaluate(config, job, splits["test"], states, "test")
    summary["wall_seconds"] = round(time.time() - started, 1)
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return summary


def train(config: TrainConfig) -> dict:
    """Run one training job and save the best epoch's model to config.output; returns the summary."""
    started = time.time()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    job = build(config)
    splits = load_data(config, job)
    states = cache_frozen(config, job, splits)
    result = fit(config, job, splits, states)
    summary = summarize(config, job, splits, states, result, started)
    backbone_trained = job.n_frozen != job.model.num_layers or job.backbone_trained_before
    extra = {"training": summary, "scores": summary["scores"]}
    save_model(
        job.model, config.output, backbone_sha256=job.stock_sha256, backbone_trained=backbone_trained, extra=extra
    )
    return summary
