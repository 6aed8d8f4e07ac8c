"""A long text's first word pieces, read only as far as they need: the server's bound on what one text costs.

`SentenceTokenizer.encode` tokenizes a whole text, then keeps its first max_seq_length tokens. One
request body may hold 16 MB of a single text, and reading it whole costs far more than its 256 tokens:
`"!" * 4 MiB` made 4 M Encoding entries (2.6 GB), one word of 16 M letters took 11 s and 1.1 GB in the
tokenizer's normalizer before it became a single [UNK]. `tokenize_bounded` gives the same tokens
(ids, offsets) as the whole text would, reading only as many segments of it as those tokens need.

Why a prefix can be exact: BERT's tokenizer works word by word. It normalizes each character alone
(drop control characters, map whitespace to " ", pad CJK ideographs with spaces, strip accents,
lowercase), splits at whitespace, makes each punctuation mark a word of its own, then runs WordPiece
on each word. So before a character that always stands alone (whitespace, punctuation, a CJK
ideograph, or a character that normalizes to one, as U+2260 "≠" gives "="), no word continues: the
pieces of text[:cut] are exactly the first pieces of the text. Such **cut characters** are read off
the tokenizer itself (`CutTable`: each candidate is tokenized between two letters), so the table
follows the checkpoint's normalizer settings. A cut is also never inside an added token ("[CLS]" in
the text is kept whole; these are matched on the raw text, as BERT's are).

A long text is read in **segments** of at most 4 × max_seq_length characters (1,024), each ending
before a cut character, until more pieces are in than the model keeps: one segment for text without
spaces or of short words, a few more for long words. Where no cut character lies within a segment's
reach, the text holds a **run** without any splitting character, and a run is at most one word:
once it normalizes to more than max_input_chars_per_word characters (100), its WordPiece is a single
[UNK] spanning it, so the run itself is never tokenized; it is normalized in chunks to count, and its
first and last kept characters (for the [UNK]'s offsets) are found by bisection. A run that
normalizes to 100 characters or fewer (a short word among thousands of control characters) is
tokenized from its kept characters alone. Memory then stays within one segment, and time within one
pass over the characters read. Texts of one segment or less are tokenized whole, in batches of at
most 65,536 characters, so that 2,048 of them never make millions of pieces at once.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Callable, Iterator
from functools import lru_cache

from ..text.tokenization import AnyEncoding, SentenceTokenizer
from ..text.wordpiece import CJK_RANGES, WHITESPACE, WordPieceEncoding, WordPieceTokenizer, decompose, is_punctuation

CHARS_PER_TOKEN = 4  # a segment reaches this many characters per token the model keeps (words take several)
RUN_CHUNK = 16384  # a run is normalized this many characters at a time
SEARCH_CHUNK = 65536  # a search for the next splitting character goes this far at a time
BATCH_CHARS = 65536  # texts tokenized whole together: at most this many characters (and so pieces) at once

Piece = tuple[int, str, tuple[int, int], int]  # (id, token, (start, stop) in the text, word number)


@lru_cache(maxsize=1)
def cut_candidates() -> tuple[str, ...]:
    """Every character that might split a word, as any BERT normalizer leaves it: whitespace, punctuation
    (Unicode's P* and ASCII symbols), and characters whose decomposition holds one (U+2260 "≠" is "="
    and a combining mark). CJK ideographs are whole ranges, checked apart. About 760; under 1 s, once."""

    def splits(c: str) -> bool:
        return c in WHITESPACE or is_punctuation(c)

    found = []
    for point in range(0x110000):
        c = chr(point)
        canonical = unicodedata.decomposition(c)[:1] not in ("", "<")  # compatibility ones are not applied
        if splits(c) or (canonical and any(splits(d) for d in decompose(c))):
            found.append(c)
    return tuple(found)


def char_class(ranges: list[tuple[int, int]]) -> re.Pattern:
    """A regex matching one character in any of the (first, last) code point ranges."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in merged) + "]")


