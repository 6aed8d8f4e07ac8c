"""Task heads on one shared minilm encoder pass, and saving / loading them.

One forward pass runs the encoder once over a batch and feeds every head:
    sentence heads (question type, sentiment): mean-pooled sentence vector -> dropout -> linear
    token heads (NER): every token's hidden state -> dropout -> linear
Heads are thin, as in sentence-transformers' classification recipes and BERT's
`BertForSequenceClassification` / `BertForTokenClassification`: they take `labels=None` and
return a loss only when labels are given.

Shape legend: B batch, T tokens, C hidden (384), K labels of a task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from minilm.corpus.textio import atomic_output
from minilm.model.encoder import BertModel
from minilm.model.loading import StateMismatch, load_state_strict
from minilm.model.pooling import PoolingMode, l2_normalize, pool
from minilm.weights import WeightsError, fill_from_safetensors, read_safetensors, sha256_of

from .ner import IGNORE_INDEX

HEADS_FILE = "heads.safetensors"
BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name (the key in every output), whether it labels sentences or tokens, its labels."""

    name: str
    kind: Literal["sentence", "token"]
    labels: tuple[str, ...]
    hidden: int | None = None  # optional hidden layer of a sentence head


class ScalarMix(nn.Module):
    """A learned, softmax-weighted sum of the encoder's hidden states (ELMo's "scalar mix", Peters et al. 2018).

    mix = gamma * sum_l softmax(w)_l * h_l over the L + 1 states of `BertModel.hidden_states` (the
    embeddings' output and each block's). A frozen BERT keeps different information in different
    layers (BERT paper, Table 7: the last four layers together beat the top one for NER), so a head
    that reads a mix of them gets more from the same pass. It starts as the plain mean of the layers.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))  # softmax(0, ..., 0): every state counts the same
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """L + 1 tensors of the same shape, (B, T, C) or (B, C) -> one of that shape."""
        stacked = torch.stack(list(states))  # (L + 1, ...)
        share = self.weights.softmax(0).view(-1, *([1] * (stacked.dim() - 1)))  # (L + 1, 1, ...)
        return self.gamma * (share * stacked).sum(0)


class SentenceClassificationHead(nn.Module):
    """dropout -> linear (or dropout -> linear -> GELU -> dropout -> linear) over the pooled sentence vector."""

    def __init__(self, in_dim: int, num_labels: int, hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_dim, hidden) if hidden else None
        self.classifier = nn.Linear(hidden or in_dim, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) -> logits (B, K)"""
        x = self.dropout(pooled)
        if self.hidden is not None:
            x = self.dropout(F.gelu(self.hidden(x)))  # (B, hidden)
        return self.classifier(x)


