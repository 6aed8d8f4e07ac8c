"""minilm.text.wordpiece against the `tokenizers` library: ids, tokens, offsets and word ids, token for token.

Text comes from every sentence in ../shared/data, the module docstrings of Python's standard
library (collected here, at test time) and an edge set; every code point is checked once
through the normalizer and the pre-tokenizer. Then the encoder must give the same embeddings
with either tokenizer.
"""

from __future__ import annotations

import ast
import json
import sysconfig
import tokenize
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from minilm.text.wordpiece import WordPieceTokenizer

from conftest import read_stsb, require_data, run_module

EDGE_CASES = [
    "",
    " ",
    "   \t\n\r  ",
    "\u3000\u00a0\u2028",
    "a",
    "Crème brûlée, naïve café, Ångström, Dvořák, Łódź, ÉCOLE",  # accents (precomposed)
    "Cre\u0300me bru\u0302le\u0301e a\u0301\u0302\u0303 e\u0327\u0301",  # accents as combining marks, stacked
    "\u0301\u0302 starts with marks",
    "x\u20dd \u0488",  # enclosing marks (Me) are kept
    "北京欢迎你 and 東京 mixed with 한국어 and カタカナ and ｆｕｌｌｗｉｄｔｈ",  # CJK ideographs, Hangul, kana
    "𠀀𠀁 𪜀 𫝀 𫠠 丽",  # CJK extensions B-E and compatibility ideographs
    "emoji 😀👍🏽 👨‍👩‍👧 🏳️‍🌈 ❤️ 🇫🇷",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj \u00adsoft",
    "control\x00\x01\x07\x1b\x7f\x85\x9f chars\ufffd",
    "\x1c\x1d\x1e\x1f separators",
    "tab\tvertical\x0bform\x0cfeed",
    "İstanbul ΟΔΟΣ Straße ǅ ß ﬁ ﬀ ẞ Ω K",
    "Ⅻ ① ½ ² ℌ ™ ㎏",
    "a" * 100,
    "b" * 101,
    "supercalifragilistic" * 6,
    "un" + "\u0301" * 150,
    "$5 + 3 = <8> ^ `x` | ~y @ #tag {a} [b] (c) \\d/ 'e' \"f\" ;:?!.,-_*&%",
    "«quotes» „low“ ‹single› — – … · ¿qué? ¡sí! 、。「」",
    "[CLS] [SEP] [MASK] [PAD] [UNK] inside text",
    "x[MASK]y [mask] [[MASK]] [CLS[SEP]]",
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "C++ C# F# .NET node.js 3.14159 1,000,000",
    "o\u0308\u0323 \u1e0d\u0307 q\u0307\u0323",  # marks in non-canonical order
    "\U0001d400\U0001d401 \U0001f600\ufe0f \U000e0041 \U0010ffff \ue000\uf8ff",  # math letters, tags, private use
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย ქართული",
    "Ա Ბ ᏸ Ꭰ",  # case pairs of newer scripts
    "x" + "\u0300" * 5 + "y" * 98,
    "trailing space ",
    " leading space",
    "many     spaces",
    "new\nlines\r\nhere",
]
WORD_LISTS = [
    ["New", "York", "'s"],
    ["Hello", "[MASK]x", ""],
    ["", "a", " ", "b c"],
    ["Crème", "北京", "😀", "\u200b"],
    [],
    ["x" * 120],
]


@pytest.fixture(scope="module")
def fast(checkpoint_dir) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


@pytest.fixture(scope="module")
def python(checkpoint_dir) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_files(checkpoint_dir / "tokenizer.json", checkpoint_dir / "vocab.txt")


