"""heads.data on the real files in ../shared/data, and on small broken files that must fail by line.

Real counts are the published sizes: TREC 5,452 / 500 (Li & Roth 2002), SST-2 6,920 / 872 / 1,821,
CoNLL-2003 English 14,041 / 3,250 / 3,453 sentences with 203,621 / 51,362 / 46,435 tokens and
train entities LOC 7,140, MISC 3,438, ORG 6,321, PER 6,600 (Tjong Kim Sang & De Meulder 2003, table 1).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from heads.data import (
    CONLL_TAGS,
    SST2_LABELS,
    TREC_LABELS,
    DataFormatError,
    SentenceExample,
    TokenExample,
    read_conll,
    read_sst2,
    read_trec,
)

from conftest import require_data

READERS = {"trec": read_trec, "sst2": read_sst2, "conll2003": read_conll}


@cache
def load(relative: str) -> tuple:
    """Each real file is parsed once per session; tuples so no test can change another's data."""
    return tuple(READERS[relative.split("/")[0]](require_data(relative)))


@pytest.mark.parametrize(
    "relative, count",
    [
        ("trec/train.txt", 5452),
        ("trec/test.txt", 500),
        ("sst2/train.txt", 6920),
        ("sst2/dev.txt", 872),
        ("sst2/test.txt", 1821),
        ("conll2003/train.txt", 14041),
        ("conll2003/dev.txt", 3250),
        ("conll2003/test.txt", 3453),
    ],
)
def test_real_files_have_the_published_number_of_examples(relative, count):
    assert len(load(relative)) == count


def test_trec_first_examples_and_coarse_label_counts():
    train, test = load("trec/train.txt"), load("trec/test.txt")
    assert train[0] == SentenceExample("How did serfdom develop in and then leave Russia ?", "DESC")
    assert train[1] == SentenceExample("What films featured the character Popeye Doyle ?", "ENTY")
    assert test[0] == SentenceExample("How far is it from Denver to Aspen ?", "NUM")
    assert Counter(e.label for e in train) == {
        "ABBR": 86,
        "DESC": 1162,
        "ENTY": 1250,
        "HUM": 1223,
        "LOC": 835,
        "NUM": 896,
    }
    assert Counter(e.label for e in test) == {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113}
    assert set(TREC_LABELS) == {e.label for e in train}


def test_trec_keeps_its_one_non_ascii_character_as_published():
    # Line 66 reads "sisterðcity": the Latin-1 to UTF-8 conversion kept byte 0xF0 as "ð". The reader does not clean it.
    odd = [e.text for e in load("trec/train.txt") if not e.text.isascii()]
    assert odd == ["Which city has the oldest relationship as a sister\u00f0city with Los Angeles ?"]


def test_sst2_first_examples_labels_and_utf8_text():
    train, test = load("sst2/train.txt"), load("sst2/test.txt")
    assert train[0].label == "positive" and train[0].text.startswith("a stirring , funny and finally transporting")
    assert train[1] == SentenceExample(
        "apparently reassembled from the cutting-room floor of any given daytime soap .", "negative"
    )
    assert test[1].label == "negative" and test[1].text.endswith("like rancid cr\u00e8me br\u00fbl\u00e9e .")
    assert Counter(e.label for e in train) == {"negative": 3310, "positive": 3610}
    assert Counter(e.label for e in load("sst2/dev.txt")) == {"negative": 428, "positive": 444}
    assert Counter(e.label for e in test) == {"negative": 912, "positive": 909}
    assert set(SST2_LABELS) == {e.label for e in train}


@pytest.mark.parametrize("split, tokens", [("train", 203621), ("dev", 51362), ("test", 46435)])
def test_conll_token_counts_and_shapes(split, tokens):
    sentences = load(f"conll2003/{split}.txt")
    assert sum(len(s.words) for s in sentences) == tokens
    assert all(len(s.words) == len(s.tags) > 0 for s in sentences)
    assert all(tag in CONLL_TAGS for s in sentences for tag in s.tags)


def test_conll_first_sentences_and_train_entity_counts():
    train = load("conll2003/train.txt")
    assert train[0] == TokenExample(
        ("EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."),
        ("B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"),
    )
    assert load("conll2003/dev.txt")[0].words[:3] == ("CRICKET", "-", "LEICESTERSHIRE")
    assert load("conll2003/test.txt")[0].tags[:3] == ("O", "O", "B-LOC")
    starts = Counter(tag[2:] for s in train for tag in s.tags if tag.startswith("B-"))
    assert starts == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}


