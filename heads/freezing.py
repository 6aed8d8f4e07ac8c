"""What heads.training freezes: which parameters train under a --freeze policy (`frozen_layers`,
`apply_freezing`), and the frozen bottom's states, computed once and reused every epoch (`frozen_features`)."""

from __future__ import annotations

import re

import torch

from minilm.text.tokenization import length_sorted_batches, right_pad

from .model import Features, MultiTaskModel
from .tasks import Encoded


def frozen_layers(policy: str, num_layers: int) -> int | None:
    """How many encoder blocks are frozen under `policy`: None when even the embeddings train, else 0..num_layers."""
    if policy == "none":
        return None
    if policy == "embeddings":
        return 0
    if policy == "backbone":
        return num_layers
    if re.fullmatch(r"layers:[0-9]+", policy) and int(policy[7:]) <= num_layers:  # ASCII digits: not "²"
        return int(policy[7:])
    raise ValueError(f"--freeze {policy!r}: use none, embeddings, backbone or layers:K with K from 0 to {num_layers}")


def apply_freezing(model: MultiTaskModel, n_frozen: int | None, frozen_heads: list[str]) -> None:
    model.requires_grad_(True)
    if n_frozen is not None:
        model.bert.embeddings.requires_grad_(False)
        model.bert.encoder.layer[:n_frozen].requires_grad_(False)
    for name in frozen_heads:
        model.heads[name].requires_grad_(False)


@torch.no_grad()
def frozen_features(
    model: MultiTaskModel, data: Encoded, n_frozen: int, batch_size: int = 64, progress=None
) -> list[Features]:
    """The frozen bottom's states (the embeddings' output and n_frozen blocks') for every example, one Features each.

    Sentence examples keep every token (S' = n_frozen + 1 states, (T_i, S', C)). With the whole encoder
    frozen, a token example keeps only its word starts ((W_i, S, C)): all its head reads, and about half
    the memory. Partly frozen, it keeps every token too, as the blocks above still run on them.
    progress: called with the number of examples after each batch (a progress bar's update).
    """
    model.bert.eval()
    rows: list[Features] = [Features(None)] * len(data)
    for indices in length_sorted_batches([len(ids) for ids in data.ids], batch_size):
        ids, mask = right_pad([data.ids[i] for i in indices])
        tokens = torch.stack(model.bert.hidden_states(ids, mask, num_blocks=n_frozen), dim=2)  # (B, T, S', C)
        for row, i in enumerate(indices):
            if data.starts is not None and n_frozen == model.num_layers:
                rows[i] = Features(None, words=tokens[row, data.starts[i]].clone())
            else:
                rows[i] = Features(None, tokens[row, : len(data.ids[i])].clone())
        if progress is not None:
            progress(len(indices))
    return rows
