"""heads.features: word shapes on Unicode edge cases, and per-token casing features through the real tokenizer's
offsets (both the Rust and the Python tokenizer), for raw text and for CoNLL-style word lists."""

from __future__ import annotations

import unicodedata

import pytest
import torch

from heads.features import (
    FEATURE_NAMES,
    FIRST_PIECE,
    FIRST_WORD,
    NUM_FEATURES,
    SHAPES,
    SPECIAL,
    shape_id,
    token_features,
    word_features,
    word_shape,
    word_spans,
    word_starts,
)
from minilm.text.tokenization import SentenceTokenizer
from minilm.text.windows import text_offsets


@pytest.fixture(scope="module", params=["fast", "python"])
def tokenizer(request, checkpoint_dir) -> SentenceTokenizer:
    """The checkpoint's own tokenizer as SentenceEncoder.from_pretrained builds it (do_lower_case is false)."""
    return SentenceTokenizer.from_file(checkpoint_dir / "tokenizer.json", 256, kind=request.param)


@pytest.fixture(scope="module")
def lowering_tokenizer(checkpoint_dir) -> SentenceTokenizer:
    """do_lower_case=True: SentenceTokenizer lowercases the text before the tokenizer reads it."""
    return SentenceTokenizer.from_file(checkpoint_dir / "tokenizer.json", 256, lowercase=True)


def shapes_of(features: torch.Tensor) -> list[str | None]:
    """Each row's shape name, None where the shape part is all zeros ([CLS]/[SEP])."""
    names = []
    for row in features[:, : len(SHAPES)]:
        assert row.sum() in (0, 1)  # one-hot or nothing
        names.append(SHAPES[int(row.argmax())] if row.sum() else None)
    return names


def word_shapes(features: torch.Tensor) -> list[str]:
    """The shape of each word, read at its first piece."""
    return [shape for shape, first in zip(shapes_of(features), features[:, FIRST_PIECE]) if first]


def encode(tokenizer: SentenceTokenizer, text: str):
    encodings, _ = tokenizer.encode([text])
    return encodings[0]


@pytest.mark.parametrize(
    "word, shape",
    [
        ("NATO", "XX"),
        ("ÉCOLE", "XX"),  # an accented capital is a capital
        ("U.S.", "XX"),  # punctuation between letters is ignored
        ("AT&T", "XX"),
        ("I", "X"),
        ("É", "X"),
        ("J.", "X"),
        ("ẞ", "X"),  # capital sharp s
        ("ǅ", "X"),  # a titlecase digraph counts as a capital
        ("Angela", "Xx"),
        ("Élodie", "Xx"),
        ("E\u0301lodie", "Xx"),  # the decomposed spelling (E + combining acute): the mark is ignored
        ("İstanbul", "Xx"),
        ("New-York", "Xx"),  # each capital starts a part
        ("O'Neil", "Xx"),
        ("(Reuters)", "Xx"),
        ("met", "x"),
        ("ß", "x"),
        ("e.g.", "x"),
        ("McDonald", "mixed"),  # a capital inside a run of letters
        ("iPhone", "mixed"),
        ("eBay", "mixed"),
        ("A4", "Xd"),
        ("mp3", "Xd"),
        ("COVID-19", "Xd"),
        ("1996", "d"),
        ("3.14", "d"),
        ("1,000", "d"),
        ("٣٤", "d"),  # Arabic-Indic digits are digits
        (".", "punct"),
        ("--", "punct"),
        ("$", "punct"),
        ("😀", "punct"),  # emoji are symbols (So)
        ("👍🏽", "punct"),  # with a skin-tone modifier (Sk)
        ("❤️", "punct"),  # with a variation selector (Mn, ignored)
        ("東京", "other"),  # a script without case
        ("שלום", "other"),
        ("東京2020", "other"),
        ("", "other"),
        ("\u200b", "other"),  # only a format character
    ],
)
def test_word_shape(word: str, shape: str) -> None:
    assert word_shape(word) == shape
    assert SHAPES[shape_id(word)] == shape


