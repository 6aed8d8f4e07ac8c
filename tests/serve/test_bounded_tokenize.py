"""The server reads a very long text only as far as the model needs, and gets the same tokens as the
whole text would (bounded.tokenize_bounded against SentenceTokenizer.encode of the whole text), for
any text: words, no spaces at all, CJK, one giant word, words hidden among dropped characters."""

from __future__ import annotations

import random

import pytest

from minilm.serve.bounded import CHARS_PER_TOKEN, bounded_reader, tokenize_bounded
from minilm.text.tokenization import SentenceTokenizer

from conftest import read_stsb, require_data

SEED_PIECES = ["a", "b", " ", "!", "中", "\x00", "\u0301", "é", "[CLS]", "[SEP", "≠", "\u3000", "x" * 120, "\ufffd"]


def hostile_texts(bound: int, count: int) -> list[str]:
    """Long texts in the shapes that defeat a cut at spaces, and seeded mixtures of them."""
    texts = [
        "!" * (bound * 3),  # no space: every character a word
        "中" * (bound * 3),  # CJK: every character a word, no space
        "a" * (bound * 3),  # one giant word: a single [UNK]
        "\x00" * (bound * 2) + "abc def",  # nothing kept for 2 bounds, then words
        "\x00" * (bound * 2) + "a" * 150,  # a giant word behind dropped characters
        "x" * (bound + 5) + "!" + "y " * 300,  # a giant word, then many words
        "[CLS]" * bound,  # added tokens, kept whole: no cut inside one
        "a" * (bound - 3) + "[CLS]" + "b" * bound,  # an added token across the bound
        "\u0301" * (bound * 2) + "ok " * 300,  # combining marks stripped with the accents
        "≠" * (bound * 2),  # U+2260 normalizes to "=" and a mark: a punctuation word each
        "ab\x00" * bound,  # one word with dropped characters all through it
        " " * (bound * 2) + "tail words here",  # whitespace only, then words
        "a" * 20000 + "!" + "b" * 20000 + " c" * 400,  # two giant words, then words
        "[CLS]" + "a" * (bound * 3),  # an added token before a giant word: its end is where a cut may be
        "[SEP]" + "\u0301" * (bound * 3) + " ok" * 300,  # ... and before a run of dropped combining marks
        "[CLS][SEP]" + "ab" * bound + "[MASK]" + "c" * bound + " d" * 300,  # added tokens between giant words
    ]
    rng = random.Random(0)
    for _ in range(count):
        parts, total = [], 0
        while total < bound + 100:
            part = rng.choice(SEED_PIECES) * rng.choice([1, 1, 1, 5, 50, 400, 3000])
            parts.append(part)
            total += len(part)
        texts.append("".join(parts))
    return texts


def assert_same_as_whole(tokenizer: SentenceTokenizer, texts: list[str]) -> None:
    got, counts = tokenize_bounded(tokenizer, texts)
    whole, exact = tokenizer.encode(texts)
    limit = tokenizer.max_seq_length
    for i, (g, w, n, m) in enumerate(zip(got, whole, counts, exact)):
        assert (g.ids, g.tokens, g.offsets) == (w.ids, w.tokens, w.offsets), f"text {i}: {texts[i][:40]!r}"
        assert (n > limit) == (m > limit) and n <= m, f"text {i}: {n} against {m}"  # truncated exactly when it is


def test_hostile_long_texts_give_the_whole_texts_first_tokens(encoder):
    texts = hostile_texts(CHARS_PER_TOKEN * encoder.max_seq_length, count=30)
    assert_same_as_whole(encoder.tokenizer, texts)