def assert_same_encodings(
    fast, python, texts, *, truncation=None, is_pretokenized=False, add_special_tokens=True
) -> int:
    """Both tokenizers on every text, with the same settings; returns how many tokens were compared."""
    for tokenizer in (fast, python):
        tokenizer.no_truncation() if truncation is None else tokenizer.enable_truncation(truncation)
    expected = fast.encode_batch(texts, is_pretokenized=is_pretokenized, add_special_tokens=add_special_tokens)
    compared = 0
    for text, want in zip(texts, expected):
        got = python.encode(text, is_pretokenized=is_pretokenized, add_special_tokens=add_special_tokens)
        assert (got.tokens, got.ids, got.offsets, got.word_ids, got.type_ids) == (
            want.tokens,
            want.ids,
            want.offsets,
            want.word_ids,
            want.type_ids,
        ), (
            f"{text!r} (truncation {truncation}): ours {list(zip(got.tokens, got.offsets))}, tokenizers {list(zip(want.tokens, want.offsets))}"
        )
        compared += len(want.ids)
    return compared


def label_and_text(relative: str) -> list[str]:
    """The sentences of an SST-2 or TREC file: each line is 'LABEL text'."""
    with open(require_data(relative), encoding="utf-8") as f:
        return [line.rstrip("\n").split(" ", 1)[1] for line in f]


def conll_sentences() -> list[list[str]]:
    sentences, words = [], []
    for split in ("train", "dev", "test"):
        with open(require_data(f"conll2003/{split}.txt"), encoding="utf-8") as f:
            for line in f:
                word = line.split(" ", 1)[0].strip()
                if word and word != "-DOCSTART-":
                    words.append(word)
                elif words:
                    sentences.append(words)
                    words = []
    return sentences + ([words] if words else [])


