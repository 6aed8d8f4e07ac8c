"""The server's tokens: each text read by `tokenize_bounded` (bounded.py) one batch at a time, kept as
ids while its request waits for the worker (`TokenIds`), or written as /tokenize's JSON (`tokens_json`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from ..text.tokenization import SentenceTokenizer
from .bounded import BATCH_CHARS, batches_of_chars, tokenize_bounded


def tokenized(tokenizer: SentenceTokenizer, texts: list[str]) -> Iterator[tuple[list[int], list, list[int]]]:
    """`tokenize_bounded` over texts of up to BATCH_CHARS characters at a time: (indices, encodings, token
    counts) per batch. The tokenizer's Encodings are large (about 50 KB each at 256 tokens: they keep
    their untruncated capacity and the overflow), so only one batch of them lives at once."""
    for batch in batches_of_chars(list(range(len(texts))), [len(t) for t in texts], BATCH_CHARS):
        encodings, counts = tokenize_bounded(tokenizer, [texts[i] for i in batch])
        yield batch, encodings, counts


@dataclass(frozen=True)
class TokenIds:
    """What the model reads of an encoding (`SentenceTokenizer.pad`: ids and token types), kept while a
    request waits for the worker: about 1.5 KB at 256 tokens, where the Encoding holds 50 KB (2,048 texts
    held 100 MB each). It stands in for the Encoding in a Job."""

    ids: np.ndarray  # (T,) int32
    type_ids: np.ndarray  # (T,) int8

    @classmethod
    def of(cls, encoding) -> TokenIds:
        return cls(np.asarray(encoding.ids, dtype=np.int32), np.asarray(encoding.type_ids, dtype=np.int8))


def token_ids(tokenizer: SentenceTokenizer, texts: list[str]) -> tuple[list[TokenIds], list[int]]:
    """Each text's TokenIds (truncated, special tokens added) and its token count (`tokenize_bounded`)."""
    ids, counts = [], []
    for _, encodings, n in tokenized(tokenizer, texts):
        ids += [TokenIds.of(encoding) for encoding in encodings]
        counts += n
    return ids, counts


def tokens_json(
    tokenizer: SentenceTokenizer, texts: list[str], prompt: int, special_tokens: bool
) -> tuple[memoryview, list[int]]:
    """/tokenize's answer, and the indices of the texts cut to max_seq_length. The answer is a JSON list per
    text of {"id", "text", "special", "prompt", "start", "stop"}, offsets into the text after the prompt
    (null for [CLS]/[SEP] and the prompt's own tokens). Built one batch of encodings at a time and one
    text's dicts at a time: 2,048 texts of 256 tokens are 38 MB of JSON, and were 285 MB as dicts."""
    out, over, limit = bytearray(b"["), [], tokenizer.max_seq_length
    for batch, encodings, counts in tokenized(tokenizer, texts):
        for i, encoding, n in zip(batch, encodings, counts):
            tokens = []
            for token_id, text, word, (start, stop) in zip(
                encoding.ids, encoding.tokens, encoding.word_ids, encoding.offsets
            ):
                special = word is None
                if special and not special_tokens:
                    continue
                in_prompt = not special and start < prompt  # offsets count from the text, after the prompt
                hidden = special or in_prompt
                tokens.append(
                    {
                        "id": token_id,
                        "text": text,
                        "special": special,
                        "prompt": in_prompt,
                        "start": None if hidden else start - prompt,
                        "stop": None if hidden else stop - prompt,
                    }
                )
            out += (b"," if i else b"") + orjson.dumps(tokens)
            if n > limit:
                over.append(i)
    out += b"]"
    return memoryview(out), over
