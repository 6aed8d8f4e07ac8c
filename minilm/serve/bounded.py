"""A long text's first word pieces, read only as far as they need: the server's bound on what one text costs.

`SentenceTokenizer.encode` tokenizes a whole text, then keeps its first max_seq_length tokens. One
request body may hold 16 MB of a single text, and reading it whole costs far more than its 256 tokens:
`"!" * 4 MiB` made 4 M Encoding entries (2.6 GB), one word of 16 M letters took 11 s and 1.1 GB in the
tokenizer's normalizer before it became a single [UNK]. `tokenize_bounded` gives the same tokens
(ids, offsets) as the whole text would, reading only as many segments of it as those tokens need.

Why a prefix can be exact: BERT's tokenizer works word by word. It first cuts the added tokens
("[CLS]", "[SEP]"...) out of the raw text, then normalizes each character of the rest alone (drop
control characters, map whitespace to " ", pad CJK ideographs with spaces, strip accents, lowercase),
splits at whitespace, makes each punctuation mark a word of its own, and runs WordPiece on each word.
So a text can be cut where no word continues: before a character that always stands alone
(whitespace, punctuation, a CJK ideograph, or a character that normalizes to one, as U+2260 "≠"
gives "="), unless an added token covers it; and at either end of an added token. The pieces of
text[:cut] are then exactly the first pieces of the text. Such **cut characters** are read off the
tokenizer itself (`CutTable`: each candidate is tokenized between two letters), so the table follows
the checkpoint's normalizer settings. Added tokens are found as the tokenizer finds them, leftmost
and longest first, reading on from the last cut.

A long text is read in **segments** of at most 4 × max_seq_length characters (1,024), each ending
at a cut, until more pieces are in than the model keeps: one segment for text without spaces or of
short words, a few more for long words. Where no cut lies within a segment's reach, the text holds
a **run** without any splitting character, and a run is at most one word: once it normalizes to
more than max_input_chars_per_word characters (100), its WordPiece is a single [UNK] spanning it, so
the run itself is never tokenized; it is normalized in chunks to count, and its first and last kept
characters are found by bisection. A run that normalizes to 100 characters or fewer (a short word
among thousands of control characters) is tokenized from its kept characters alone. Memory then
stays within one segment, and time within one pass over the characters read. Texts of one segment
or less are tokenized whole, in batches of at most 65,536 characters, so that 2,048 of them never
make millions of pieces at once.

Offsets where NFD reorders. Stripping accents decomposes the text (NFD), which sorts each run of
combining marks (non-starters) by combining class, and the Rust tokenizer then gives the run's
characters their offsets by position, not by character ("x" * 1100 + U+0307 U+1D165 is an [UNK]
ending at 1101: U+1D165 was sorted first and took U+0307's place). So a kept character's offsets
are read off the tokenizer itself, on the characters around it up to the starters (combining class
0) on either side, which reordering never crosses (`not_barriers`: a control character is no
barrier, since the normalizer removes it before NFD). Only where such a run of marks is longer than
16,384 characters is the kept character's own place used instead; there, and only there, an
offset can differ from the whole text's (never an id or a token).

Added tokens that are not matched on the raw text as they are: a custom checkpoint's tokens may be
`normalized` (matched on the normalized text, as `tokenizers.Tokenizer.add_tokens` makes them),
`lstrip`/`rstrip` (they take in the whitespace beside them) or `single_word`. Where they could
match is not a matter of a few characters around a cut, so a text in which one may occur (its raw
or normalized form holds it) is tokenized whole: exact, but without the bound. Every BERT
checkpoint's own special tokens are plain; the server's docs say what such a checkpoint costs.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Callable, Iterator
from functools import lru_cache

from ..text.tokenization import AnyEncoding, SentenceTokenizer
from ..text.wordpiece import (
    CJK_RANGES,
    WHITESPACE,
    WordPieceEncoding,
    WordPieceTokenizer,
    decompose,
    is_control,
    is_punctuation,
)

CHARS_PER_TOKEN = 4  # a segment reaches this many characters per token the model keeps (words take several)
RUN_CHUNK = 16384  # a run is normalized this many characters at a time; and NFD regions are read up to this long
SEARCH_CHUNK = 65536  # a search for the next splitting character goes this far at a time
BATCH_CHARS = 65536  # texts tokenized whole together: at most this many characters (and so pieces) at once

Piece = tuple[int, str, tuple[int, int], int]  # (id, token, (start, stop) in the text, word number)


def starts_with_starter(c: str) -> bool:
    """Whether c's decomposition starts with a starter (combining class 0): NFD never moves a character
    across it. U+0F73 has class 0 itself, but decomposes into two marks that do move."""
    return unicodedata.combining(decompose(c)[0] if unicodedata.decomposition(c)[:1] not in ("", "<") else c) == 0


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


@lru_cache(maxsize=1)
def not_barriers() -> list[tuple[int, int]]:
    """The characters NFD's reordering does not stop at: those that do not start with a starter
    (`starts_with_starter`: the combining marks, and three Tibetan vowels that decompose into them), and
    those the normalizer's cleaning removes before NFD sees them (U+0000, U+FFFD, control and format
    characters: "x" + U+0F73 + U+200D + U+1B44 sorts U+1B44 before U+0F73's marks). 0.5 s, once."""
    return [(p, p) for p in range(0x110000) if not starts_with_starter(c := chr(p)) or c in "\0\ufffd" or is_control(c)]


