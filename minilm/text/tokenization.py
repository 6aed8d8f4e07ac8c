"""Text -> padded id tensors, with the truncation sentence-transformers applies.

Uses the `tokenizers` library on the checkpoint's `tokenizer.json` (BERT WordPiece, uncased here).
sentence-transformers calls the tokenizer with `truncation="longest_first", max_length=max_seq_length`
(256 for all-MiniLM-L6-v2) and pads each batch to its longest text. For one text, longest-first
truncation keeps the first `max_seq_length - 2` word pieces and then adds [CLS] and [SEP].
We do the same in two steps so the untruncated length can be reported as `n_tokens`.

Two tokenizers can do the work, with the same ids and offsets: "fast", the Rust `tokenizers`
library (the default), and "python", `minilm.text.wordpiece`, the same algorithm in plain Python to
read and step through (slower; see the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import torch
from tokenizers import Encoding, Tokenizer, models

from .wordpiece import UnsupportedTokenizer, WordPieceEncoding, WordPieceTokenizer

TokenizerKind = Literal["fast", "python"]
TOKENIZER_KINDS = ("fast", "python")
AnyEncoding = Union[Encoding, WordPieceEncoding]  # the same fields: ids, type_ids, tokens, offsets, word_ids


@dataclass
class TokenBatch:
    """One padded batch. Every tensor is (B, T); T is the longest text in the batch after truncation."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 = real token, 0 = padding
    token_type_ids: torch.Tensor

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.token_type_ids.to(device))


class SentenceTokenizer:
    """Wraps a `tokenizers.Tokenizer` (or a `WordPieceTokenizer`, which has the same methods):
    truncation to `max_seq_length`, token counts, per-batch padding."""

    def __init__(self, tokenizer: Tokenizer | WordPieceTokenizer, max_seq_length: int, lowercase: bool = False):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0  # read before padding is switched off
        # tokenizer.json may carry its own fixed padding and truncation (128 in all-MiniLM-L6-v2);
        # sentence-transformers overrides both.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_seq_length = max_seq_length
        self.lowercase = (
            lowercase  # sentence_bert_config.json's do_lower_case, applied before the tokenizer's own normalizer
        )
        self.num_special = tokenizer.num_special_tokens_to_add(is_pair=False)  # [CLS] and [SEP]
        around = tokenizer.post_process(tokenizer.encode("", add_special_tokens=False)).ids
        self.cls_id, self.sep_id = around[0], around[-1]  # BERT's template is [CLS] text [SEP]

    @classmethod
    def from_file(
        cls, path: Path, max_seq_length: int, lowercase: bool = False, kind: TokenizerKind = "fast"
    ) -> SentenceTokenizer:
        """path: the checkpoint's tokenizer.json; kind "python" also reads vocab.txt beside it."""
        if kind == "python":
            return cls(WordPieceTokenizer.from_files(path, Path(path).parent / "vocab.txt"), max_seq_length, lowercase)
        return cls(read_wordpiece(path), max_seq_length, lowercase)

    def largest_id(self) -> int:
        """The largest token id the tokenizer can produce (it must be below the model's vocab_size)."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values())

    def encode(self, texts: list[str]) -> tuple[list[AnyEncoding], list[int]]:
        """Tokenize and truncate. Returns the encodings (special tokens added) and each text's untruncated length."""
        return self._truncate(self.split(texts))

    def split(self, texts: list[str]) -> list[AnyEncoding]:
        """Untruncated word pieces without special tokens; offsets point into the original texts."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def _truncate(self, pieces: list[AnyEncoding]) -> tuple[list[AnyEncoding], list[int]]:
        """Keep the first max_seq_length - 2 word pieces, then add [CLS] and [SEP]."""
        n_tokens = [len(e.ids) + self.num_special for e in pieces]
        keep = self.max_seq_length - self.num_special
        encodings = []
        for e in pieces:
            if len(e.ids) > keep:
                e.truncate(keep)
            encodings.append(self.tokenizer.post_process(e))
        return encodings, n_tokens

    def pad(self, encodings: list[AnyEncoding]) -> TokenBatch:
        """Right-pad a list of encodings to the longest one: -> TokenBatch of (B, T) int64 tensors."""
        return pad_encodings(encodings, self.pad_id)


class PairTokenizer:
    """Text pairs for a cross-encoder: `[CLS] a [SEP] b [SEP]`, token types 0 then 1, as transformers
    tokenizes them for sentence-transformers' CrossEncoder: longest-first truncation to `max_length`
    (word pieces come off the longer text, one at a time), padding to the longest pair of a batch.

    The Rust tokenizer only: minilm.text.wordpiece encodes one text at a time.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int):
        self.pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.max_length = max_length

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> PairTokenizer:
        return cls(read_wordpiece(path), max_length)

    def largest_id(self) -> int:
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values())

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[Encoding]:
        """Tokenized, truncated pairs with their special tokens and token types."""
        return self.tokenizer.encode_batch([(a, b) for a, b in pairs])

    def pad(self, encodings: list[Encoding]) -> TokenBatch:
        return pad_encodings(encodings, self.pad_id)


def pad_encodings(encodings: Sequence[AnyEncoding], pad_id: int) -> TokenBatch:
    """Right-pad encodings to the longest one: -> TokenBatch of (B, T) int64 tensors."""
    ids, mask = right_pad([e.ids for e in encodings], pad_id)
    types, _ = right_pad([e.type_ids for e in encodings])
    return TokenBatch(ids, mask, types)


def read_wordpiece(path: Path) -> Tokenizer:
    """A tokenizer.json read with the Rust library; anything but BERT's WordPiece is refused."""
    tokenizer = Tokenizer.from_file(str(path))
    if not isinstance(tokenizer.model, models.WordPiece):
        raise UnsupportedTokenizer(
            f"{path} describes a {type(tokenizer.model).__name__} tokenizer; only BERT's WordPiece is supported"
        )
    return tokenizer


def right_pad(rows: Sequence[Sequence[int] | torch.Tensor], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths, padded on the right to the longest, and the (B, T) mask (1 = real, 0 = padding).

    Token id lists give (B, T) int64; (T_i, C) tensors (cached hidden states) give (B, T, C), padded with zeros.
    """
    tensors = [r if isinstance(r, torch.Tensor) else torch.tensor(r, dtype=torch.long) for r in rows]
    padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)  # (B, T) or (B, T, C)
    lengths = torch.tensor([len(r) for r in tensors])  # (B,)
    mask = (torch.arange(padded.shape[1]) < lengths[:, None]).long()  # (B, T)
    return padded, mask


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None
) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into batches of at most batch_size texts and, when
    max_batch_tokens is set, at most that many padded tokens (count x longest length).

    Every batch then carries little padding; the caller puts results back in input order.
    A text longer than max_batch_tokens still gets a batch of its own.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        batch = batches[-1] if batches else []
        longest = lengths[batch[0]] if batch else 0  # sorted: the first in a batch is its longest
        too_many_tokens = max_batch_tokens is not None and (len(batch) + 1) * longest > max_batch_tokens
        if not batch or len(batch) == batch_size or too_many_tokens:
            batches.append([i])
        else:
            batch.append(i)
    return batches