def stdlib_module_docstrings() -> list[str]:
    """The docstring of every module in this Python's standard library (test suites left out).
    The first token of each file is enough, so the files are tokenized, not parsed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docstrings = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] == "site-packages" or {"test", "tests"} & set(parts):
            continue
        with open(path, "rb") as f:
            try:
                first = next(
                    t
                    for t in tokenize.tokenize(f.readline)
                    if t.type not in (tokenize.ENCODING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)
                )
            except (tokenize.TokenError, SyntaxError, StopIteration):
                continue
        if first.type == tokenize.STRING and isinstance(docstring := ast.literal_eval(first.string), str) and docstring:
            docstrings.append(docstring)
    return docstrings


def test_wordpiece_by_hand():
    """Greedy longest-match-first on a five-piece vocabulary, worked out by hand."""
    vocab = {
        t: i
        for i, t in enumerate(
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "aff", "##a", ","]
        )
    }
    tokenizer = WordPieceTokenizer(vocab)
    # "unaffable": "un" is the longest prefix in the vocabulary, then "##aff", then "##able".
    assert tokenizer.wordpiece("unaffable") == [("un", 0, 2), ("##aff", 2, 5), ("##able", 5, 9)]
    # "unaffablex": nothing matches "x" or "##x", so the whole word is [UNK].
    assert tokenizer.wordpiece("unaffablex") == [("[UNK]", 0, 10)]
    encoding = tokenizer.encode("UNAFFABLE, Aff")  # lowercased; "," is its own word
    assert encoding.tokens == ["[CLS]", "un", "##aff", "##able", ",", "aff", "[SEP]"]
    assert encoding.offsets == [(0, 0), (0, 2), (2, 5), (5, 9), (9, 10), (11, 14), (0, 0)]
    assert encoding.word_ids == [None, 0, 0, 0, 1, 2, None]
    assert tokenizer.normalize("Crème\u200b北") == (
        "creme 北 ",
        [0, 1, 2, 3, 4, 6, 6, 6],
    )  # é -> e; U+200B dropped; spaces around 北


@pytest.mark.slow
def test_every_code_point_normalizes_and_splits_like_tokenizers(fast, python):
    """All 1,112,064 code points, each between spaces (so none changes its neighbour), through the
    normalizer, and between two letters through the pre-tokenizer. This checks UNICODE_DIFFERENCES."""
    points = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    for start in range(0, len(points), 4096):
        chunk = points[start : start + 4096]
        text = " ".join(chunk)
        if fast.normalizer.normalize_str(text) != python.normalize(text)[0]:
            wrong = [c for c in chunk if fast.normalizer.normalize_str(c) != python.normalize(c)[0]]
            pytest.fail(f"normalizer differs on {', '.join(f'U+{ord(c):04X}' for c in wrong[:20])}")
        text = " ".join(f"a{c}a" for c in chunk)
        theirs = [word for word, _ in fast.pre_tokenizer.pre_tokenize_str(text)]
        ours = [text[a:b] for a, b in python.pre_tokenize(text)]
        if theirs != ours:
            wrong = [
                c
                for c in chunk
                if [w for w, _ in fast.pre_tokenizer.pre_tokenize_str(f"a{c}a")]
                != [f"a{c}a"[a:b] for a, b in python.pre_tokenize(f"a{c}a")]
            ]
            pytest.fail(f"pre-tokenizer differs on {', '.join(f'U+{ord(c):04X}' for c in wrong[:20])}")


@pytest.mark.parametrize("truncation", [None, 8, 64])
def test_edge_cases(fast, python, truncation):
    assert_same_encodings(fast, python, EDGE_CASES, truncation=truncation)
    assert_same_encodings(fast, python, EDGE_CASES, truncation=truncation, add_special_tokens=False)
    assert_same_encodings(fast, python, WORD_LISTS, truncation=truncation, is_pretokenized=True)


@pytest.mark.slow
def test_every_sentence_of_the_shared_data(fast, python):
    """STS-B, SST-2 and TREC sentences, and CoNLL-2003 both as text and as its word lists;
    without truncation, and truncated to 16 tokens (most of them are longer)."""
    _, test1, test2 = read_stsb("test")
    _, dev1, dev2 = read_stsb("dev")
    texts = test1 + test2 + dev1 + dev2
    for relative in ("sst2/train.txt", "sst2/dev.txt", "sst2/test.txt", "trec/train.txt", "trec/test.txt"):
        texts += label_and_text(relative)
    words = conll_sentences()
    texts += [" ".join(w) for w in words]
    assert len(texts) > 40_000
    compared = 0
    for truncation in (None, 16):
        compared += assert_same_encodings(fast, python, texts, truncation=truncation)
        compared += assert_same_encodings(fast, python, words, truncation=truncation, is_pretokenized=True)
    assert compared > 1_000_000


@pytest.mark.slow
def test_stdlib_docstrings(fast, python):
    """Long, messy real text: code, tables, non-ASCII. Without truncation and at the model's 256."""
    docstrings = stdlib_module_docstrings()
    assert len(docstrings) > 300
    assert assert_same_encodings(fast, python, docstrings) > 50_000
    assert_same_encodings(fast, python, docstrings, truncation=256)


@pytest.mark.slow
def test_encoder_with_the_python_tokenizer_gives_the_same_embeddings(encoder, checkpoint_dir, stsb_sentences):
    from minilm import SentenceEncoder

    python_encoder = SentenceEncoder.from_pretrained(str(checkpoint_dir), tokenizer="python")
    texts = (
        stsb_sentences[:300] + EDGE_CASES[1:] + [" ".join(stdlib_module_docstrings()[:3])]
    )  # the last is over 256 tokens
    assert np.array_equal(python_encoder.encode(texts), encoder.encode(texts))
    with pytest.raises(ValueError, match="choose one of fast, python"):
        SentenceEncoder.from_pretrained(str(checkpoint_dir), tokenizer="slow")


@pytest.mark.slow
def test_cli_tokenizer_python(tmp_path, encoder):
    texts = ["Crème brûlée", "北京 [MASK] 😀"]
    out = tmp_path / "python.jsonl"
    result = run_module("minilm.embed", *texts, "--format", "jsonl", "--output", str(out), "--tokenizer", "python")
    assert result.returncode == 0, result.stderr
    vectors = np.array([json.loads(line)["embedding"] for line in out.read_text().splitlines()], dtype=np.float32)
    assert np.array_equal(vectors, encoder.encode(texts))  # %.9g round-trips float32 exactly
