"""Word-shape (casing) features for the NER head, read from the text as it was written.

The backbone is uncased: BertNormalizer lowercases and strips accents, so "Apple" and "apple", or
"US" and "us", reach the encoder as the same ids. A capital letter is strong evidence for a name,
so we hand it back to the head beside the token states, as the casing features of Collobert et al.
2011 ("caps") and Chiu & Nichols 2016 (allCaps, upperInitial, lowercase, mixedCaps, noinfo) do.

Per token there are F = NUM_FEATURES = 12 float columns, named by FEATURE_NAMES:
    0..8   one-hot of the shape of the token's whole word, in SHAPES order (all zeros on [CLS]/[SEP])
    9      first_piece  the first sub-token of its word (where BERT's NER recipe reads the word's label)
    10     first_word   a token of the text's first word that is not only punctuation, so a head can
                        tell "capital because it starts the sentence" from "capital because it is a name"
    11     special      [CLS], [SEP]: tokens with word id None

A "word" is what the encoding's word_ids group together, never a single sub-token: every piece
of "Schwarzenegger" ("schwarz", "##ene", "##gger") gets the shape of "Schwarzenegger".
`token_features(text, encoding)` reads raw text: the tokenizer's pre-tokenizer cuts punctuation off
as words of their own, so "U.S." is four words ("U", ".", "S", ".": X, punct, X, punct). Training
reads CoNLL sentences as raw text too (heads.ner.joined_text), so a head never sees other words
than heads.predict gives it. `word_features` keeps one row per word, at its first sub-token.

Shapes work for any script, from Unicode properties alone (str.isupper / islower / istitle /
isdigit / isalpha and unicodedata.category), with no table of alphabets:
  * combining marks, enclosing marks and format characters (categories Mn, Me, Cf: the accent of
    a decomposed "É", a zero-width joiner, emoji variation selectors) are ignored, so NFC and NFD
    spellings of a word get the same shape;
  * punctuation between letters does not change the case pattern: "U.S." and "AT&T" are XX;
    "New-York" and "O'Neil" are Xx, because each capital starts a run of letters;
  * letters of scripts without case (Chinese, Japanese kana, Arabic, Hebrew, Thai...) are "other";
  * emoji are "punct": Unicode classes them as symbols (So, like "©" and "$"), and like
    punctuation they never start a name;
  * titlecase digraphs such as "ǅ" (category Lt) count as capitals.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import torch

from minilm.text.tokenization import AnyEncoding
from minilm.text.windows import text_offsets

SHAPES = (
    "Xx",  # a capital, then lower case: "Angela", "Élodie", "İstanbul", and "New-York", "O'Neil" (capitals start parts)
    "XX",  # two or more letters, all capitals: "NATO", "ÉCOLE", "U.S.", "AT&T" (punctuation between them is ignored)
    "X",  # one capital letter alone: "I", "A", "J." (an initial)
    "x",  # lower case only: "met", "ß", "e.g."
    "mixed",  # any other mix of capitals and lower case: "iPhone", "McDonald", "eBay"
    "Xd",  # cased letters (either case) and digits: "A4", "mp3", "COVID-19", "2nd"
    "d",  # digits and no letters, maybe with punctuation: "1996", "3.14", "1,000", "12:30", "-5"
    "punct",  # only punctuation and symbols: ".", "--", "$", "©", and emoji such as "😀"
    "other",  # none of the above: no cased letter ("東京", "שלום", "東京2020"), or an empty word
)
SHAPE_IDS = {shape: i for i, shape in enumerate(SHAPES)}
FLAGS = ("first_piece", "first_word", "special")
FEATURE_NAMES = SHAPES + FLAGS
NUM_FEATURES = len(FEATURE_NAMES)  # F = 12
FIRST_PIECE, FIRST_WORD, SPECIAL = (len(SHAPES) + i for i in range(len(FLAGS)))

_INVISIBLE = frozenset({"Mn", "Me", "Cf"})  # marks that ride on a letter, and joiners: they carry no case of their own


def _is_capital(c: str) -> bool:
    # istitle() adds the titlecase digraphs ("ǅ"), which are neither upper nor lower case.
    return c.isupper() or c.istitle()


def _capitals_start_runs(chars: Sequence[str]) -> bool:
    """True when every capital begins a run of letters: "New-York", "O'Neil"; not "McDonald"."""
    previous_is_letter = False
    for c in chars:
        if _is_capital(c) and previous_is_letter:
            return False
        previous_is_letter = c.isalpha()
    return True


def word_shape(word: str) -> str:
    """The shape class of one word, one of SHAPES (the rules are in the module docstring)."""
    chars = [c for c in word if unicodedata.category(c) not in _INVISIBLE]
    cased = [c for c in chars if c.islower() or _is_capital(c)]
    has_digit = any(c.isdigit() for c in chars)
    if cased:
        if has_digit:
            return "Xd"
        capitals = sum(_is_capital(c) for c in cased)
        if capitals == 0:
            return "x"
        if capitals == len(cased):
            return "X" if capitals == 1 else "XX"
        if _is_capital(cased[0]) and _capitals_start_runs(chars):
            return "Xx"
        return "mixed"
    if any(c.isalpha() for c in chars):
        return "other"  # letters of a script that has no case
    if has_digit:
        return "d"
    if chars and all(unicodedata.category(c)[0] in "PS" for c in chars):
        return "punct"
    return "other"


def shape_id(word: str) -> int:
    """The index of word_shape(word) in SHAPES."""
    # words repeat ("the", ","), so heads.predict looks most of them up once; long ones (a URL, a text
    # with no space) are computed each time, so the cache never holds large strings
    return _cached_shape_id(word) if len(word) <= 32 else SHAPE_IDS[word_shape(word)]


@functools.lru_cache(maxsize=1 << 16)
def _cached_shape_id(word: str) -> int:
    return SHAPE_IDS[word_shape(word)]


def word_spans(encoding: AnyEncoding, offsets: Sequence[tuple[int, int]] | None = None) -> dict[int, tuple[int, int]]:
    """word id -> (start, end_exclusive) covering all of that word's tokens, in characters of the string
    the tokenizer read (for a pre-tokenized input, of that word alone), or of `offsets` when given
    (`text_offsets`). Special tokens are left out."""
    spans: dict[int, tuple[int, int]] = {}
    for word, (start, end) in zip(encoding.word_ids, encoding.offsets if offsets is None else offsets):
        if word is not None:
            first, last = spans.get(word, (start, end))
            spans[word] = (min(first, start), max(last, end))
    return spans


def token_features(
    text: str,
    encoding: AnyEncoding,
    *,
    lowercased: bool = False,
    offsets: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Casing features for each token of `encoding`, the tokenization of raw `text`: (T, F) float32.

    Each word is read in `text` through `text_offsets` (see there for `lowercased`), so its capitals
    are the ones the user wrote. Works with or without [CLS]/[SEP]; compute it on the whole text, then
    slice its rows as you slice the ids (windows), so every window keeps the true first piece and first word.
    """
    if offsets is None:  # a caller that needs them too (heads.predict) passes them in
        offsets = text_offsets(text, encoding, lowercased=lowercased)
    spans = word_spans(encoding, offsets)
    return _features(encoding.word_ids, {w: text[start:end] for w, (start, end) in spans.items()})


