"""What the heads tests share: the tasks, three texts, a fresh model over a copy of the encoder."""

from __future__ import annotations

import copy

import torch

from heads.features import word_features
from heads.model import MultiTaskModel, Words
from heads.tasks import TASKS
from minilm.text.tokenization import right_pad

ALL_TASKS = list(TASKS.values())


def fresh_model(encoder, seed: int = 0) -> MultiTaskModel:
    return MultiTaskModel(copy.deepcopy(encoder.model), ALL_TASKS, seed=seed).eval()


def words_of(encoder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, Words]:
    """ids, mask and Words of raw texts, as heads.predict builds them (no windows: short texts)."""
    encodings, _ = encoder.tokenizer.encode(texts)
    batch = encoder.tokenizer.pad(encodings)
    starts, shapes = zip(*(word_features(t, e) for t, e in zip(texts, encodings)))
    positions, mask = right_pad(list(starts))
    return batch.input_ids, batch.attention_mask, Words(positions, mask.bool(), right_pad(list(shapes))[0])


TEXTS = ["Who wrote Hamlet?", "A gorgeous, witty film.", "Angela Merkel met Macron in Paris ."]
