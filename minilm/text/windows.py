"""Where each word piece sits in the original text, and overlapping windows of word pieces: how a text
longer than the model reads is cut (heads.predict's NER windows, and `minilm.embed --window`'s rows).

    spans = text_windows(tokenizer, ["a long document ..."], size=128, stride=96)[0]   # [(0, 612), (431, 1040), ...]
"""

from __future__ import annotations

from .tokenization import AnyEncoding, SentenceTokenizer


def token_windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Half-open windows over n content tokens (without [CLS]/[SEP]) for an encoder that fits `size`.

    Windows start at 0, stride, 2*stride, ... and each is `size` long except the last, which ends at n.
    So consecutive windows overlap by exactly `size - stride` tokens and together cover 0..n.
    n = 0 gives [(0, 0)] so an empty sentence still makes one (empty) encoder call; n <= size gives [(0, n)].
    """
    if n < 0 or size < 1 or not 1 <= stride <= size:
        raise ValueError(f"need n >= 0, size >= 1 and 1 <= stride <= size; got n={n}, size={size}, stride={stride}")
    windows = []
    start = 0
    while True:
        end = min(start + size, n)
        windows.append((start, end))
        if end == n:
            return windows
        start += stride


def _lowercase_origins(text: str) -> list[int]:
    """For each character of text.lower(), the index of the character of `text` it came from, plus len(text).

    Only "İ" (U+0130) lowercases to two characters in Python's tables ("i" and the combining dot
    U+0307), so this is the identity unless the text has one. The final len(text) is where an
    empty span at the very end of the lowered text maps to.
    """
    return [i for i, c in enumerate(text) for _ in c.lower()] + [len(text)]


def text_offsets(text: str, encoding: AnyEncoding, *, lowercased: bool = False) -> list[tuple[int, int]]:
    """Each token's (start, end_exclusive) in `text` itself, for an encoding of raw `text`.

    Offsets index the string the tokenizer read. The backbone's tokenizer lowercases inside its
    normalizer and keeps offsets into its input, so they index `text` as they are. Pass lowercased=True
    when the encoding came from text.lower() instead (SentenceTokenizer with lowercase=True,
    do_lower_case): they are then mapped back to `text`, which only moves them after an "İ".
    Forgetting the flag usually raises (offsets past the end of `text`), not always.
    """
    offsets = encoding.offsets
    read_length = len(text.lower()) if lowercased else len(text)
    if any(end > read_length for _, end in offsets):
        raise ValueError(
            f"token offsets run past the {read_length} characters of the text: is this the encoding of this text? "
            "If the tokenizer read text.lower(), pass lowercased=True"
        )
    if not lowercased or read_length == len(text):
        return list(offsets)
    origins = _lowercase_origins(text)
    # A span (start, end) of the lowered text starts where its first character came from and ends after
    # the origin of its last one; the two characters of a lowered "İ" both map to the "İ". Empty spans
    # ([CLS], [SEP]) stay empty.
    return [(origins[start], origins[end - 1] + 1 if end > start else origins[start]) for start, end in offsets]


def text_windows(tokenizer: SentenceTokenizer, texts: list[str], size: int, stride: int) -> list[list[tuple[int, int]]]:
    """Each text's windows as character spans (start, end) of the text: `size` word pieces each, starting
    every `stride` pieces (token_windows), from the first piece's start to the last one's end.

    A text of at most `size` pieces is one window, the whole text (0, len(text)), so it reads exactly as
    it would without windows.
    """
    spans = []
    for text, pieces in zip(texts, tokenizer.split(texts)):
        offsets = text_offsets(text, pieces, lowercased=tokenizer.lowercase)
        if len(offsets) <= size:
            spans.append([(0, len(text))])
        else:
            spans.append([(offsets[s][0], offsets[e - 1][1]) for s, e in token_windows(len(offsets), size, stride)])
    return spans