def _features(word_ids: Sequence[int | None], words: Sequence[str] | dict[int, str]) -> torch.Tensor:
    """The (T, F) rows, given each token's word id and the original text of each word."""
    word_ids = list(word_ids)  # tokenizers.Encoding builds a new list on every .word_ids
    shapes = {w: shape_id(words[w]) for w in set(word_ids) if w is not None}
    # The first word that is not only punctuation: in '"Hello," she said' that is Hello, not the quote mark.
    first_word = next((w for w in word_ids if w is not None and shapes[w] != SHAPE_IDS["punct"]), None)
    rows = []
    previous = None
    for word in word_ids:
        row = [0.0] * NUM_FEATURES
        if word is None:
            row[SPECIAL] = 1.0
        else:
            row[shapes[word]] = 1.0
            row[FIRST_PIECE] = float(word != previous)
            row[FIRST_WORD] = float(word == first_word)
        rows.append(row)
        previous = word
    return torch.tensor(rows, dtype=torch.float32).reshape(len(word_ids), NUM_FEATURES)  # (T, F), also for T = 0


def word_starts(word_ids: Sequence[int | None]) -> list[int]:
    """The token position where each word begins, in text order (words with no token are absent)."""
    starts, seen = [], set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            starts.append(position)
    return starts


def word_features(
    text: str,
    encoding: AnyEncoding,
    *,
    lowercased: bool = False,
    offsets: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[int], torch.Tensor]:
    """The words of raw `text` for a token head: (each word's first token position, its features (W, F)).

    Positions index the encoding's tokens (so they count [CLS] when the encoding has it).
    """
    starts = word_starts(encoding.word_ids)
    return starts, token_features(text, encoding, lowercased=lowercased, offsets=offsets)[starts]
