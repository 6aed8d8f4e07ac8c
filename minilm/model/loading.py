"""From a checkpoint's contents to a `BertModel`: config.json's settings checked, then strict loading.

This is what nanoGPT's `from_pretrained` does before it copies a tensor: check that the key sets
match and that every shape matches, and say which ones do not. Module names mirror the checkpoint
keys (minilm.model.encoder), so the only differences tolerated are the short, named list below.
No files are read here; `minilm.weights` reads them and hands over dicts and tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import fields
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..base.numbers import checked_number
from .encoder import BertConfig

# Checkpoint keys a model may have no module for, and why they are safe to drop when it has none.
IGNORED_KEY_PARTS = (
    "pooler.",  # BERT's next-sentence pooler; sentence embeddings pool the token states instead
    "position_ids",  # a constant arange buffer some transformers versions save
)


class StateMismatch(ValueError):
    """Checkpoint tensors that do not fit the model; the message names the missing, unexpected or mis-shaped ones."""


LISTED = 5  # names an error message lists before "and N more": a message stays one readable line


def listed(items: Collection[str], limit: int = LISTED) -> str:
    """The first `limit` items joined by commas, then "and N more": bounded, however many there are."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def short_repr(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a value read from a file, quoted in a message of bounded length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The range of every number of config.json that BertConfig keeps: (integer, minimum, maximum); eps
# and the dropout rates are floats. No BERT comes near the maximums (BERT-large: 24 layers, 1024
# wide, 16 heads; LaBSE's vocabulary: 501,153); they are there so that nothing absurd is built
# before the header comparison. That comparison runs on the meta device, where no tensor is
# allocated but every layer is still Python objects: 10**9 layers would never finish building.
CONFIG_RANGES: dict[str, dict[str, Any]] = {
    "vocab_size": dict(integer=True, minimum=1, maximum=1 << 24),
    "hidden_size": dict(integer=True, minimum=1, maximum=1 << 24),
    "num_hidden_layers": dict(integer=True, minimum=1, maximum=256),  # about 0.5 s to build on meta
    "num_attention_heads": dict(integer=True, minimum=1, maximum=1 << 12),
    "intermediate_size": dict(integer=True, minimum=1, maximum=1 << 24),
    "max_position_embeddings": dict(integer=True, minimum=3, maximum=1 << 24),  # [CLS], a token, [SEP]
    "type_vocab_size": dict(integer=True, minimum=1, maximum=1 << 12),
    "layer_norm_eps": dict(above=0, maximum=1),  # 0 or less divides by zero for a constant row: NaN
    "hidden_dropout_prob": dict(minimum=0, maximum=1),
    "attention_probs_dropout_prob": dict(minimum=0, maximum=1),
    "pad_token_id": dict(integer=True, minimum=0),  # and below vocab_size: checked once that is known
}


def bert_config(raw: dict[str, Any], source: str = "config.json") -> BertConfig:
    """config.json's settings -> BertConfig, keeping the keys we use and checking what this model reproduces exactly.

    Every number passes minilm.base.numbers.checked_number with its range (CONFIG_RANGES), so a negative
    eps, NaN, 3.5 layers or a pad id past the vocabulary is refused here, not met later as a NaN
    vector or a hang. Raises ValueError (NumberError for a number) whose message starts with `source`.
    """
    if raw.get("model_type", "bert") != "bert":
        raise ValueError(
            f"{source}: model_type={short_repr(raw['model_type'])} is not supported; this encoder is BERT "
            "(model_type 'bert'), so RoBERTa, MPNet, XLM-R and other architectures do not load"
        )
    numbers = {}
    for key, bounds in CONFIG_RANGES.items():
        if key in raw:
            numbers[key] = checked_number(raw[key], f'{source}: "{key}"', **bounds)
    if "pad_token_id" in numbers:  # nn.Embedding's padding_idx: a row of the word embeddings
        last_id = numbers.get("vocab_size", BertConfig.vocab_size) - 1
        checked_number(numbers["pad_token_id"], f'{source}: "pad_token_id"', integer=True, minimum=0, maximum=last_id)
    others = {f.name: raw[f.name] for f in fields(BertConfig) if f.name in raw and f.name not in CONFIG_RANGES}
    config = BertConfig(**others, **numbers)
    if config.hidden_act != "gelu":
        raise ValueError(
            f"{source}: hidden_act={short_repr(config.hidden_act)} is not supported; "
            "this encoder implements BERT's exact erf 'gelu'"
        )
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{source}: position_embedding_type={short_repr(raw['position_embedding_type'])} is not supported; "
            "only 'absolute' positions are"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{source}: hidden_size {config.hidden_size} is not divisible by num_attention_heads "
            f"{config.num_attention_heads}"
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
    """Raise StateMismatch naming the missing, unexpected or mis-shaped tensors of `found` (checkpoint names),
    a few of each kind and how many more."""
    found = {k: v for key, v in found.items() if (k := checkpoint_key(key, expected)) is not None}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k} {tuple(found[k])} vs model {tuple(v)}"
        for k, v in expected.items()
        if k in found and tuple(found[k]) != tuple(v)
    ]
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
    problems = [f"{label}: {listed(items)}" for label, items in kinds if items]
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


LAYER_KEY = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def check_layer_count(num_hidden_layers: int, found: Collection[str]) -> None:
    """Raise StateMismatch unless the checkpoint names (`found`) hold exactly config.json's layers 0..n-1.

    Checked on the names alone, before any model is built: a config of 200 layers over 6 in the file is
    named as that, not as 3,000 missing tensors after building 200 layers.
    """
    layers = sorted({int(m.group(1)) for key in found if (m := LAYER_KEY.search(key))})
    if layers != list(range(num_hidden_layers)):
        if not layers:
            held = "no encoder layers"
        elif layers == list(range(len(layers))):
            held = f"{len(layers)} layers (0-{layers[-1]})"
        else:
            held = f"{len(layers)} layers ({listed([str(i) for i in layers])})"
        raise StateMismatch(f"num_hidden_layers is {num_hidden_layers}, but the file holds {held}")


def check_fits(build: Callable[[], torch.nn.Module], num_hidden_layers: int, found: dict[str, tuple[int, ...]]) -> None:
    """The header comparison before anything is allocated: the layer count, then every shape `build()`
    implies (built on the meta device) against `found`, the shapes in the safetensors header."""
    check_layer_count(num_hidden_layers, found)
    check_shapes(expected_shapes(build), found)


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