class TokenClassificationHead(nn.Module):
    """dropout -> linear over every token's hidden state."""

    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_dim, num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> logits (B, T, K)"""
        return self.classifier(self.dropout(hidden))


@dataclass
class MultiTaskOutput:
    logits: dict[str, torch.Tensor]  # task -> (B, K) for sentence tasks, (B, T, K) for token tasks
    embedding: torch.Tensor  # (B, C): the sentence embedding of the same pass, as SentenceEncoder.encode gives it
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # only the tasks whose labels were given


class MultiTaskModel(nn.Module):
    """A BertModel (`bert`, as in transformers' BertForSequenceClassification) and a named set of heads,
    all fed by one encoder pass."""

    def __init__(
        self,
        bert: BertModel,
        tasks: Sequence[TaskSpec],
        pooling: PoolingMode = "mean",
        dropout: float = 0.1,
        seed: int = 0,
        normalize: bool = True,
    ):
        """pooling, normalize: the checkpoint's sentence-transformers settings (mean and L2 for all-MiniLM-L6-v2),
        so that the pass that feeds the heads also gives the exact sentence embedding."""
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.normalize = normalize
        self.tasks = {t.name: t for t in tasks}
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # seeded head initialization: an untrained model is reproducible
        size = bert.config.hidden_size
        self.heads = nn.ModuleDict(
            {
                t.name: SentenceClassificationHead(size, len(t.labels), t.hidden, dropout)
                if t.kind == "sentence"
                else TokenClassificationHead(size, len(t.labels), dropout)
                for t in tasks
            }
        )
        torch.random.set_rng_state(generator_state)

    @property
    def num_layers(self) -> int:
        return self.bert.num_layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: dict[str, torch.Tensor] | None = None
    ) -> MultiTaskOutput:
        """(B, T) ids and mask -> every head's logits; a loss per task for the tasks in `labels`.

        labels: task -> (B,) label ids for sentence tasks, (B, T) for token tasks (IGNORE_INDEX where unlabelled).
        """
        x = self.bert.embeddings(input_ids)  # (B, T, C); token types are all 0 for single sentences
        return self.forward_from_layer(x, attention_mask, 0, labels)

    def forward_from_layer(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor,
        first_layer: int,
        labels: dict[str, torch.Tensor] | None = None,
    ) -> MultiTaskOutput:
        """Continue from the input of block `first_layer` (0 = the embeddings' output), then apply every head.

        The frozen bottom of the encoder is run once and cached (heads.train), so training resumes here.
        """
        hidden = self.bert.run_layers(x, attention_mask, slice(first_layer, None))  # (B, T, C)
        sentence = pool(hidden, attention_mask, self.pooling)  # (B, C)
        logits = {
            name: head(sentence if self.tasks[name].kind == "sentence" else hidden) for name, head in self.heads.items()
        }
        losses = {}
        for name, target in (labels or {}).items():
            if self.tasks[name].kind == "sentence":
                losses[name] = F.cross_entropy(logits[name], target)
            else:
                losses[name] = F.cross_entropy(logits[name].flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
        embedding = l2_normalize(sentence) if self.normalize else sentence  # (B, C)
        return MultiTaskOutput(logits, embedding, losses)


# --------------------------------------------------------------------------- saving and loading


def save_model(
    model: MultiTaskModel, folder: Path, *, backbone_sha256: str, backbone_trained: bool, extra: dict | None = None
) -> None:
    """heads.safetensors + config.json (+ backbone.safetensors when the backbone was trained),
    each written atomically."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    heads = save({k: v.detach().contiguous() for k, v in model.heads.state_dict().items()})
    with atomic_output(folder / HEADS_FILE, binary=True) as f:
        f.write(heads)
    backbone = {"sha256": backbone_sha256, "file": None}
    if backbone_trained:
        with atomic_output(folder / BACKBONE_FILE, binary=True) as f:
            f.write(save({k: v.detach().contiguous() for k, v in model.bert.state_dict().items()}))
        backbone = {"sha256": sha256_of(folder / BACKBONE_FILE), "file": BACKBONE_FILE, "base_sha256": backbone_sha256}
    config = {  # written last, and it pins the files above: a save killed half-way is refused by load_model
        "tasks": [{**asdict(t), "labels": list(t.labels)} for t in model.tasks.values()],
        "heads_sha256": hashlib.sha256(heads).hexdigest(),
        "pooling": model.pooling,
        "backbone": backbone,
        **(extra or {}),
    }
    with atomic_output(folder / CONFIG_FILE, binary=False) as f:
        f.write(json.dumps(config, indent=2) + "\n")


def read_model_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path} is missing; --model must be a folder written by python -m heads.train")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); retrain or restore the model folder") from None
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("tasks"), list)
        or not isinstance(config.get("backbone"), dict)
    ):
        if (folder / "model.safetensors").is_file() and not (folder / HEADS_FILE).is_file():
            raise WeightsError(
                f"{folder} is an encoder checkpoint, not a heads folder; "
                "--model takes a folder written by python -m heads.train "
                "(heads.safetensors and a config.json with its tasks), or leave it out for the shipped heads"
            )
        raise WeightsError(
            f"{path} lists no tasks and backbone, so it was not written by python -m heads.train; "
            "retrain or restore the model folder"
        )
    for i, task in enumerate(config["tasks"]):
        ok = isinstance(task, dict) and isinstance(task.get("name"), str) and task.get("kind") in ("sentence", "token")
        if (
            not ok
            or not isinstance(task.get("labels"), list)
            or not task["labels"]
            or not all(isinstance(label, str) for label in task["labels"])
        ):
            raise WeightsError(
                f"{path}: tasks[{i}] needs a name, a kind (sentence or token) and a list of labels; "
                "retrain or restore the model folder"
            )
    if not isinstance(config["backbone"].get("sha256"), str):
        raise WeightsError(f"{path}: the backbone has no sha256; retrain or restore the model folder")
    return config


def load_model(
    folder: Path,
    bert: BertModel,
    stock_sha256: str,
    extra_tasks: Sequence[TaskSpec] = (),
    seed: int = 0,
    normalize: bool = True,
) -> tuple[MultiTaskModel, dict]:
    """Rebuild a saved MultiTaskModel on `bert` (the stock backbone, replaced by backbone.safetensors when saved).

    The config's backbone sha256 must match what is loaded, so heads never run on a backbone they were
    not trained with. `extra_tasks` not in the saved model get new, seeded heads (to train them next).
    normalize: whether the embedding the model also returns is L2-normalized (the checkpoint's setting).
    """
    config = read_model_config(folder)
    saved = [TaskSpec(t["name"], t["kind"], tuple(t["labels"]), t.get("hidden")) for t in config["tasks"]]
    backbone = config["backbone"]
    if backbone.get("file"):
        path = folder / backbone["file"]
        if not path.is_file() or sha256_of(path) != backbone["sha256"]:
            actual = sha256_of(path) if path.is_file() else "missing"
            raise WeightsError(
                f"{path}: sha256 mismatch: expected {backbone['sha256']}, actual {actual}; "
                "retrain or restore the model folder"
            )
        fill_from_safetensors(bert, path)
    elif backbone["sha256"] != stock_sha256:
        raise WeightsError(
            f"{folder / CONFIG_FILE}: heads were trained on backbone sha256 {backbone['sha256']}, "
            f"but the loaded backbone is {stock_sha256}"
        )
    new = [t for t in extra_tasks if t.name not in {s.name for s in saved}]
    model = MultiTaskModel(bert, [*saved, *new], pooling=config.get("pooling", "mean"), seed=seed, normalize=normalize)
    heads = folder / HEADS_FILE
    if not heads.is_file():
        raise WeightsError(f"{heads} is missing; retrain or restore the model folder")
    if "heads_sha256" in config and sha256_of(heads) != config["heads_sha256"]:  # models saved before the pin have none
        raise WeightsError(
            f"{heads}: sha256 {sha256_of(heads)} is not the {config['heads_sha256']} that {folder / CONFIG_FILE} pins; "
            "the folder mixes two saves (one was stopped half-way): retrain or restore it"
        )
    tensors = read_safetensors(heads)
    for task in saved:
        prefix = f"{task.name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            load_state_strict(model.heads[task.name], own)
        except StateMismatch as e:
            raise WeightsError(
                f"{heads}: the {task.name} head does not fit its config.json entry ({e}); "
                "retrain or restore the model folder"
            ) from None
    return model.eval(), config
