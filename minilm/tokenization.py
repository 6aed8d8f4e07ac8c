"""Text -> padded id tensors, with the truncation sentence-transformers applies.

Uses the `tokenizers` library on the checkpoint's `tokenizer.json` (BERT WordPiece, uncased here).
sentence-transformers calls the tokenizer with `truncation="longest_first", max_length=max_seq_length`
(256 for all-MiniLM-L6-v2) and pads each batch to its longest text. For one text, longest-first
truncation keeps the first `max_seq_length - 2` word pieces and then adds [CLS] and [SEP].
We do the same in two steps so the untruncated length can be reported as `n_tokens`.

Two tokenizers can do the work, with the same ids and offsets: "fast", the Rust `tokenizers`
library (the default), and "python", `minilm.wordpiece`, the same algorithm in plain Python to
read and step through (slower; see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from .wordpiece import WordPieceEncoding, WordPieceTokenizer

TokenizerKind = Literal["fast", "python"]
TOKENIZER_KINDS = ("fast", "python")
AnyEncoding = Union[Encoding, WordPieceEncoding]  # the same fields: ids, type_ids, tokens, offsets, word_ids


@dataclass
class TokenBatch:
    """One padded batch. Every tensor is (B, T); T is the longest text in the batch after truncation."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 = real token, 0 = padding
    token_type_ids: torch.Tensor

    def to(self, device: torch.device) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.token_type_ids.to(device))


class SentenceTokenizer:
    """Wraps a `tokenizers.Tokenizer` (or a `WordPieceTokenizer`, which has the same methods):
    truncation to `max_seq_length`, token counts, per-batch padding."""

    def __init__(self, tokenizer: Tokenizer | WordPieceTokenizer, max_seq_length: int, lowercase: bool = False):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0  # read before padding is switched off
        # tokenizer.json may carry its own fixed padding and truncation (128 in all-MiniLM-L6-v2); sentence-transformers overrides both.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_seq_length = max_seq_length
        self.lowercase = lowercase  # sentence_bert_config.json's do_lower_case, applied before the tokenizer's own normalizer
        self.num_special = tokenizer.num_special_tokens_to_add(is_pair=False)  # [CLS] and [SEP]
        around = tokenizer.post_process(tokenizer.encode("", add_special_tokens=False)).ids
        self.cls_id, self.sep_id = around[0], around[-1]  # BERT's template is [CLS] text [SEP]

    @classmethod
    def from_file(cls, path: Path, max_seq_length: int, lowercase: bool = False, kind: TokenizerKind = "fast") -> "SentenceTokenizer":
        """path: the checkpoint's tokenizer.json; kind "python" also reads vocab.txt beside it."""
        if kind == "python":
            return cls(WordPieceTokenizer.from_files(path, Path(path).parent / "vocab.txt"), max_seq_length, lowercase)
        return cls(Tokenizer.from_file(str(path)), max_seq_length, lowercase)

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

    def encode_words(self, word_lists: list[list[str]]) -> tuple[list[AnyEncoding], list[int]]:
        """`encode` for text already split into words (CoNLL); `Encoding.word_ids` index those words."""
        if self.lowercase:
            word_lists = [[w.lower() for w in words] for words in word_lists]
        return self._truncate(self.tokenizer.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False))

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
        T = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), T), dtype=np.int64)
        types = np.zeros((len(encodings), T), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        return TokenBatch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