class CutTable:
    """Which characters a text can be cut before (`cut`), and which split a word at all (`split`), for one
    tokenizer: each candidate is tokenized as "a" + c + "b". It is a cut character when "a" and "b" come
    out as words of their own, and c is a starter (combining class 0, so that canonical reordering
    never moves a mark across the cut). Every cut character splits; for BERT's tables the two sets are
    equal (tests/serve/test_bounded_tokenize.py checks), and a splitting character that is not a cut
    makes the reader fall back to the next cut."""

    def __init__(self, tokenizer: WordPieceTokenizer | object):
        cuts, splits = [], []
        for c in cut_candidates():
            left, right = self._sides(tokenizer, c)
            if left and right and unicodedata.combining(c) == 0:
                cuts.append((ord(c), ord(c)))
            if left or right:
                splits.append((ord(c), ord(c)))
        for first, last in CJK_RANGES:  # one character stands for its block (the normalizer pads them all or none)
            left, right = self._sides(tokenizer, chr(first))
            if left and right:
                cuts.append((first, last))
            if left or right:
                splits.append((first, last))
        self.cut, self.split = char_class(cuts), char_class(splits)
        # re checks characters beyond U+FFFF range by range (70 ns each, 1.2 s for 16 M), and those below
        # it in one bitmap lookup (3 ns): long searches use the bitmap where a stretch has no such character
        self.split_bmp = char_class([(a, min(b, 0xFFFF)) for a, b in splits if a <= 0xFFFF])

    @staticmethod
    def _sides(tokenizer, c: str) -> tuple[bool, bool]:
        """Whether "a" ends before c, and whether "b" starts after it, in the tokens of "a" + c + "b"."""
        encoding = tokenizer.encode("a" + c + "b", add_special_tokens=False)
        words = list(zip(encoding.word_ids, encoding.offsets))
        first, last = words[0][0], words[-1][0]
        left = all(stop <= 1 for word, (_, stop) in words if word == first)
        right = first != last and all(start >= 2 for word, (start, _) in words if word == last)
        return left, right

    def next_split(self, text: str, low: int, high: int | None = None) -> int | None:
        """The first splitting character in text[low:high], or None; in stretches of 65,536 characters,
        so that a search through 16 MB neither crawls nor holds the GIL for long."""
        high = len(text) if high is None else high
        for a in range(low, high, SEARCH_CHUNK):
            b = min(a + SEARCH_CHUNK, high)
            pattern = self.split_bmp if max(text[a:b]) <= "\uffff" else self.split
            match = pattern.search(text, a, b)
            if match:
                return match.start()
        return None

    def cuts_before(self, text: str, low: int, high: int) -> Iterator[int]:
        """Positions of cut characters in text[low:high], last first (it looks back 64 characters, then more)."""
        window, end = 64, high
        while end > low:
            start = max(low, end - window)
            yield from reversed([m.start() for m in self.cut.finditer(text, start, end)])
            end, window = start, window * 8


