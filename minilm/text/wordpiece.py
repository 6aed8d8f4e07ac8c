"""A BERT WordPiece tokenizer in plain Python, giving the same ids and offsets as the `tokenizers` library.

It reads `vocab.txt` and the settings in `tokenizer.json`, and runs the same stages that
`tokenizer.json` asks the Rust `tokenizers` library to run:

    0. added tokens   [CLS], [SEP], [MASK]... are cut out of the raw text first, and kept whole
    1. normalize      BertNormalizer: drop control characters and map whitespace to " ", put
                      spaces around CJK ideographs, strip accents (NFD, then drop the
                      nonspacing marks), lowercase
    2. pre-tokenize   BertPreTokenizer: split on whitespace, and make each punctuation mark a word
    3. WordPiece      greedy longest-match-first against the vocabulary; a piece that continues a
                      word is looked up as "##piece"; a word with no match, or one over 100
                      characters, becomes [UNK]
    4. post-process   [CLS] pieces [SEP], after truncation

Offsets: each normalized character remembers which original character it came from, so a
token's offsets are (origin of its first character, origin of its last character + 1), in
characters of the original text, as `tokenizers.Encoding.offsets` gives them. Pieces of one
original character (the jamo of a Hangul syllable) all get that character's span.

References: BERT's `tokenization.py` (Devlin et al. 2018, google-research/bert), and the
`tokenizers` modules it became: normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece.

`WordPieceTokenizer` offers the part of the `tokenizers.Tokenizer` API that `SentenceTokenizer`
uses (`encode`, `encode_batch`, `post_process`, truncation and padding switches), so the two
can be swapped: `SentenceEncoder.from_pretrained(tokenizer="python")`. It is slower than the
Rust tokenizer; the README gives the measured ratio.

Unicode versions. `tokenizers` takes character categories from old tables (Unicode 8.0: it knows
no character added in 9.0), and lowercasing from the Rust standard library (a recent Unicode);
Python's `unicodedata` follows the Python release (14.0 in Python 3.11). `UNICODE_DIFFERENCES`
holds every code point where that changes the result; a test checks all 1,112,064 code points
against `tokenizers` itself. One gap is left: NFD reorders runs of combining marks, and we
decompose one character at a time. Only marks that survive accent stripping (spacing marks) are
affected, when two of them with different combining classes come out of canonical order.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Every code point where Python 3.11's Unicode 14.0 and `tokenizers` 0.23 disagree, derived by
# comparing both, one code point at a time (tests/text/test_wordpiece.py checks the table over all of them).
#   category: how tokenizers classes a character its Unicode 8.0 tables do not know, or knew
#             differently ("Cn": nothing special; "Mn": dropped; "Po": punctuation).
#   lowercase: characters newer than Python's tables that Rust's lowercasing knows
#              ("10d50-10d65:10d70": U+10D50..U+10D65 lowercase to U+10D70..U+10D85).
#   no_nfd: characters whose decomposition is newer than tokenizers' normalization tables.
UNICODE_DIFFERENCES = {
    "category": {
        "Cn": "061d 07fd 0890-0891 0898-089f 08ca-08e2 09fd-09fe 0a76 0afa-0aff 0b55 0c04 0c3c 0c77 0c84 0d00 "
        "0d3b-0d3c 0d81 0eba 180f 1885-1886 1abf-1ace 1b7d-1b7e 1df6-1dfb 2e43-2e4f 2e52-2e5d a82c a8c5 a8ff "
        "a9bd 10d24-10d27 10eab-10ead 10f46-10f50 10f55-10f59 10f82-10f89 11070 11073-11074 110c2 110cd 111cf "
        "1123e 1133b 11438-1143f 11442-11444 11446 1144b-1144f 1145a-1145b 1145d-1145e 11660-1166c 116b9 "
        "1182f-11837 11839-1183b 1193b-1193c 1193e 11943-11946 119d4-119d7 119da-119db 119e0 119e2 "
        "11a01-11a0a 11a33-11a38 11a3b-11a47 11a51-11a56 11a59-11a5b 11a8a-11a96 11a98-11a9c 11a9e-11aa2 "
        "11c30-11c36 11c38-11c3d 11c3f 11c41-11c45 11c70-11c71 11c92-11ca7 11caa-11cb0 11cb2-11cb3 "
        "11cb5-11cb6 11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d45 11d47 11d90-11d91 11d95 11d97 11ef3-11ef4 "
        "11ef7-11ef8 11fff 12ff1-12ff2 13430-13438 16e97-16e9a 16f4f 16fe2 16fe4 1cf00-1cf2d 1cf30-1cf46 "
        "1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024 1e026-1e02a 1e130-1e136 1e2ae 1e2ec-1e2ef "
        "1e944-1e94a 1e95e-1e95f",
        "Mn": "1734",
        "Po": "166d 111c9",
    },
    "lowercase": "1c89:1c8a a7cb:0264 a7cc:a7cd a7ce:a7cf a7d2:a7d3 a7d4:a7d5 a7da:a7db a7dc:019b "
    "10d50-10d65:10d70 16ea0-16eb8:16ebb",
    "no_nfd": "11938",
}

# The White_Space property, which Rust's `char::is_whitespace` (and so `tokenizers`) uses. Python's
# str.isspace() also counts U+001C..U+001F, which BERT treats as control characters.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# "Chinese characters" as BERT defines them: the CJK Unified Ideographs blocks, not Hangul or kana.
CJK_RANGES = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]


def _code_points(ranges: str) -> set[int]:
    """'0890-0891 07fd' -> {0x890, 0x891, 0x7fd}."""
    points: set[int] = set()
    for part in ranges.split():
        first, _, last = part.partition("-")
        points.update(range(int(first, 16), int(last or first, 16) + 1))
    return points


_OLD_CATEGORY = {cp: cat for cat, ranges in UNICODE_DIFFERENCES["category"].items() for cp in _code_points(ranges)}
_NO_NFD = _code_points(UNICODE_DIFFERENCES["no_nfd"])


def _lowercase_table(spec: str) -> dict[str, str]:
    """'10d50-10d65:10d70' -> {U+10D50: U+10D70, U+10D51: U+10D71, ..., U+10D65: U+10D85}."""
    table = {}
    for part in spec.split():
        ranges, target = part.split(":")
        first = int(ranges.partition("-")[0], 16)
        for cp in _code_points(ranges):
            table[chr(cp)] = chr(int(target, 16) + cp - first)
    return table


_LOWERCASE = _lowercase_table(UNICODE_DIFFERENCES["lowercase"])


def category(c: str) -> str:
    """The Unicode general category of one character, as `tokenizers` sees it."""
    return _OLD_CATEGORY.get(ord(c)) or unicodedata.category(c)


def is_control(c: str) -> bool:
    # \t, \n and \r are control characters in Unicode, but BERT counts them as whitespace.
    return c not in "\t\n\r" and category(c) in ("Cc", "Cf", "Co")


def is_punctuation(c: str) -> bool:
    # BERT also counts ASCII symbols such as $ + < = > ^ ` | ~ as punctuation, though Unicode calls them S*.
    return (
        ("!" <= c <= "/") or (":" <= c <= "@") or ("[" <= c <= "`") or ("{" <= c <= "~") or category(c).startswith("P")
    )


def is_cjk(c: str) -> bool:
    return any(first <= ord(c) <= last for first, last in CJK_RANGES)


def lowercase(c: str) -> str:
    # One character at a time, as Rust's char::to_lowercase: no final-sigma rule ("ΟΔΟΣ" -> "οδοσ").
    return _LOWERCASE.get(c) or c.lower()


def decompose(c: str) -> str:
    return c if ord(c) in _NO_NFD else unicodedata.normalize("NFD", c)


@dataclass
class WordPieceEncoding:
    """One tokenized text; the same fields as `tokenizers.Encoding` (offsets in characters)."""

    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    word_ids: list[int | None] = field(
        default_factory=list
    )  # which word (pre-token) each token is from; None for [CLS]/[SEP]
    type_ids: list[int] = field(default_factory=list)  # 0 everywhere: one sentence

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, token: str, id: int, offsets: tuple[int, int], word: int | None) -> None:
        self.tokens.append(token)
        self.ids.append(id)
        self.offsets.append(offsets)
        self.word_ids.append(word)
        self.type_ids.append(0)

    def truncate(self, max_length: int) -> None:
        """Keep the first max_length tokens (in place, as `tokenizers.Encoding.truncate`)."""
        for name in ("ids", "tokens", "offsets", "word_ids", "type_ids"):
            del getattr(self, name)[max_length:]


class UnsupportedTokenizer(ValueError):
    """A tokenizer.json that describes something other than BERT's WordPiece (BPE, Unigram, ...)."""