# ---- small hand-made files: what is accepted, and what fails with its line number -------------------


def write(tmp_path: Path, content: bytes, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_conll_skips_docstart_blank_runs_and_needs_no_final_blank_line(tmp_path):
    path = write(
        tmp_path,
        b"-DOCSTART- -X- -X- O\n\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n"
        b"-DOCSTART- -X- -X- O\nBonn NNP B-NP B-LOC\n. . O O",  # no final newline at all
    )
    assert read_conll(path) == [
        TokenExample(("Peter", "Blackburn"), ("B-PER", "I-PER")),
        TokenExample(("Bonn", "."), ("B-LOC", "O")),
    ]


def test_conll_docstart_ends_an_open_sentence(tmp_path):
    path = write(tmp_path, b"a DT B-NP O\n-DOCSTART- -X- -X- O\nb DT B-NP O\n")
    assert [s.words for s in read_conll(path)] == [("a",), ("b",)]


def test_trec_and_sst2_tolerate_crlf_and_a_missing_final_newline(tmp_path):
    trec = write(tmp_path, b"HUM:ind Who was Galileo ?\r\nNUM:date When ?", "trec.txt")
    assert read_trec(trec) == [SentenceExample("Who was Galileo ?", "HUM"), SentenceExample("When ?", "NUM")]
    sst2 = write(tmp_path, b"1 good .\r\n0 bad .", "sst2.txt")
    assert read_sst2(sst2) == [SentenceExample("good .", "positive"), SentenceExample("bad .", "negative")]


@pytest.mark.parametrize(
    "reader, content, line, message",
    [
        (read_trec, b"DESC:def What is an atom ?\nxyz\n", 2, "expected 'COARSE:fine question'"),
        (read_trec, b"DESC:def What is an atom ?\nCOLOR:red What is red ?\n", 2, "expected 'COARSE:fine question'"),
        (read_trec, b"DESC:def What is an atom ?\nDESC: What ?\n", 2, "expected 'COARSE:fine question'"),
        (read_trec, b"DESC:def What is an atom ?\nDESC:def\n", 2, "expected 'COARSE:fine question'"),
        (read_trec, b"DESC:def What is an atom ?\n\nNUM:date When ?\n", 2, "got ''"),
        (read_trec, b"DESC:def What is an atom ?\nNUM:date When \xe9tait ?\n", 2, "not valid UTF-8"),
        (read_sst2, b"1 fine .\n0 bad .\n2 what ?\n", 3, "LABEL 0 or 1"),
        (read_sst2, b"1 fine .\n0\n", 2, "LABEL 0 or 1"),
        (read_sst2, b"1 fine .\n \n", 2, "LABEL 0 or 1"),
        (read_sst2, b"1 fine .\n\n", 2, "LABEL 0 or 1"),
        (read_sst2, b"positive fine .\n", 1, "LABEL 0 or 1"),
        (read_sst2, b"1 fine .\n1 cr\xe8me .\n", 2, "not valid UTF-8"),
        (read_conll, b"EU NNP B-NP B-ORG\nrejects VBZ B-VP\n", 2, "expected 4 space-separated columns"),
        (read_conll, b"EU NNP B-NP B-ORG\n\nrejects\tVBZ\tB-VP\tO\n", 3, "got 1"),
        (read_conll, b"EU NNP B-NP B-ORG\nrejects VBZ B-VP O extra\n", 2, "got 5"),
        (read_conll, b"EU NNP B-NP B-ORG\nrejects VBZ B-VP E-PER\n", 2, "NER tag 'E-PER'"),
        (read_conll, b"EU NNP B-NP B-ORG\nrejects VBZ B-VP B-GPE\n", 2, "NER tag 'B-GPE'"),
        (read_conll, b"EU NNP B-NP B-ORG\n\n\nM\xfcller NNP B-NP B-PER\n", 4, "not valid UTF-8"),
    ],
)
def test_malformed_lines_fail_naming_file_and_line(tmp_path, reader, content, line, message):
    path = write(tmp_path, content)
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:{line}: ")) as info:
        reader(path)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_missing_file_names_its_path(tmp_path):
    path = tmp_path / "absent" / "train.txt"
    for reader in READERS.values():
        with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
            reader(path)


def test_examples_are_immutable_and_hashable():
    example = load("trec/test.txt")[0]
    with pytest.raises(AttributeError):
        example.label = "HUM"
    assert len({example, SentenceExample(example.text, example.label)}) == 1
