"""Task heads on one shared minilm encoder pass (the nn modules; saving and loading them: storage.py).

One forward pass runs the encoder once over a batch, keeps every hidden state (the embeddings' output
and each block's, `BertModel.hidden_states`), and feeds every head from them:
    sentence embedding      the last state, pooled (and L2-normalized): exactly what SentenceEncoder.encode gives
    sentence heads          ScalarMix of the states -> BiLSTM over the tokens -> mean and max pooling -> MLP
    token heads (NER)       ScalarMix of the states at each word's first sub-token -> + word-shape features
                            -> BiLSTM over the words -> linear -> a CRF with IOB2 constraints decodes
Each part can be switched off in the head's TaskSpec (the ablation in docs/experiments.md does). A token
head reads only the states at word starts, which is all a frozen backbone's cache keeps for it (heads.train).

Heads take `labels=None` and return a loss only when labels are given, as transformers'
`BertForSequenceClassification` / `BertForTokenClassification` do.

Shape legend: B batch, T tokens, W words, S hidden states (L + 1 = 7), C hidden (384), K labels, F shape features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from minilm.model.encoder import BertModel
from minilm.model.pooling import PoolingMode, max_pool, mean_pool, sentence_embedding
from minilm.text.tokenization import right_pad

from .crf import CRF, bio_transitions
from .features import NUM_FEATURES
from .ner import IGNORE_INDEX


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name (the key in every output), whether it labels sentences or words, its labels,
    and the parts of its head."""

    name: str
    kind: Literal["sentence", "token"]
    labels: tuple[str, ...]
    hidden: int | None = None  # sentence heads: units of a hidden layer (None: one linear layer)
    pool: Literal["mean", "attention", "meanmax"] = "mean"  # sentence heads: how the tokens become one vector
    layers: Literal["mix", "last"] = "mix"  # a learned ScalarMix of every hidden state, or the last one only
    shapes: bool = False  # token heads: word-shape (casing) features beside the states
    lstm: int = 0  # BiLSTM units per direction over the tokens (sentence heads) or the words (token heads); 0: none
    crf: bool = False  # token heads: a CRF decodes (IOB2-constrained Viterbi), else each word's argmax
    dropout: float = 0.1


@dataclass
class Words:
    """The words of a batch, for token heads: where each starts and what it looks like. Padded on the right."""

    positions: torch.Tensor  # (B, W) long: each word's first sub-token, an index into the token axis
    mask: torch.Tensor  # (B, W) bool: True on real words
    shapes: torch.Tensor  # (B, W, F) float: heads.features of each word's first sub-token


@dataclass
class Features:
    """What the heads read: the hidden states of a batch, stacked. All a frozen backbone's cache keeps.

    heads.train caches one Features per example (no batch axis, no mask) and `batch` pads them together.
    """

    mask: torch.Tensor | None  # (B, T): 1 on real tokens (None with no token states)
    tokens: torch.Tensor | None = None  # (B, T, S, C): every state at every token (sentence heads, the embedding)
    words: torch.Tensor | None = None  # (B, W, S, C): every state at each word's first sub-token (token heads)

    @staticmethod
    def batch(rows: Sequence[Features]) -> Features:
        """Per-example Features (tokens (T_i, S, C), words (W_i, S, C)) -> one padded batch."""
        tokens, mask, words = None, None, None
        if rows[0].tokens is not None:
            tokens, mask = right_pad([r.tokens for r in rows])
        if rows[0].words is not None:
            words, _ = right_pad([r.words for r in rows])
        return Features(mask, tokens, words)


class ScalarMix(nn.Module):
    """A learned, softmax-weighted sum of the encoder's hidden states (ELMo's "scalar mix", Peters et al. 2018).

    mix = gamma * sum_s softmax(w)_s * h_s over the S = L + 1 states of `BertModel.hidden_states` (the
    embeddings' output and each block's). A frozen BERT keeps different information in different
    layers (BERT paper, Table 7: the last four layers together beat the top one for NER), so a head
    that reads a mix of them gets more from the same pass. It starts as the plain mean of the layers.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))  # softmax(0, ..., 0): every state counts the same
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., S, C) -> (..., C): the states stacked on the second-to-last axis, mixed."""
        # (S,) @ (..., S, C) is a batched vector-matrix product: 5x faster on CPU than the same einsum
        return self.gamma * (self.weights.softmax(0) @ states)