class WordPieceTokenizer:
    """BERT's tokenizer, stage by stage. Build it with `from_files(tokenizer.json, vocab.txt)`."""

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,  # None: strip when lowercasing, as BERT does
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        added_tokens: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        template: tuple[str, str] = ("[CLS]", "[SEP]"),  # what post_process puts around the pieces
        pad_token: str = "[PAD]",
    ):
        self.vocab = vocab
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.unk_token = unk_token
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.added_tokens = added_tokens
        # Leftmost match, and the longest one where two start at the same place (as tokenizers' Aho-Corasick).
        longest_first = sorted(added_tokens, key=len, reverse=True)
        self.added_pattern = re.compile("|".join(map(re.escape, longest_first))) if added_tokens else None
        self.cls_token, self.sep_token = template
        self.pad_id = vocab[pad_token]
        self.truncation: int | None = None  # max_length, when enable_truncation() was called

    @classmethod
    def from_files(cls, tokenizer_json: Path, vocab_txt: Path) -> WordPieceTokenizer:
        """The vocabulary from vocab.txt (one token per line, id = line number), settings from tokenizer.json."""
        config = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        kinds = tuple(str((config.get(part) or {}).get("type")) for part in ("normalizer", "pre_tokenizer", "model"))
        if kinds != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
            raise UnsupportedTokenizer(
                f"{tokenizer_json} describes a {'/'.join(kinds)} tokenizer; "
                "the Python tokenizer only does BERT WordPiece. Use tokenizer='fast'"
            )
        with open(vocab_txt, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        normalizer, model = config["normalizer"], config["model"]
        single = config["post_processor"]["single"]  # [CLS] $A [SEP]
        return cls(
            vocab,
            lowercase=normalizer["lowercase"],
            strip_accents=normalizer["strip_accents"],
            clean_text=normalizer["clean_text"],
            handle_chinese_chars=normalizer["handle_chinese_chars"],
            unk_token=model["unk_token"],
            continuing_subword_prefix=model["continuing_subword_prefix"],
            max_input_chars_per_word=model["max_input_chars_per_word"],
            added_tokens=tuple(t["content"] for t in config["added_tokens"]),
            template=(single[0]["SpecialToken"]["id"], single[-1]["SpecialToken"]["id"]),
            pad_token=(config.get("padding") or {}).get("pad_token", "[PAD]"),
        )

    # ------------------------------------------------------------------ 1. normalize

    def normalize(self, text: str) -> tuple[str, list[int]]:
        """BertNormalizer. Returns the normalized text and, for each of its characters, the index of
        the character of `text` it came from."""
        if text.isascii() and text.isprintable():  # a shortcut with the same result: nothing to clean, split or strip
            return (text.lower() if self.lowercase else text), list(range(len(text)))
        out: list[str] = []
        origins: list[int] = []
        for i, c in enumerate(text):
            if self.clean_text:
                if c == "\0" or c == "\ufffd" or is_control(c):
                    continue
                if c in WHITESPACE:
                    c = " "
            pieces = f" {c} " if self.handle_chinese_chars and is_cjk(c) else c
            if self.strip_accents:  # "é" -> "e" + U+0301, and the nonspacing mark is dropped
                pieces = "".join(d for p in pieces for d in decompose(p) if category(d) != "Mn")
            if self.lowercase:
                pieces = "".join(lowercase(p) for p in pieces)
            out.append(pieces)
            origins.extend([i] * len(pieces))
        return "".join(out), origins

    # ------------------------------------------------------------------ 2. pre-tokenize

    @staticmethod
    def pre_tokenize(text: str) -> list[tuple[int, int]]:
        """BertPreTokenizer: (start, end) of each word in `text`; each punctuation mark is a word."""
        words: list[tuple[int, int]] = []
        start = None
        for i, c in enumerate(text):
            if c in WHITESPACE or is_punctuation(c):
                if start is not None:
                    words.append((start, i))
                    start = None
                if c not in WHITESPACE:
                    words.append((i, i + 1))
            elif start is None:
                start = i
        if start is not None:
            words.append((start, len(text)))
        return words

    # ------------------------------------------------------------------ 3. WordPiece

    def wordpiece(self, word: str) -> list[tuple[str, int, int]]:
        """Greedy longest-match-first: 'unaffable' -> [('un', 0, 2), ('##aff', 2, 5), ('##able', 5, 9)].
        (piece, start, end) with start/end in `word`; [UNK] spans the whole word."""
        if len(word) > self.max_input_chars_per_word:
            return [(self.unk_token, 0, len(word))]
        pieces = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):  # the longest piece first
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    pieces.append((piece, start, end))
                    break
            else:  # no prefix of the rest is in the vocabulary: the whole word is unknown
                return [(self.unk_token, 0, len(word))]
            start = end
        return pieces

    # ------------------------------------------------------------------ all stages

    def words(self, text: str) -> Iterator[list[tuple[str, tuple[int, int]]]]:
        """Stages 0-3: each word of `text` as its (piece, (start, end)) list, offsets into `text`.
        An added token is a word of its own; between them, words come from the pre-tokenizer."""
        position = 0
        for match in self.added_pattern.finditer(text) if self.added_pattern else []:
            yield from self._plain_words(text[position : match.start()], position)
            yield [(match.group(), match.span())]
            position = match.end()
        yield from self._plain_words(text[position:], position)

    def _plain_words(self, text: str, shift: int) -> Iterator[list[tuple[str, tuple[int, int]]]]:
        """Stages 1-3 on text without added tokens; offsets are shifted by `shift`."""
        normalized, origins = self.normalize(text)
        for start, end in self.pre_tokenize(normalized):
            pieces = self.wordpiece(normalized[start:end])
            yield [(piece, (shift + origins[start + a], shift + origins[start + b - 1] + 1)) for piece, a, b in pieces]

    def encode(
        self, text: str | list[str], is_pretokenized: bool = False, add_special_tokens: bool = True
    ) -> WordPieceEncoding:
        """Tokenize one text, or one list of words when is_pretokenized (offsets then count from the
        start of each word, and word_ids index the list). Truncates when enable_truncation() was called."""
        if is_pretokenized:  # word i of the list may still split into several words; all of them are word i
            numbered = ((i, word) for i, given in enumerate(text) for word in self.words(given))
        else:
            numbered = enumerate(self.words(text))
        encoding = WordPieceEncoding()
        for i, word in numbered:
            for piece, span in word:
                encoding.add(piece, self.vocab[piece], span, i)
        return self.post_process(encoding, add_special_tokens=add_special_tokens)

    def encode_batch(
        self, texts: list, is_pretokenized: bool = False, add_special_tokens: bool = True
    ) -> list[WordPieceEncoding]:
        return [self.encode(t, is_pretokenized, add_special_tokens) for t in texts]

    # ------------------------------------------------------------------ 4. post-process

    def post_process(self, encoding: WordPieceEncoding, add_special_tokens: bool = True) -> WordPieceEncoding:
        """Truncate (if enabled) to leave room for [CLS] and [SEP], then add them with offsets (0, 0)."""
        if self.truncation is not None:
            encoding.truncate(max(self.truncation - (self.num_special_tokens_to_add() if add_special_tokens else 0), 0))
        if not add_special_tokens:
            return encoding
        out = WordPieceEncoding()
        out.add(self.cls_token, self.vocab[self.cls_token], (0, 0), None)
        for token, id, span, word in zip(encoding.tokens, encoding.ids, encoding.offsets, encoding.word_ids):
            out.add(token, id, span, word)
        out.add(self.sep_token, self.vocab[self.sep_token], (0, 0), None)
        return out

    # --------------------------------------------------------- the tokenizers.Tokenizer switches SentenceTokenizer uses

    def num_special_tokens_to_add(self, is_pair: bool = False) -> int:
        if is_pair:
            raise NotImplementedError("sentence pairs are not supported: this tokenizer encodes one text at a time")
        return 2

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def padding(self) -> dict:
        return {"pad_id": self.pad_id}  # this tokenizer never pads; SentenceTokenizer.pad does

    def enable_truncation(self, max_length: int) -> None:
        self.truncation = max_length

    def no_truncation(self) -> None:
        self.truncation = None

    def no_padding(self) -> None:
        pass
