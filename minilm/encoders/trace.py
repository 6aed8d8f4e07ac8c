"""One forward pass kept stage by stage, with each layer's attention: what `python -m minilm.explain`
shows and docs/make_walkthrough.py writes up.

`trace()` runs the encoder's own modules one at a time (no copy of the maths), so its vectors equal
`SentenceEncoder.encode`: the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.encoder import key_mask
from ..model.pooling import l2_normalize, pool
from ..text.tokenization import AnyEncoding
from .sentence_encoder import SentenceEncoder

SPECIAL_TOKENS = ("[CLS]", "[SEP]")


@dataclass
class Stage:
    name: str  # what this stage does
    tensor: torch.Tensor  # its output for the whole batch


@dataclass
class Trace:
    """Everything one forward pass computed, kept for showing."""

    texts: list[str]
    encodings: list[AnyEncoding]  # tokens, ids and offsets of each text, [CLS] and [SEP] included
    stages: list[Stage]  # token ids, embeddings, layer 1..L, pooling, normalization
    attention: list[torch.Tensor]  # per layer, (B, H, T, T): row = query token, column = key token

    @property
    def embeddings(self) -> np.ndarray:
        """The sentence vectors: the last stage, (B, C)."""
        return self.stages[-1].tensor.numpy()


def trace(encoder: SentenceEncoder, texts: list[str]) -> Trace:
    """Run `texts` through the encoder's modules one by one, keeping each stage and each layer's attention."""
    encodings, _ = encoder.tokenizer.encode(texts)
    batch = encoder.tokenizer.pad(encodings)  # one padded batch: (B, T) ids, mask, types
    model = encoder.model
    mask = key_mask(batch.attention_mask)  # (B, 1, 1, T), as BertModel.run_layers builds it
    stages = [Stage("token ids ([CLS] ... [SEP], padded to the longest)", batch.input_ids)]
    with torch.inference_mode():
        states = model.hidden_states(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # L + 1 of (B, T, C)
        # what block i attends to, recomputed from its input: (B, H, T, T) each
        attention = [block.attention.self.attention_probs(x, mask) for block, x in zip(model.encoder.layer, states)]
        stages.append(Stage("embeddings: word + position + token type, then LayerNorm", states[0]))
        stages += [Stage(f"layer {i}: self-attention, then feed-forward", x) for i, x in enumerate(states[1:], 1)]
        pooled = pool(states[-1], batch.attention_mask, encoder.config.pooling)  # (B, C)
        stages.append(Stage(f"{encoder.config.pooling} pooling over the real tokens", pooled))
        if encoder.config.normalize:
            stages.append(Stage("L2 normalization to unit length", l2_normalize(pooled)))
    return Trace(texts, encodings, stages, attention)


def strongest_links(
    trace: Trace, layer: int, sentence: int = 0, top: int = 3
) -> tuple[float, list[tuple[str, str, float]]]:
    """One layer's attention for one sentence, averaged over the heads.

    Returns the share of attention that goes to [CLS] and [SEP] (BERT parks much of it there), and the
    `top` strongest links between two different word pieces: ("query(position)", "key(position)", weight).
    """
    tokens = trace.encodings[sentence].tokens
    n = len(tokens)
    weights = trace.attention[layer][sentence].mean(dim=0)[:n, :n]  # (T, T) over real tokens only
    special = torch.tensor([t in SPECIAL_TOKENS for t in tokens])
    to_special = weights[:, special].sum(dim=1).mean().item()
    words = weights.masked_fill(special[None, :] | special[:, None] | torch.eye(n, dtype=torch.bool), -1.0)
    order = words.flatten().argsort(descending=True)[:top].tolist()
    links = [
        (f"{tokens[i // n]}({i // n})", f"{tokens[i % n]}({i % n})", words[i // n, i % n].item())
        for i in order
        if words[i // n, i % n] >= 0
    ]
    return to_special, links


def first_values(tensor: torch.Tensor, count: int = 4) -> str:
    """The first `count` numbers of the first sentence (its [CLS] token for (B, T, C) tensors)."""
    values = tensor[0, 0, :count] if tensor.dim() == 3 else tensor[0, :count]
    return " ".join(f"{v:+.4f}" if tensor.is_floating_point() else str(int(v)) for v in values.tolist())