def read_layers(mix: ScalarMix | None, states: torch.Tensor) -> torch.Tensor:
    """(..., S, C) -> (..., C): the ScalarMix of the states, or the last state when the head has no mix."""
    return mix(states) if mix is not None else states[..., -1, :]


class BiLSTM(nn.Module):
    """A bidirectional LSTM over the real steps of right-padded rows: (B, N, D), mask (B, N) -> (B, N, 2H).

    Two one-way LSTMs on dense tensors rather than nn.LSTM(bidirectional=True) on a PackedSequence:
    torch runs packed input step by step, and on CPU it took 1.7x as long as the same rows dense (32 rows
    of 30 steps, 128 units, 2-core AMD EPYC); it made heads.train 1.7x slower and heads.predict 1.2x.
    Dense is exact for the left-to-right pass, since padding comes after every
    real step. The right-to-left pass reads each row reversed within its own length (its padding stays
    at the end), and its outputs are put back in order. Outputs on padding are zero.
    """

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.units = units
        self.left_to_right = nn.LSTM(in_dim, units, batch_first=True)
        self.right_to_left = nn.LSTM(in_dim, units, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        if N == 0:  # a batch of texts with no word at all ("", "   ")
            return x.new_zeros(B, 0, 2 * self.units)
        steps = torch.arange(N, device=x.device).expand(B, N)  # (B, N)
        lengths = mask.sum(1, keepdim=True)  # (B, 1)
        reverse = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (B, N): real steps reversed in place
        ahead, _ = self.left_to_right(x)  # (B, N, H)
        behind, _ = self.right_to_left(x.gather(1, reverse.unsqueeze(-1).expand_as(x)))  # (B, N, H), reversed
        behind = behind.gather(1, reverse.unsqueeze(-1).expand_as(behind))  # (B, N, H), back in order
        return torch.cat([ahead, behind], dim=-1) * mask.unsqueeze(-1).to(x.dtype)  # (B, N, 2H)


class SentenceClassificationHead(nn.Module):
    """ScalarMix of the states -> [BiLSTM over the tokens] -> pooling -> dropout -> linear
    (or -> linear -> GELU -> dropout -> linear).

    pool: "mean" of the tokens; "attention", one learned score per token, softmax over the real tokens,
    the weighted sum (the word attention of Yang et al. 2016); "meanmax", the mean and the per-channel
    maximum side by side (InferSent's max pooling, Conneau et al. 2017). A frozen encoder's mean gives every
    token the same say; a BiLSTM and a max let the head find the few tokens that carry the class ("not", "who").
    """

    def __init__(self, spec: TaskSpec, num_states: int, in_dim: int):
        super().__init__()
        self.mix = ScalarMix(num_states) if spec.layers == "mix" else None
        self.lstm = BiLSTM(in_dim, spec.lstm) if spec.lstm else None
        width = 2 * spec.lstm if spec.lstm else in_dim
        self.pool = spec.pool
        self.attention = nn.Linear(width, 1) if spec.pool == "attention" else None
        pooled = 2 * width if spec.pool == "meanmax" else width
        self.dropout = nn.Dropout(spec.dropout)
        self.hidden = nn.Linear(pooled, spec.hidden) if spec.hidden else None
        self.classifier = nn.Linear(spec.hidden or pooled, len(spec.labels))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, S, C), (B, T) -> logits (B, K)"""
        x = read_layers(self.mix, tokens)  # (B, T, C)
        real = mask.bool()
        if self.lstm is not None:
            x = self.lstm(self.dropout(x), real)  # (B, T, 2 * lstm)
        if self.pool == "attention":
            scores = self.attention(x).squeeze(-1).masked_fill(~real, float("-inf"))  # (B, T)
            pooled = torch.einsum("bt,btc->bc", scores.softmax(1), x)  # (B, C')
        elif self.pool == "meanmax":
            pooled = torch.cat([mean_pool(x, mask), max_pool(x, mask)], dim=-1)  # (B, 2C')
        else:
            pooled = mean_pool(x, mask)  # (B, C')
        x = self.dropout(pooled)
        if self.hidden is not None:
            x = self.dropout(F.gelu(self.hidden(x)))  # (B, hidden)
        return self.classifier(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


class TokenClassificationHead(nn.Module):
    """Per word: ScalarMix of the states -> [+ shape features] -> [BiLSTM over the words] -> linear -> [CRF].

    The word-level BiLSTM-CRF of Lample et al. 2016 on frozen BERT features (BERT paper, section 5.4),
    reading each word at its first sub-token as BERT's NER recipe does.
    """

    def __init__(self, spec: TaskSpec, num_states: int, in_dim: int):
        super().__init__()
        self.mix = ScalarMix(num_states) if spec.layers == "mix" else None
        self.shapes = spec.shapes
        width = in_dim + (NUM_FEATURES if spec.shapes else 0)
        self.dropout = nn.Dropout(spec.dropout)
        self.lstm = BiLSTM(width, spec.lstm) if spec.lstm else None
        self.classifier = nn.Linear(2 * spec.lstm if spec.lstm else width, len(spec.labels))
        self.crf = CRF(len(spec.labels), *bio_transitions(spec.labels)) if spec.crf else None

    def forward(self, states: torch.Tensor, words: Words) -> torch.Tensor:
        """states (B, W, S, C) at the words' first sub-tokens -> emissions (B, W, K), each tag's score per word."""
        x = read_layers(self.mix, states)  # (B, W, C)
        if self.shapes:
            x = torch.cat([x, words.shapes.to(x.dtype)], dim=-1)  # (B, W, C + F)
        x = self.dropout(x)
        if self.lstm is not None:
            x = self.dropout(self.lstm(x, words.mask))  # (B, W, 2 * lstm)
        return self.classifier(x)

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tags (B, W) with IGNORE_INDEX on padding; the mean over sentences (CRF) or over words (softmax)."""
        keep = mask & (tags != IGNORE_INDEX)
        if not keep.any():
            return emissions.sum() * 0  # no labelled word in the batch: no loss, and no NaN from an empty mean
        if self.crf is not None:
            rows = keep.any(1)  # a sentence with no word adds nothing
            return self.crf.neg_log_likelihood(emissions[rows], tags[rows], keep[rows])
        return F.cross_entropy(emissions[keep], tags[keep])

    @torch.no_grad()
    def decode(
        self, emissions: torch.Tensor, mask: torch.Tensor, scores: bool = True
    ) -> tuple[list[list[int]], list[list[float]]]:
        """(B, W, K), (B, W) -> each row's tag ids over its real words, and each tag's probability.

        With a CRF: the best valid IOB2 path (Viterbi) and the CRF's marginal probability of each tag on it;
        without: each word's argmax and its softmax probability. scores=False skips the probabilities
        (empty lists; the CRF's marginals cost a forward and a backward pass).
        """
        lengths = mask.sum(1).tolist()
        if self.crf is None:
            probs = emissions.float().softmax(-1)
            best = probs.max(-1)
            return (
                [row[:n] for row, n in zip(best.indices.tolist(), lengths)],
                [row[:n] for row, n in zip(best.values.tolist(), lengths)],
            )
        rows = [b for b, n in enumerate(lengths) if n]
        paths: list[list[int]] = [[] for _ in lengths]
        probabilities: list[list[float]] = [[] for _ in lengths]
        if rows:
            emissions, mask = emissions[rows].float(), mask[rows]
            marginals = self.crf.marginals(emissions, mask) if scores else None  # (B', W, K)
            for i, (b, path) in enumerate(zip(rows, self.crf.decode(emissions, mask))):
                paths[b] = path
                if marginals is not None:
                    probabilities[b] = marginals[i, torch.arange(len(path)), path].tolist()
        return paths, probabilities