@pytest.mark.parametrize(("kind", "lowercase"), [("python", False), ("fast", True)])
def test_the_python_tokenizer_and_a_lowercasing_checkpoint_too(checkpoint_dir, kind, lowercase):
    """The Python WordPiece (its own normalizer), and do_lower_case (Python's str.lower has a final-sigma
    rule that looks past "." to the next letter: the text is lowered whole before it is cut)."""
    tokenizer = SentenceTokenizer.from_file(checkpoint_dir / "tokenizer.json", 256, lowercase=lowercase, kind=kind)
    bound = CHARS_PER_TOKEN * 256
    greek = ["ΑΣ." * (bound // 3 + 200), "ΑΣ" + "." * bound + "Β"]
    assert_same_as_whole(tokenizer, [*hostile_texts(bound, count=4)[:8], *greek])


def test_long_texts_of_real_words_are_cut(encoder):
    _, first, second = read_stsb("test")
    news = open(require_data("conll2003/test.txt"), encoding="utf-8").read().split()
    bound = CHARS_PER_TOKEN * encoder.max_seq_length
    texts = [" ".join(first * 3), " ".join(news[:20000]), "a " * 40000, second[0]]
    assert all(len(t) > bound for t in texts[:3])
    assert_same_as_whole(encoder.tokenizer, texts)
    counts = tokenize_bounded(encoder.tokenizer, texts)[1]
    assert counts[0] < encoder.tokenizer.encode(texts[:1])[1][0]  # cut: counted only as far as it was read


class CountingTokenizer:
    """The Rust tokenizer, recording the length of every text handed to it."""

    def __init__(self, inner):
        self.inner, self.lengths = inner, []

    def encode(self, text, *args, **kwargs):
        self.lengths.append(len(text))
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):
        self.lengths.extend(len(t) for t in texts)
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "text",
    ["!" * 2**22, "中" * 2**22, "a" * 2**22, "ab\x00" * 2**20, "[CLS]" + "a" * 2**22, "[SEP]" + "\u0301" * 2**22],
    ids=[
        "no-spaces",
        "cjk",
        "giant-word",
        "dropped-characters",
        "added-token-then-giant-word",
        "added-token-then-marks",
    ],
)
def test_a_4_mib_text_is_read_only_as_far_as_the_model_needs(checkpoint_dir, text):
    """Before: a text with no space was tokenized whole ("!" * 4 MiB: 2.6 GB of tokens in the server), and
    so was one that began with an added token ("[CLS]" + 15 MB: 11.8 s and 1.1 GB). Now no call to the tokenizer gets more than one segment (4 characters per kept token), and all of
    them together at most two."""
    from minilm.text.tokenization import read_wordpiece

    spy = CountingTokenizer(read_wordpiece(checkpoint_dir / "tokenizer.json"))
    tokenizer = SentenceTokenizer(spy, 256)
    bounded_reader(tokenizer)  # the cut table is read off the tokenizer once: not this text's cost
    spy.lengths.clear()
    encodings, counts = tokenize_bounded(tokenizer, [text])
    read = list(spy.lengths)
    bound = CHARS_PER_TOKEN * 256
    assert max(read, default=0) <= bound and sum(read) <= 2 * bound, read[:5]
    whole = tokenizer.encode([text[: 3 * bound]])[0][0]  # the same first tokens as a long prefix
    assert encodings[0].ids == whole.ids and counts[0] <= 257


def test_the_cut_table_is_read_off_the_tokenizer(encoder):
    """Cut characters stand alone: whitespace, punctuation (ASCII symbols too), CJK ideographs, and what
    normalizes to them; a control character is dropped (\\x0b is whitespace to Unicode, not to BERT).
    For BERT's tables every character that splits a word is a cut, so no text takes the slow way."""
    table = bounded_reader(encoder.tokenizer).table
    for c in [" ", "\t", "\u3000", "!", "$", "~", "。", "中", "\U00020000", "≠", "\u1fef"]:
        assert table.cut.match(c), repr(c)
    for c in ["a", "é", "\u0301", "\x0b", "\x00", "\ufffd", "😀", "ㄱ", "가"]:
        assert not table.cut.match(c) and not table.split.match(c), repr(c)
    assert table.cut.pattern == table.split.pattern


