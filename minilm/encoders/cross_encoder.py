"""`CrossEncoder`: (query, passage) pairs in, relevance scores out, the same numbers as sentence-transformers.

    from minilm import CrossEncoder
    reranker = CrossEncoder.from_pretrained("path/to/ms-marco-MiniLM-L-6-v2")
    reranker.predict([("how tall is everest", "Everest is 8,849 m high."), ...])   # float32 (N,)
    reranker.rank("how tall is everest", passages, top_k=3)   # [{"corpus_id", "score"}, ...] best first

A sentence encoder embeds each text alone, so a corpus is embedded once and searched by cosine;
a cross-encoder reads the query and the passage together (minilm.model.classifier), which ranks
better but costs one model pass per pair: it reranks the few dozen candidates a search found.

Follows sentence-transformers' CrossEncoder: pairs are tokenized together with longest-first
truncation to the checkpoint's length, batched longest first, and the logits go through the
checkpoint's activation (sigmoid by default for one label; ms-marco's rerankers keep the logits).
Reading and checking the folder is minilm.weights.cross_encoder's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.classifier import ACTIVATIONS, BertForSequenceClassification
from ..text.tokenization import PairTokenizer
from ..weights.cross_encoder import CrossEncoderCheckpoint, CrossEncoderConfig, load_cross_encoder
from .batching import batches_with_progress, show_bar
from .sentence_encoder import check_text, check_texts, resolve_device


def check_pairs(pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """A list of (str, str), or TypeError naming the first item that is not one."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (text, text) pairs, got {type(pairs).__name__}")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] is {pair!r:.60}, expected a pair of two texts")
        for side, text in enumerate(pair):
            if not isinstance(text, str):
                raise TypeError(f"pairs[{i}][{side}] is {type(text).__name__}, expected str")
            check_text(text, f"pairs[{i}][{side}]")
        checked.append((pair[0], pair[1]))
    return checked


class CrossEncoder:
    """A BERT sequence classifier plus the activation its sentence-transformers checkpoint asks for."""

    def __init__(
        self,
        model: BertForSequenceClassification,
        tokenizer: PairTokenizer,
        config: CrossEncoderConfig,
        device: str | torch.device | None = None,
        checkpoint: CrossEncoderCheckpoint | None = None,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.config = config
        self.checkpoint = checkpoint

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str | torch.device | None = None,
        verify: bool = True,
        download: bool = False,
    ) -> CrossEncoder:
        """Load a cross-encoder by known name or folder, offline; see minilm.weights.cross_encoder.

        verify: check pinned sha256 hashes (turn off for your own checkpoints).
        download: if a known checkpoint is not found locally, fetch it from the hub into weights/.
        Raises WeightsError with a one-line fix when files are missing, corrupt or do not fit.
        """
        checkpoint = load_cross_encoder(model, verify=verify, download=download)
        return cls(checkpoint.model, checkpoint.tokenizer, checkpoint.config, device, checkpoint)

    @property
    def folder(self) -> Path | None:
        return self.checkpoint.folder if self.checkpoint else None

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def activation_fn(self, logits: torch.Tensor) -> torch.Tensor:
        """The checkpoint's activation (config.activation), logits -> scores."""
        return ACTIVATIONS[self.config.activation](logits)

    def predict(
        self,
        pairs: Sequence[Sequence[str]],
        batch_size: int = 32,
        activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        apply_softmax: bool = False,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Score each (text, text) pair: float32 (N,) for a one-label model, (N, num_labels) otherwise.

        A single pair (a tuple of two str) gives a 0-d array, as sentence-transformers gives one score.
        activation_fn: applied to the (B, L) logits instead of the checkpoint's (torch.nn.Identity() for
            the raw logits). apply_softmax: a softmax over the labels afterwards (more than one label).
        show_progress_bar: None shows a bar on stderr from 1,000 pairs on.
        """
        single = isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(t, str) for t in pairs)
        checked = check_pairs([pairs] if single else pairs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number of 1 or more, got {batch_size!r}")
        activation = self.activation_fn if activation_fn is None else activation_fn
        encodings = self.tokenizer.encode(checked)
        scores = np.zeros((len(checked), self.num_labels), dtype=np.float32)
        show = show_bar(len(checked), show_progress_bar)
        for indices in batches_with_progress(
            [len(e.ids) for e in encodings], batch_size, show=show, desc="Scoring", unit="pair"
        ):
            batch = self.tokenizer.pad([encodings[i] for i in indices]).to(self.device)
            with torch.inference_mode():
                logits = self.model(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # (B, L)
                batch_scores = activation(logits.float())
                if apply_softmax and self.num_labels > 1:
                    batch_scores = batch_scores.softmax(dim=-1)
            scores[indices] = batch_scores.cpu().numpy()
        scores = scores[:, 0] if self.num_labels == 1 else scores
        return scores[0] if single else scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[dict]:
        """The documents by score against the query, best first: [{"corpus_id": i, "score": s}, ...]
        ("text" too with return_documents), the top_k best only when given. Ties keep input order.
        One-label models only, as in sentence-transformers."""
        if self.num_labels != 1:
            raise ValueError(f"rank() needs a one-label model; this one has {self.num_labels} labels, use predict()")
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_text(query, "the query")
        documents = check_texts(documents)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a whole number of 1 or more, got {top_k!r}")
        scores = self.predict([(query, d) for d in documents], batch_size, activation_fn, False, show_progress_bar)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[:top_k]
        return [
            {"corpus_id": i, "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
            for i in order
        ]
