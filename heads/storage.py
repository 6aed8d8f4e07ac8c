"""Saving and loading a MultiTaskModel (heads/model.py): heads.safetensors (float16), config.json (the task
specs, label names, scores and the backbone's sha256 it was trained on) and, when the backbone was
trained, backbone.safetensors; written atomically, read strictly, every name and shape checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import torch

from minilm.base.textio import atomic_output
from minilm.model.encoder import BertModel
from minilm.model.loading import StateMismatch, load_state_strict
from minilm.weights import WeightsError, fill_from_safetensors, read_safetensors, sha256_of

from .model import MultiTaskModel, TaskSpec

HEADS_FILE = "heads.safetensors"
BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.json"


def stored(tensor: torch.Tensor) -> torch.Tensor:
    """How a head tensor is written: float32 as float16, which halves the file (the shipped heads' 2.9 M
    parameters are 5.8 MB, not 11.7) for a relative change of at most 2^-11 in each weight; loading casts
    back to the model's float32. Other dtypes (the CRF's bool masks) as they are."""
    tensor = tensor.detach().contiguous()
    return tensor.half() if tensor.dtype == torch.float32 else tensor


def save_model(
    model: MultiTaskModel, folder: Path, *, backbone_sha256: str, backbone_trained: bool, extra: dict | None = None
) -> None:
    """heads.safetensors (float16, see `stored`) + config.json (+ backbone.safetensors in float32 when the
    backbone was trained), each written atomically."""
    from safetensors.torch import save

    tensors = {k: stored(v) for k, v in model.heads.state_dict().items()}
    if bad := next((k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()), None):
        raise ValueError(f"the {bad} weights hold NaN or infinity (the training diverged); nothing was saved")
    folder.mkdir(parents=True, exist_ok=True)
    heads = save(tensors)
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


def task_spec(entry: dict, folder: Path) -> TaskSpec:
    """A TaskSpec from its config.json entry (read_model_config checked name, kind and labels); any other
    field of the wrong type or value is a WeightsError, not a traceback deep in torch."""
    where = f"{folder / CONFIG_FILE}: task {entry['name']!r}"
    if "layers" not in entry:
        raise WeightsError(
            f"{where} was saved by an older heads.train (linear heads, before the layer mix); retrain it"
        )
    known = {f.name for f in fields(TaskSpec)}
    if unknown := sorted(set(entry) - known):
        raise WeightsError(f"{where} has head options {unknown} that this version does not know; update minilm")
    spec = TaskSpec(**{**entry, "labels": tuple(entry["labels"])})
    checks = {
        "layers": spec.layers in ("mix", "last"),
        "pool": spec.pool in ("mean", "attention", "meanmax"),
        "hidden": spec.hidden is None or (type(spec.hidden) is int and spec.hidden > 0),
        "lstm": type(spec.lstm) is int and spec.lstm >= 0,
        "shapes": type(spec.shapes) is bool,
        "crf": type(spec.crf) is bool,
        "dropout": type(spec.dropout) in (int, float) and 0 <= spec.dropout < 1,
    }
    if bad := [f"{name}={getattr(spec, name)!r}" for name, ok in checks.items() if not ok]:
        raise WeightsError(f"{where} has invalid head options {', '.join(bad)}; retrain or restore the model folder")
    return spec


_BIDIRECTIONAL_NAME = re.compile(r"\.lstm\.((?:weight|bias)_(?:ih|hh)_l0)(_reverse)?$")


def bilstm_name(key: str) -> str:
    """A tensor name as BiLSTM has it, from one that nn.LSTM(bidirectional=True) gave before, so that heads
    saved by an earlier heads.train load as they are: "ner.lstm.weight_ih_l0_reverse" becomes
    "ner.lstm.right_to_left.weight_ih_l0", "ner.lstm.weight_ih_l0" "ner.lstm.left_to_right.weight_ih_l0"."""
    if match := _BIDIRECTIONAL_NAME.search(key):
        side = "right_to_left" if match.group(2) else "left_to_right"
        return f"{key[: match.start()]}.lstm.{side}.{match.group(1)}"
    return key


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
    saved = [task_spec(t, folder) for t in config["tasks"]]
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
    tensors = {bilstm_name(k): v for k, v in read_safetensors(heads).items()}
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
