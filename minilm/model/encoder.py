"""A BERT encoder written out by hand, as used by all-MiniLM-L6-v2.

It reproduces Hugging Face `transformers` `BertModel` (modeling_bert.py) closely enough to match
its `last_hidden_state` and `pooler_output` to float32 rounding. Read it top to bottom:

    config -> embeddings -> self-attention -> attention output -> feed-forward -> layer
           -> encoder (the layer stack) -> pooler -> model

Module names mirror the checkpoint's keys (`embeddings.word_embeddings`,
`encoder.layer.{i}.attention.self.query`, `attention.output.LayerNorm`, ...), so loading needs no
rename table. This file never touches the filesystem or the network: `minilm.weights` finds and
checks the files, `minilm.model.loading` turns config.json and the tensors into this model.

The names are Hugging Face's: `BertModel` is the whole model (embeddings, then the layer stack),
`BertEncoder` the stack of `BertLayer` blocks, so `model.encoder.layer[i]` is the checkpoint's
`encoder.layer.{i}` here as in transformers.

Shape legend:
    B  batch size             T  tokens per sequence (padded)
    C  hidden size (384)      H  attention heads (12)
    D  head dim (C // H = 32) F  feed-forward size (1536)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The architecture numbers of a BERT checkpoint, as found in its `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1  # dropout only acts in training (the heads' fine-tuning)
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0


# all-MiniLM-L6-v2 (sentence-transformers): a 6-layer, 384-wide distilled BERT, uncased vocab.
ALL_MINILM_L6_V2 = BertConfig()


class BertEmbeddings(nn.Module):
    """word + position + token type, then LayerNorm (and dropout, a no-op at inference)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # BERT adds a segment embedding even for single sentences (all type 0); leaving it out shifts every vector.
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) input vectors."""
        T = input_ids.size(1)
        positions = torch.arange(T, device=input_ids.device)  # (T,), padding sits on the right
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)  # (B, T, C) + (T, C) broadcasts
        return self.dropout(self.LayerNorm(x))


def key_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) attention mask (1 = real token, 0 = padding) -> (B, 1, 1, T) bool, broadcast over heads and queries.

    Every query may look at every real key and at no padding key.
    """
    B, T = attention_mask.shape
    return attention_mask.bool().view(B, 1, 1, T)  # (B, 1, 1, T)


def attention_probs(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + mask): how much each query token takes from each key token.

    q, k: (B, H, T, D); key_mask: (B, 1, 1, T) bool, True where the key is a real token.
    Returns (B, H, T, T); each row sums to 1.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, T)
    scores = scores.masked_fill(~key_mask, float("-inf"))  # padding keys get zero weight
    return scores.softmax(dim=-1)  # (B, H, T, T)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """attention_probs(q, k) v, written out; the test oracle for the SDPA call below. Returns (B, H, T, D)."""
    return attention_probs(q, k, key_mask) @ v  # (B, H, T, D)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention: separate query, key and value projections, as in the checkpoint."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def split_heads(self, projection: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """Project, then split C into H heads of D: (B, T, C) -> (B, H, T, D)."""
        B, T, C = x.size()
        return projection(x).view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C) and a (B, 1, 1, T) bool key mask -> (B, T, C) heads concatenated (not yet projected)."""
        B, T, C = x.size()
        # 1) project to queries, keys and values, H heads of D each
        q, k, v = (self.split_heads(p, x) for p in (self.query, self.key, self.value))  # 3 x (B, H, T, D)
        # 2) attend: the fused kernel computes the same maths as reference_attention
        dropout_p = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)  # (B, H, T, D)
        # 3) concatenate the heads again
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)

    def attention_probs(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """The attention probabilities that forward() applies, for looking at: (B, T, C) -> (B, H, T, T)."""
        return attention_probs(self.split_heads(self.query, x), self.split_heads(self.key, x), key_mask)


class BertOutput(nn.Module):
    """Projection back to C, then post-LayerNorm of the residual sum: LayerNorm(x + dropout(dense(h))).

    Closes both sub-layers of a block: after attention (`attention.output`, h is C wide) and after
    the feed-forward (`output`, h is F wide).
    """

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        # BERT normalizes *after* the residual add (post-LN); a pre-LN block would not load these weights.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h: (B, T, C or F) sub-layer result, x: (B, T, C) its input -> (B, T, C)."""
        return self.LayerNorm(x + self.dropout(self.dense(h)))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertOutput(config, config.hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        return self.output(self.self(x, key_mask), x)


class BertIntermediate(nn.Module):
    """The first half of the feed-forward block: C -> F and GELU. BertOutput is the second half."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, F)"""
        # BERT's "gelu" is the exact erf form, not the tanh approximation; the two differ by ~1e-3.
        return F.gelu(self.dense(x), approximate="none")


class BertLayer(nn.Module):
    """One transformer block: attention sub-layer, then feed-forward sub-layer, each post-LN."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        a = self.attention(x, key_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """The stack of blocks, the checkpoint's `encoder.layer.{i}` (transformers' `BertEncoder`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, layers: slice = slice(None)) -> torch.Tensor:
        """(B, T, C) -> (B, T, C) through the blocks `layers` selects (all of them by default).

        A slice lets a caller run part of the stack: the heads run a frozen bottom once and cache it.
        """
        for block in self.layer[layers]:
            x = block(x, key_mask)
        return x


class BertPooler(nn.Module):
    """BERT's pooler: the [CLS] token's vector through a dense layer and tanh.

    Pre-trained for next-sentence prediction; sentence embeddings pool the token vectors instead
    (minilm.model.pooling), but a cross-encoder's classifier reads this (minilm.model.classifier).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hidden states -> (B, C): token 0 is [CLS], with or without padding on the right."""
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """Token ids in, contextual token vectors out.

    add_pooling_layer: also hold the checkpoint's `pooler` (BertPooler), as a cross-encoder needs;
    sentence embeddings leave it out, and their loading drops its tensors.
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = False):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layer)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask (1 = real token, 0 = padding): (B, T) -> hidden states (B, T, C).

        Padding rows come out as numbers too; pooling must ignore them through the mask.
        """
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        return self.run_layers(x, attention_mask)  # (B, T, C)

    def run_layers(self, x: torch.Tensor, attention_mask: torch.Tensor, layers: slice = slice(None)) -> torch.Tensor:
        """Hidden states x (B, T, C) through the blocks `layers` selects, every query seeing only real keys."""
        return self.encoder(x, key_mask(attention_mask), layers)  # (B, T, C)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        num_blocks: int | None = None,
    ) -> list[torch.Tensor]:
        """The embeddings' output and every block's, from one pass: L + 1 tensors (B, T, C), the last = forward().

        What transformers returns with output_hidden_states=True; a head that mixes layers reads these.
        num_blocks: stop after that many blocks (num_blocks + 1 tensors), as a frozen bottom does.
        """
        states = [self.embeddings(input_ids, token_type_ids)]  # (B, T, C)
        for i in range(self.num_layers if num_blocks is None else num_blocks):
            states.append(self.run_layers(states[-1], attention_mask, slice(i, i + 1)))  # block i's output
        return states