def test_nfc_and_nfd_spellings_share_a_shape() -> None:
    for word in ["Élodie", "ÉCOLE", "Ångström", "Ōsaka", "señor", "Dvořák", "ΆΘΗΝΑ"]:
        assert word_shape(unicodedata.normalize("NFD", word)) == word_shape(unicodedata.normalize("NFC", word))


def test_feature_layout() -> None:
    assert NUM_FEATURES == len(FEATURE_NAMES) == len(SHAPES) + 3 == 12
    assert [FEATURE_NAMES[i] for i in (FIRST_PIECE, FIRST_WORD, SPECIAL)] == ["first_piece", "first_word", "special"]


def test_names_read_their_capitals_through_the_offsets(tokenizer: SentenceTokenizer) -> None:
    text = "Angela Merkel met Emmanuel Macron in Berlin"
    encoding = encode(tokenizer, text)
    assert encoding.tokens[2:4] == ["mer", "##kel"]  # the tokenizer has lowercased: the capitals come from `text`
    features = token_features(text, encoding)
    assert features.shape == (len(encoding.ids), NUM_FEATURES) and features.dtype == torch.float32
    words = text.split()
    by_word = {words[w]: shape for w, shape in zip(encoding.word_ids, shapes_of(features)) if w is not None}
    assert by_word == {
        "Angela": "Xx",
        "Merkel": "Xx",
        "met": "x",
        "Emmanuel": "Xx",
        "Macron": "Xx",
        "in": "x",
        "Berlin": "Xx",
    }
    first_word = features[:, FIRST_WORD].tolist()
    assert first_word == [float(w == 0) for w in encoding.word_ids]  # every piece of "Angela", nothing else


@pytest.mark.parametrize("word, shape", [("Schwarzenegger", "Xx"), ("Élodie", "Xx"), ("SCHWARZENEGGER", "XX")])
def test_every_piece_of_a_split_word_gets_the_whole_word_shape(
    tokenizer: SentenceTokenizer, word: str, shape: str
) -> None:
    text = f"Arnold {word} smiled"
    encoding = encode(tokenizer, text)
    features = token_features(text, encoding)
    pieces = [t for t, w in enumerate(encoding.word_ids) if w == 1]
    assert len(pieces) >= 3  # the tokenizer really does split it
    # Each piece alone would read "Schwarz" / "ene" / "gger" (Xx, x, x); the whole word is read instead.
    assert [shapes_of(features)[t] for t in pieces] == [shape] * len(pieces)
    assert [features[t, FIRST_PIECE].item() for t in pieces] == [1.0] + [0.0] * (len(pieces) - 1)


def test_word_features_give_each_raw_word_its_first_piece_and_shape(tokenizer: SentenceTokenizer) -> None:
    """What the NER head reads: one row per word of the raw text, split inside words and across scripts."""
    text = "Élodie saw U.S. 東京 😀 Schwarzenegger"
    encoding = encode(tokenizer, text)
    starts, features = word_features(text, encoding)
    spans = word_spans(encoding)
    words = [text[slice(*spans[encoding.word_ids[p]])] for p in starts]
    assert words[:5] == ["Élodie", "saw", "U", ".", "S"]  # the pre-tokenizer cuts "U.S." at its dots
    assert starts[0] == 1 and starts == sorted(starts)  # after [CLS], in text order
    assert len(starts) == len(set(encoding.word_ids) - {None}) == features.shape[0]
    assert features[:, FIRST_PIECE].tolist() == [1.0] * len(starts)
    by_word = shapes_of(features)
    assert by_word[:5] == ["Xx", "x", "X", "punct", "X"] and by_word[-1] == "Xx"
    assert "other" in by_word and "punct" in by_word[-3:]  # the CJK word and the emoji
    assert word_starts([None, 0, 0, 1, None, 2, 2]) == [1, 3, 5]