@dataclass
class MultiTaskOutput:
    logits: dict[str, torch.Tensor]  # task -> (B, K) for sentence tasks, (B, W, K) word emissions for token tasks
    embedding: torch.Tensor | None  # (B, C): the pass's sentence embedding, as SentenceEncoder.encode gives it
    # (None when the Features held no token states: a frozen cache of word states only)
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # only the tasks whose labels were given


class MultiTaskModel(nn.Module):
    """A BertModel (`bert`, as in transformers' BertForSequenceClassification) and a named set of heads,
    all fed by one encoder pass."""

    def __init__(
        self,
        bert: BertModel,
        tasks: Sequence[TaskSpec],
        pooling: PoolingMode = "mean",
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
        size, states = bert.config.hidden_size, bert.num_layers + 1
        self.heads = nn.ModuleDict(
            {
                t.name: SentenceClassificationHead(t, states, size)
                if t.kind == "sentence"
                else TokenClassificationHead(t, states, size)
                for t in tasks
            }
        )
        torch.random.set_rng_state(generator_state)

    @property
    def num_layers(self) -> int:
        return self.bert.num_layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        words: Words | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> MultiTaskOutput:
        """(B, T) ids and mask -> the logits of `tasks` (default: every head); a loss per task in `labels`.

        words: where the words start, for the token heads (without it they are skipped).
        labels: task -> (B,) label ids for sentence tasks, (B, W) tag ids for token tasks (IGNORE_INDEX on padding).
        """
        states = self.bert.hidden_states(input_ids, attention_mask)  # S tensors (B, T, C), from one pass
        features = self.features(torch.stack(states, dim=2), attention_mask, words)
        return self.from_features(features, words, labels, tasks)

    def features(self, tokens: torch.Tensor, attention_mask: torch.Tensor, words: Words | None) -> Features:
        """Stacked states (B, T, S, C) -> Features, with the states at the words' starts when there are words."""
        at_words = None
        if words is not None:
            at_words = tokens[torch.arange(len(tokens)).unsqueeze(1), words.positions]  # (B, W, S, C)
        return Features(attention_mask, tokens, at_words)

    def forward_from_layer(
        self,
        below: Features,
        first_layer: int,
        words: Words | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> MultiTaskOutput:
        """Continue a pass whose states 0..first_layer ran before (heads.train runs a frozen bottom once and
        caches it): `below` holds them, and its last token state is the input of block `first_layer`.
        With every block frozen there is nothing left to run, and `below` may hold only what the heads read."""
        if first_layer < self.num_layers:
            states, h = [], below.tokens[:, :, -1].contiguous()  # (B, T, C), laid out as a fresh pass has it
            for block in range(first_layer, self.num_layers):
                h = self.bert.run_layers(h, below.mask, slice(block, block + 1))  # (B, T, C)
                states.append(h)
            tokens = torch.cat([below.tokens, torch.stack(states, dim=2)], dim=2)  # (B, T, S, C)
            below = self.features(tokens, below.mask, words)
        elif below.words is None and below.tokens is not None:
            below = self.features(below.tokens, below.mask, words)  # the words' states, read from the tokens'
        return self.from_features(below, words, labels, tasks)

    def from_features(
        self,
        features: Features,
        words: Words | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        tasks: Sequence[str] | None = None,
    ) -> MultiTaskOutput:
        """The heads of `tasks` (default: every head whose input is there) and the losses of the tasks in `labels`.

        Sentence heads need features.tokens; token heads need features.words and `words`.
        """
        logits = {}
        for name in tasks if tasks is not None else self.heads:
            head, kind = self.heads[name], self.tasks[name].kind
            if kind == "sentence" and features.tokens is not None:
                logits[name] = head(features.tokens, features.mask)
            elif kind == "token" and features.words is not None and words is not None:
                logits[name] = head(features.words, words)
        losses = {}
        for name, target in (labels or {}).items():
            if self.tasks[name].kind == "sentence":
                losses[name] = self.heads[name].loss(logits[name], target)
            else:
                losses[name] = self.heads[name].loss(logits[name], target, words.mask)
        embedding = None
        if features.tokens is not None:  # the last state, pooled as SentenceEncoder pools it: the exact embedding
            embedding = sentence_embedding(features.tokens[:, :, -1], features.mask, self.pooling, self.normalize)
        return MultiTaskOutput(logits, embedding, losses)