@pytest.mark.parametrize("kind", ["fast", "python"])
def test_unk_offsets_are_the_tokenizers_where_nfd_reorders_combining_marks(checkpoint_dir, kind):
    """A giant word's [UNK] spans its first to its last normalized character, as the tokenizer places them.
    NFD sorts a run of combining marks by class, and the Rust tokenizer then hands out the run's offsets by
    position, not by character: "x" * 1100 + U+0307 U+1D165 ends at 1101, not after U+1D165 (1102), and
    97 x U+0301 before U+1D165 start at 0, not 97 (before: the reader gave the characters' own places).
    A control character between marks is removed before NFD, so the sorting runs across it."""
    tokenizer = SentenceTokenizer.from_file(checkpoint_dir / "tokenizer.json", 256, kind=kind)
    texts = [
        "x" * 1100 + "\u0307\U0001d165",
        "\u0301" * 97 + "\U0001d165" * 900 + "x" * 30,
        "\u0301" * 97 + "\U0001d165" + "\u0301" * 1000 + " tail",
        "x" * 1100 + "\u0f73\U0001d165y",  # Tibetan: a starter that decomposes into two marks
        "x" * 1100 + "\u0f75\U0001d165\u0301" + "y " * 300,
        "\U0001d165\u0f81" + "z" * 1200 + "\u0f73\u0301\U0001d165",
        "x" * 1100 + "\u0f73\u200d\u1b44",  # U+200D is removed before NFD: no barrier to the sorting
        "\x00" * 1100 + "\u0f75\U0001d165\x00\u1b44y" + " w" * 300,  # a short word among dropped characters
    ]
    assert_same_as_whole(tokenizer, texts)


def custom_tokenizer(checkpoint_dir, folder, added) -> SentenceTokenizer:
    """The checkpoint's tokenizer with `added` tokens (tokenizers.AddedToken), saved and read back."""
    from tokenizers import Tokenizer

    inner = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    inner.add_tokens(added)
    inner.save(str(folder / "tokenizer.json"))
    return SentenceTokenizer.from_file(folder / "tokenizer.json", 256)


def test_added_tokens_that_are_normalized_strip_spaces_or_match_whole_words_are_kept_whole(checkpoint_dir, tmp_path):
    """A custom checkpoint's added tokens as the tokenizer matches them: a normalized one on the normalized
    text ("<URL>" is "<url>"), lstrip/rstrip ones with the spaces they take in, single-word ones only
    between non-word characters, and plain ones that hold a space. Before: "<URL>" read across a cut gave
    "<", "ur", "##l", and " [LS]" (1023, 1028) came out as "[LS]" (1024, 1028)."""
    from tokenizers import AddedToken

    tokenizer = custom_tokenizer(
        checkpoint_dir,
        tmp_path,
        [
            AddedToken("<url>", normalized=True),
            AddedToken("[LS]", lstrip=True, normalized=False),
            AddedToken("[RS]", rstrip=True, normalized=False),
            AddedToken("hello", single_word=True, normalized=False),
            AddedToken("new york", normalized=False),
            AddedToken("aaaa", normalized=False),
        ],
    )
    texts = [
        " " * 1020 + "<URL>" + "b" * 2000,
        "a " * 510 + "<url>" + "b" * 2000,
        "x" * 1019 + "new york" + " b" * 2000,
        "a" * 1023 + " [LS]" + " b" * 600,
        "a " * 511 + " [LS]" + " b" * 600,
        "a" * 1020 + "[RS]" + " " * 3000 + "b " * 600,
        "x" * 1023 + "!hello" + " b" * 600,
        "x" * 1021 + " hello_" + " b" * 600,
        "[CLS]" + "a" * 3000 + " b" * 600,
        "b" + "a" * 3000 + " b" * 600,
        "<u\x00RL>" + "c" * 3000,
    ]
    assert_same_as_whole(tokenizer, texts)


def test_a_custom_plain_added_token_ends_a_segment_too(checkpoint_dir, tmp_path):
    """An added token matched on the raw text as it is (as BERT's own [CLS]) ends where a cut may be, even
    one with a space inside: "new york" + 4 MiB of one word is read one segment at a time."""
    from tokenizers import AddedToken

    tokenizer = custom_tokenizer(checkpoint_dir, tmp_path, [AddedToken("new york", normalized=False)])
    spy = CountingTokenizer(tokenizer.tokenizer)
    tokenizer = SentenceTokenizer(spy, 256)
    bounded_reader(tokenizer)
    spy.lengths.clear()
    text = "new york" + "a" * 2**22
    encodings, _ = tokenize_bounded(tokenizer, [text])
    assert max(spy.lengths) <= CHARS_PER_TOKEN * 256, spy.lengths[:5]
    assert encodings[0].tokens == ["[CLS]", "new york", "[UNK]", "[SEP]"]
    assert encodings[0].offsets[1:3] == [(0, 8), (8, len(text))]