def test_special_tokens_are_flagged_and_have_no_shape(tokenizer: SentenceTokenizer) -> None:
    text = "Paris is in France"
    encoding = encode(tokenizer, text)
    features = token_features(text, encoding)
    special = [w is None for w in encoding.word_ids]
    assert special[0] and special[-1] and sum(special) == 2  # [CLS] ... [SEP]
    assert features[:, SPECIAL].tolist() == [float(s) for s in special]
    for t in (0, -1):
        assert features[t].sum() == 1  # only the special flag: no shape, not a first piece, not the first word
    # Without [CLS]/[SEP] (SentenceTokenizer.split, as heads.predict uses it) the rows are the same, minus the ends.
    assert torch.equal(token_features(text, tokenizer.split([text])[0]), features[1:-1])


def test_first_word_skips_leading_punctuation(tokenizer: SentenceTokenizer) -> None:
    text = '"Hello," Anna said.'
    encoding = encode(tokenizer, text)
    features = token_features(text, encoding)
    flagged = [encoding.tokens[t] for t in range(len(encoding.ids)) if features[t, FIRST_WORD]]
    assert flagged == ["hello"]


def test_a_capital_whose_lowercase_is_longer(
    tokenizer: SentenceTokenizer, lowering_tokenizer: SentenceTokenizer
) -> None:
    text = "İstanbul and İZMİR met Berlin"
    assert len(text.lower()) == len(text) + 3  # "İ".lower() is "i" + U+0307: one character becomes two
    expected = ["Xx", "x", "XX", "x", "Xx"]

    # The stock tokenizer lowercases inside its normalizer: offsets index `text` itself.
    encoding = encode(tokenizer, text)
    assert word_shapes(token_features(text, encoding)) == expected

    # do_lower_case=True: offsets index text.lower(), three characters longer by "Berlin".
    encoding = encode(lowering_tokenizer, text)
    assert word_shapes(token_features(text, encoding, lowercased=True)) == expected
    with pytest.raises(ValueError, match="pass lowercased=True"):
        token_features(text, encoding)  # reading the lowered offsets in `text` would run past its end


def test_lowercased_flag_changes_nothing_when_lowercase_keeps_the_length(lowering_tokenizer: SentenceTokenizer) -> None:
    text = "Élodie met ÉCOLE staff"
    encoding = encode(lowering_tokenizer, text)
    assert torch.equal(token_features(text, encoding, lowercased=True), token_features(text, encoding))


def test_scripts_without_case_and_emoji_through_the_tokenizer(tokenizer: SentenceTokenizer) -> None:
    text = "Tokyo 東京 😀 2024"
    encoding = encode(tokenizer, text)
    shapes = word_shapes(token_features(text, encoding))
    # 東 and 京 are words of their own (BERT splits CJK ideographs); the emoji is [UNK] but keeps its offsets.
    assert shapes == ["Xx", "other", "other", "punct", "d"]


def test_empty_text(tokenizer: SentenceTokenizer) -> None:
    features = token_features("", encode(tokenizer, ""))
    assert features[:, SPECIAL].tolist() == [1.0, 1.0] and features.sum() == 2
    assert token_features("", tokenizer.split([""])[0]).shape == (0, NUM_FEATURES)


def test_the_stock_encoder_tokenizer_keeps_offsets_into_the_original_text(encoder) -> None:
    # The fixtures above build the tokenizer as SentenceEncoder.from_pretrained does; check that assumption.
    assert encoder.tokenizer.lowercase is False  # all-MiniLM-L6-v2's do_lower_case: the normalizer lowercases
    text = "Angela Merkel met ÉCOLE staff"
    assert word_shapes(token_features(text, encode(encoder.tokenizer, text))) == ["Xx", "Xx", "x", "XX", "x"]


def test_text_offsets_point_into_the_original_text(lowering_tokenizer: SentenceTokenizer) -> None:
    """A do_lower_case tokenizer reads text.lower(), three characters longer here; entity offsets must not shift."""
    text = "İİİ met John Smith in Paris"
    encoding = encode(lowering_tokenizer, text)
    offsets = text_offsets(text, encoding, lowercased=True)
    pieces = {text[a:b] for a, b in offsets if b > a}
    assert {"John", "Smith", "Paris"} <= {p.capitalize() for p in pieces} and "John" in pieces
    assert offsets[0] == (0, 0)  # [CLS] stays empty