class BoundedTokenizer:
    """`SentenceTokenizer.encode`, reading a long text only as far as its kept tokens need (module docstring)."""

    def __init__(self, tokenizer: SentenceTokenizer):
        self.tokenizer = tokenizer
        inner = tokenizer.tokenizer
        self.inner = inner
        self.table = CutTable(inner)
        self.keep = tokenizer.max_seq_length - tokenizer.num_special  # pieces the model reads
        self.reach = CHARS_PER_TOKEN * tokenizer.max_seq_length  # characters one segment may span
        if isinstance(inner, WordPieceTokenizer):
            self.normalize: Callable[[str], str] = lambda text: inner.normalize(text)[0]
            self.added = [token for token in inner.added_tokens if token]
            self.max_word = inner.max_input_chars_per_word
            self.unk = (inner.vocab[inner.unk_token], inner.unk_token)
        else:  # tokenizers.Tokenizer with a WordPiece model (read_wordpiece refuses any other)
            normalizer = inner.normalizer
            self.normalize = normalizer.normalize_str if normalizer is not None else str
            self.added = [token.content for token in inner.get_added_tokens_decoder().values() if token.content]
            self.max_word = inner.model.max_input_chars_per_word
            self.unk = (inner.token_to_id(inner.model.unk_token), inner.model.unk_token)
        self.frame = inner.post_process(inner.encode("", add_special_tokens=False))  # [CLS] [SEP]

    def encode(self, texts: list[str]) -> tuple[list[AnyEncoding], list[int]]:
        """`tokenizer.encode(texts)`: each text's encoding (truncated, special tokens added) and its token
        count; the count of a text cut short is a lower bound, over max_seq_length all the same.

        Texts up to one segment long are tokenized whole, in batches of at most BATCH_CHARS characters:
        their pieces exist untruncated until the batch is truncated (and the Rust encodings keep that
        capacity), and 2,048 texts of 1,000 "!" would otherwise be 2 M of them at once."""
        encodings: list = [None] * len(texts)
        counts = [0] * len(texts)
        short = [i for i, text in enumerate(texts) if len(text) <= self.reach]
        for batch in batches_of_chars(short, [len(t) for t in texts], BATCH_CHARS):
            done, n_tokens = self.tokenizer.encode([texts[i] for i in batch])
            for i, encoding, n in zip(batch, done, n_tokens):
                encodings[i], counts[i] = encoding, n
        for i, text in enumerate(texts):
            if encodings[i] is None:
                pieces = self.first_pieces(self.source(text), self.keep)
                encodings[i], counts[i] = self.assemble(pieces[: self.keep]), len(pieces) + self.tokenizer.num_special
        return encodings, counts

    def count(self, text: str, limit: int) -> int:
        """The text's word pieces, or limit + 1 if it has more (read only that far)."""
        return len(self.first_pieces(self.source(text), limit))

    def source(self, text: str) -> str:
        """The text as the tokenizer reads it: lowercased first when the checkpoint says so (do_lower_case).
        Lowered whole: Python's final-sigma rule looks past a cut ("ΑΣ." + "Β": σ, not ς)."""
        return text.lower() if self.tokenizer.lowercase else text

    def assemble(self, pieces: list[Piece]) -> WordPieceEncoding:
        """[CLS] pieces [SEP], as the tokenizer's post-processor puts them."""
        encoding = WordPieceEncoding()
        frame = self.frame
        encoding.add(frame.tokens[0], frame.ids[0], frame.offsets[0], None)
        for token_id, token, offsets, word in pieces:
            encoding.add(token, token_id, offsets, word)
        encoding.add(frame.tokens[-1], frame.ids[-1], frame.offsets[-1], None)
        return encoding

    # ------------------------------------------------------------------ reading a text in segments

    def first_pieces(self, text: str, want: int) -> list[Piece]:
        """The text's word pieces, in order: all of them, or the first want + 1 (so the caller sees it is
        over), reading the text in segments that end before a cut character."""
        pieces: list[Piece] = []
        words, position, size = 0, 0, len(text)
        while len(pieces) <= want and position < size:
            reach = position + self.reach
            end = size if reach >= size else self._last_cut(text, position + 1, reach + 1)
            if end is None and self.table.next_split(text, position + 1, reach + 1) is None:
                words, position = self._run(text, position, pieces, words, want)  # the text goes on as one word
                continue
            if end is None:  # a splitting character that is not a cut (inside an added token): on to the next cut
                end = self._next_cut(text, reach + 1)
            words = self._segment(text, position, end, pieces, words, want)
            position = end
        return pieces

    def _valid(self, text: str, position: int) -> bool:
        """A cut before text[position]: a cut character, and not inside an occurrence of an added token."""
        if not self.table.cut.match(text, position):
            return False
        for token in self.added:  # an occurrence starting in (position - len, position) covers it
            if text.find(token, max(0, position - len(token) + 1), position + len(token) - 1) != -1:
                return False
        return True

    def _last_cut(self, text: str, low: int, high: int) -> int | None:
        """The last valid cut in text[low:high], or None."""
        return next((p for p in self.table.cuts_before(text, low, high) if self._valid(text, p)), None)

    def _next_cut(self, text: str, low: int) -> int:
        """The first valid cut at or after low, or the end of the text."""
        for match in self.table.cut.finditer(text, low):
            if self._valid(text, match.start()):
                return match.start()
        return len(text)

    def _segment(self, text: str, start: int, end: int, pieces: list[Piece], words: int, want: int) -> int:
        """Tokenize text[start:end] (its own words) onto `pieces`; returns the words counted so far."""
        encoding = self.inner.encode(text[start:end], add_special_tokens=False)
        room = want + 1 - len(pieces)
        ids, tokens, offsets, word_ids = encoding.ids, encoding.tokens, encoding.offsets, encoding.word_ids
        for token_id, token, (a, b), word in zip(ids[:room], tokens[:room], offsets[:room], word_ids[:room]):
            pieces.append((token_id, token, (a + start, b + start), words + word))
        return words + (max(word_ids) + 1 if word_ids else 0)

    # ------------------------------------------------------------------ a run: one word, read without tokenizing it

    def _run(self, text: str, position: int, pieces: list[Piece], words: int, want: int) -> tuple[int, int]:
        """text[position] is a cut character (or the text's start) and no splitting character follows
        within reach: add its pieces, then the run up to the next splitting character, as one word.
        Returns the words counted so far and where the run ends."""
        start = position
        if position > 0 or self.table.cut.match(text, 0):
            words = self._segment(text, position, position + 1, pieces, words, want)
            start = position + 1
        split = self.table.next_split(text, start)
        stop = len(text) if split is None else split
        inside = any(text.find(token, start, stop) != -1 for token in self.added)
        if inside or (stop < len(text) and not self._valid(text, stop)):
            end = self._next_cut(text, stop)  # an added token in the run or at its end: read it as it is
            return self._segment(text, start, end, pieces, words, want), end
        word = self._run_word(text, start, stop)
        for token_id, token, offsets in word[: want + 1 - len(pieces)]:
            pieces.append((token_id, token, offsets, words))
        return words + (1 if word else 0), stop

    def _run_word(self, text: str, start: int, stop: int) -> list[tuple[int, str, tuple[int, int]]]:
        """The pieces of text[start:stop], a run without splitting characters: [UNK] over its kept characters
        once it normalizes to more than max_word characters, else its kept characters tokenized alone."""
        length, kept_chunks = 0, []
        for low in range(start, stop, RUN_CHUNK):
            high = min(low + RUN_CHUNK, stop)
            n = len(self.normalize(text[low:high]))
            if n:
                kept_chunks.append((low, high))
                length += n
            if length > self.max_word:
                first = next(self._bisect(text, *kept_chunks[0], reverse=False))
                last = next(self._kept(text, start, stop, reverse=True))
                return [(*self.unk, (first, last + 1))]
        kept = [k for low, high in kept_chunks for k in self._bisect(text, low, high, reverse=False)]
        if not kept:
            return []
        encoding = self.inner.encode("".join(text[k] for k in kept), add_special_tokens=False)
        return [
            (token_id, token, (kept[a], kept[b - 1] + 1))
            for token_id, token, (a, b) in zip(encoding.ids, encoding.tokens, encoding.offsets)
        ]

    def _kept(self, text: str, start: int, stop: int, reverse: bool) -> Iterator[int]:
        """Positions in [start, stop) of the characters that normalization keeps, from either end: chunk by
        chunk, and by bisection inside a chunk that keeps any."""
        lows = range(start, stop, RUN_CHUNK)
        for low in reversed(lows) if reverse else lows:
            yield from self._bisect(text, low, min(low + RUN_CHUNK, stop), reverse)

    def _bisect(self, text: str, low: int, high: int, reverse: bool) -> Iterator[int]:
        if not self.normalize(text[low:high]):
            return
        if high - low == 1:
            yield low
            return
        middle = (low + high) // 2
        halves = ((middle, high), (low, middle)) if reverse else ((low, middle), (middle, high))
        for a, b in halves:
            yield from self._bisect(text, a, b, reverse)


def batches_of_chars(indices: list[int], lengths: list[int], limit: int) -> Iterator[list[int]]:
    """`indices` in order, in runs whose lengths add up to at most `limit` (at least one each)."""
    batch: list[int] = []
    size = 0
    for i in indices:
        if batch and size + lengths[i] > limit:
            yield batch
            batch, size = [], 0
        batch.append(i)
        size += lengths[i]
    if batch:
        yield batch


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bounded_reader(tokenizer: SentenceTokenizer) -> BoundedTokenizer:
    """The BoundedTokenizer of this tokenizer (its cut table is built once, on first use)."""
    reader = _READERS.get(tokenizer)
    if reader is None:
        reader = _READERS[tokenizer] = BoundedTokenizer(tokenizer)
    return reader


def tokenize_bounded(tokenizer: SentenceTokenizer, texts: list[str]) -> tuple[list[AnyEncoding], list[int]]:
    """`tokenizer.encode(texts)`, reading each long text only as far as the model needs (module docstring)."""
    return bounded_reader(tokenizer).encode(texts)
