"""From a checkpoint's contents to a `BertModel`: config.json's settings checked, then strict loading.

This is what nanoGPT's `from_pretrained` does before it copies a tensor: check that the key sets
match and that every shape matches, and say which ones do not. Module names mirror the checkpoint
keys (minilm.model.encoder), so the only differences tolerated are the short, named list below.
No files are read here; `minilm.weights` reads them and hands over dicts and tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import fields
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .encoder import BertConfig

# Checkpoint keys a model may have no module for, and why they are safe to drop when it has none.
IGNORED_KEY_PARTS = (
    "pooler.",  # BERT's next-sentence pooler; sentence embeddings pool the token states instead
    "position_ids",  # a constant arange buffer some transformers versions save
)


class StateMismatch(ValueError):
    """Checkpoint tensors that do not fit the model; the message names every missing, unexpected or mis-shaped one."""


def bert_config(raw: dict[str, Any]) -> BertConfig:
    """config.json's settings -> BertConfig, keeping the keys we use and checking what this model reproduces exactly.

    Raises ValueError naming the first setting that is of the wrong type or not supported.
    """
    if raw.get("model_type", "bert") != "bert":
        raise ValueError(
            f"model_type={raw['model_type']!r} is not supported; this encoder is BERT (model_type 'bert'), "
            "so RoBERTa, MPNet, XLM-R and other architectures do not load"
        )
    known = {f.name: f.type for f in fields(BertConfig)}
    for key, kind in known.items():
        value = raw.get(key)
        if key not in raw or (kind == "float" and isinstance(value, int) and not isinstance(value, bool)):
            continue
        number = int if kind == "int" else float
        if kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, number)):
            raise ValueError(f"{key} is {value!r}, expected a number ({kind})")
        if kind == "int" and value < (0 if key == "pad_token_id" else 1):
            raise ValueError(f"{key} is {value}, expected a positive number")
    config = BertConfig(**{k: v for k, v in raw.items() if k in known})
    if config.hidden_act != "gelu":
        raise ValueError(
            f"hidden_act={config.hidden_act!r} is not supported; this encoder implements BERT's exact erf 'gelu'"
        )
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"position_embedding_type={raw['position_embedding_type']!r} is not supported; "
            "only 'absolute' positions are"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size {config.hidden_size} is not divisible by num_attention_heads {config.num_attention_heads}"
        )
    return config


def checkpoint_key(key: str, expected: Collection[str]) -> str | None:
    """The model's name for a checkpoint key, or None for a key that is tolerated and dropped.

    expected: the model's own tensor names. A sentence encoder's BertModel takes a BertForX
    checkpoint's `bert.` tensors without the prefix; a model that holds `bert.` itself (the
    cross-encoder) takes every name as it is.
    """
    if key not in expected and key.startswith("bert."):
        key = key.removeprefix("bert.")
    if key not in expected and any(part in key for part in IGNORED_KEY_PARTS):
        return None
    return key


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    """Raise StateMismatch naming every missing, unexpected or mis-shaped tensor of `found` (checkpoint names)."""
    found = {k: v for key, v in found.items() if (k := checkpoint_key(key, expected)) is not None}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k} {tuple(found[k])} vs model {tuple(v)}"
        for k, v in expected.items()
        if k in found and tuple(found[k]) != tuple(v)
    ]
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
    problems = [f"{label}: {', '.join(items)}" for label, items in kinds if items]
    if problems:
        raise StateMismatch("; ".join(problems))


class _SkipNormalInit(TorchFunctionMode):
    """Makes nn.init.normal_ (nn.Embedding's initializer) a no-op. On the meta device it runs a Python
    reference that imports torch._dynamo: about 2 s of every command's start, for values no one reads."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.init.normal_:
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def expected_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of the model `build()` makes, found on the meta device: nothing is allocated."""
    with torch.device("meta"), _SkipNormalInit():
        return {k: tuple(v.shape) for k, v in build().state_dict().items()}


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpoint tensors into `model`, after check_shapes: every tensor must fit, and none may be left out."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes(expected, {k: tuple(v.shape) for k, v in tensors.items()})
    model.load_state_dict(
        {k: v for key, v in tensors.items() if (k := checkpoint_key(key, expected)) is not None}, strict=True
    )