def char_class(ranges: list[tuple[int, int]], negate: bool = False) -> re.Pattern:
    """A regex matching one character in any of the (first, last) code point ranges (or in none of them)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    if not merged:  # (a tokenizer that splits nowhere)
        return re.compile(r"[\s\S]" if negate else r"(?!)")
    body = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in merged)
    return re.compile(("[^" if negate else "[") + body + "]")


class CutTable:
    """Which characters a text can be cut before (`cut`), and which split a word at all (`split`), for one
    tokenizer: each candidate is normalized and split into words as "a" + c + "b". It is a cut character
    when "a" and "b" come out as words of their own, and c starts with a starter (so that canonical
    reordering never moves a mark across the cut). Every cut character splits; for BERT's tables the
    two sets are equal (tests/serve/test_bounded_tokenize.py checks), and a splitting character that
    is not a cut makes the reader fall back to the next cut."""

    def __init__(self, tokenizer: WordPieceTokenizer | object):
        cuts, splits = [], []
        for c in cut_candidates():
            left, right = self._sides(tokenizer, c)
            if left and right and starts_with_starter(c):
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
        self.barrier = char_class(not_barriers(), negate=True)  # where NFD's reordering stops

    @staticmethod
    def _sides(tokenizer, c: str) -> tuple[bool, bool]:
        """Whether "a" ends before c, and whether "b" starts after it, in the words of "a" + c + "b": read
        off the normalizer and the pre-tokenizer, which decide where words end (the added tokens, which
        encode() would match first, are the reader's own concern: a custom "a!b" must not hide "!")."""
        probe = "a" + c + "b"
        if isinstance(tokenizer, WordPieceTokenizer):
            normalized = tokenizer.normalize(probe)[0]
            words = tokenizer.pre_tokenize(normalized)
        else:
            normalized = tokenizer.normalizer.normalize_str(probe) if tokenizer.normalizer else probe
            splitter = tokenizer.pre_tokenizer
            words = [span for _, span in splitter.pre_tokenize_str(normalized)] if splitter else [(0, len(normalized))]
        left = words[0][1] == 1  # "a" is the first normalized character, and the first word ends after it
        right = len(words) > 1 and words[-1][0] == len(normalized) - 1
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


class BoundedTokenizer:
    """`SentenceTokenizer.encode`, reading a long text only as far as its kept tokens need (module docstring)."""

    def __init__(self, tokenizer: SentenceTokenizer):
        self.tokenizer = tokenizer
        inner = tokenizer.tokenizer
        self.inner = inner
        self.table = CutTable(inner)
        self.keep = tokenizer.max_seq_length - tokenizer.num_special  # pieces the model reads
        self.reach = CHARS_PER_TOKEN * tokenizer.max_seq_length  # characters one segment may span
        plain: list[str] = []  # added tokens matched on the raw text as they are
        self.unusual: list[str] = []  # raw ones that take in spaces or match single words only
        self.unusual_normalized: list[str] = []  # ones matched on the normalized text, as normalized
        if isinstance(inner, WordPieceTokenizer):  # (it matches every added token as it is)
            self.normalize: Callable[[str], str] = lambda text: inner.normalize(text)[0]
            plain = [token for token in inner.added_tokens if token]
            self.max_word = inner.max_input_chars_per_word
            self.unk = (inner.vocab[inner.unk_token], inner.unk_token)
        else:  # tokenizers.Tokenizer with a WordPiece model (read_wordpiece refuses any other)
            normalizer = inner.normalizer
            self.normalize = normalizer.normalize_str if normalizer is not None else str
            for token in inner.get_added_tokens_decoder().values():
                if token.normalized:
                    self.unusual_normalized.append(self.normalize(token.content))
                elif token.lstrip or token.rstrip or token.single_word:
                    self.unusual.append(token.content)
                else:
                    plain.append(token.content)
            self.max_word = inner.model.max_input_chars_per_word
            self.unk = (inner.token_to_id(inner.model.unk_token), inner.model.unk_token)
        plain = sorted({token for token in plain if token}, key=len, reverse=True)  # the longest first, as
        self.longest = max(map(len, plain), default=1)  # the tokenizer's leftmost-longest matching
        tokens = "|".join(map(re.escape, plain))
        self.tokens = re.compile(tokens) if plain else None
        # one pass finds added tokens and the cut characters outside them: a token wins where both start
        self.scan = re.compile(f"(?P<token>{tokens})|{self.table.cut.pattern}" if plain else self.table.cut.pattern)
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
        over), reading the text in segments that end at a cut."""
        pieces: list[Piece] = []
        if self._may_hold_unusual(text):  # read whole (module docstring)
            self._segment(text, 0, len(text), pieces, 0, want)
            return pieces
        words, position, size = 0, 0, len(text)
        while len(pieces) <= want and position < size:
            reach = position + self.reach
            end = size if reach >= size else self._last_cut(text, position, reach + 1)
            if end is None:
                token_here = self.tokens is not None and self.tokens.match(text, position) is not None
                if not token_here and self.table.next_split(text, position + 1, reach + 1) is None:
                    words, position = self._run(text, position, pieces, words, want)  # the text goes on as one word
                    continue
                end = self._next_cut(text, position, reach + 1)  # a splitting character that is not a cut
            words = self._segment(text, position, end, pieces, words, want)
            position = end
        return pieces

    def _cuts(self, text: str, position: int, low: int, high: int) -> Iterator[int]:
        """The cuts in [low, high), in order: before each cut character outside the added tokens, and at both
        ends of each added token. Tokens are matched from `position`, itself a cut, as the tokenizer does."""
        for match in self.scan.finditer(text, position, min(len(text), high + self.longest)):
            if match.start() >= high:  # (a token starting before high is matched whole within that end)
                return
            ends = (match.start(), match.end()) if match.lastgroup == "token" else (match.start(),)
            yield from (p for p in ends if low <= p < high)

    def _last_cut(self, text: str, position: int, high: int) -> int | None:
        """The last cut in text[position + 1:high], or None."""
        last = None
        for last in self._cuts(text, position, position + 1, high):  # noqa: B007 (the last one is the answer)
            pass
        return last

    def _next_cut(self, text: str, position: int, low: int) -> int:
        """The first cut at or after low, or the end of the text."""
        return next(self._cuts(text, position, low, len(text) + 1), len(text))

    def _may_hold_unusual(self, text: str) -> bool:
        """Whether an added token that is not plain (module docstring) may occur in the text: as it is, or
        in the normalized text (normalized in chunks, each with the end of the one before)."""
        if any(token in text for token in self.unusual):
            return True
        patterns = [p for p in self.unusual_normalized if p]
        if not patterns:
            return False
        overlap, tail = max(map(len, patterns)) - 1, ""
        for low in range(0, len(text), RUN_CHUNK):
            normalized = tail + self.normalize(text[low : low + RUN_CHUNK])
            if any(p in normalized for p in patterns):
                return True
            tail = normalized[len(normalized) - overlap :] if overlap else ""
        return False

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
        """position is a cut (before a cut character, after an added token, or the text's start), and no cut
        follows within reach: add the cut character's pieces, then the run up to the next splitting
        character or added token, as one word. Returns the words counted so far and where the run ends."""
        start = position
        if self.table.cut.match(text, position):  # it stands alone: its own word
            words = self._segment(text, position, position + 1, pieces, words, want)
            start = position + 1
        split = self.table.next_split(text, start)
        stop = len(text) if split is None else split
        token = self.tokens.search(text, start, min(len(text), stop + self.longest)) if self.tokens else None
        token_first = token is not None and token.start() == start
        split_not_cut = stop < len(text) and not self.table.cut.match(text, stop)
        if token is not None and start < token.start() < stop:
            stop = token.start()  # an added token ends the word; the next segment starts with it
        elif token_first or split_not_cut:  # (neither happens with BERT's tables): read on to the next cut
            end = self._next_cut(text, start, stop)
            return self._segment(text, start, end, pieces, words, want), end
        word = self._run_word(text, start, stop)
        for token_id, token_text, offsets in word[: want + 1 - len(pieces)]:
            pieces.append((token_id, token_text, offsets, words))
        return words + (1 if word else 0), stop

    def _run_word(self, text: str, start: int, stop: int) -> list[tuple[int, str, tuple[int, int]]]:
        """The pieces of text[start:stop], a run without splitting characters: [UNK] over its kept characters
        once it normalizes to more than max_word characters, else its kept characters tokenized alone
        (each with the marks around it, up to the barriers: `_region`)."""
        length, kept_chunks = 0, []
        for low in range(start, stop, RUN_CHUNK):
            high = min(low + RUN_CHUNK, stop)
            n = len(self.normalize(text[low:high]))
            if n:
                kept_chunks.append((low, high))
                length += n
            if length > self.max_word:
                first = self._region(text, start, stop, next(self._bisect(text, *kept_chunks[0], reverse=False)))
                last = self._region(text, start, stop, next(self._kept(text, start, stop, reverse=True)))
                begin = first[0] + self.inner.encode(text[slice(*first)], add_special_tokens=False).offsets[0][0]
                end = last[0] + self.inner.encode(text[slice(*last)], add_special_tokens=False).offsets[-1][1]
                return [(*self.unk, (begin, end))]
        regions: list[tuple[int, int]] = []
        for k in (k for low, high in kept_chunks for k in self._bisect(text, low, high, reverse=False)):
            if not regions or k >= regions[-1][1]:  # (a kept mark's region may hold the next kept character)
                regions.append(self._region(text, start, stop, k))
        if not regions:
            return []
        origins = [p for a, b in regions for p in range(a, b)]  # the run's characters that are read, in order
        encoding = self.inner.encode("".join(text[a:b] for a, b in regions), add_special_tokens=False)
        return [
            (token_id, token, (origins[a], origins[b - 1] + 1))
            for token_id, token, (a, b) in zip(encoding.ids, encoding.tokens, encoding.offsets)
        ]

    def _region(self, text: str, start: int, stop: int, k: int) -> tuple[int, int]:
        """The characters around text[k] that NFD may reorder with it: from the last barrier (`not_barriers`)
        at or before k to the next one after it (within the run [start, stop), whose ends are cuts). The tokenizer gives
        a reordered mark the offsets of the place it was sorted into (module docstring), so offsets are
        read off these characters, tokenized together. A region over RUN_CHUNK characters (a kept mark in
        a run of more marks than that) is cut to text[k] alone, and its offsets may then differ."""
        low, high = max(start, k - RUN_CHUNK), min(stop, k + 1 + RUN_CHUNK)
        first, end, window = None, k + 1, 64  # the last barrier in [low, k], looked for from k back
        while first is None and end > low:
            found = [m.start() for m in self.table.barrier.finditer(text, max(low, end - window), end)]
            first = found[-1] if found else None
            end, window = max(low, end - window), window * 8
        after = self.table.barrier.search(text, k + 1, high)
        first = first if first is not None else (start if low == start else None)
        last = after.start() if after else (stop if high == stop else None)
        return (k, k + 1) if first is None or last is None else (first, last)

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
