"""Readers for the head-training data sets in ../shared/data (formats in its README.md).

Reproduces the published files line for line, with no cleaning:
  * TREC question classification (Li & Roth 2002, "Learning Question Classifiers"): `COARSE:fine question`;
    we keep the 6 coarse classes.
  * SST-2, the binary sentence-level Stanford Sentiment Treebank (Socher et al. 2013): `LABEL sentence`.
  * CoNLL-2003 English NER (Tjong Kim Sang & De Meulder 2003): `word POS chunk NER`, one token a line,
    blank line between sentences, tags in IOB2.

Every reader decodes the file line by line from bytes (minilm.base.textio's reader), so that a bad byte, a bad label
or a malformed line fails with `path:line:` in the message instead of a bare UnicodeDecodeError or KeyError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from minilm.base.textio import BadRecord, decoded_lines

TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
SST2_LABELS = ("negative", "positive")  # index = the file's 0/1 label
CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

DOCSTART = "-DOCSTART-"  # document separator in the original CoNLL release; not a sentence


class DataFormatError(ValueError):
    """A data file does not match its documented format. The message starts with `path:line:`."""


@dataclass(frozen=True)
class SentenceExample:
    """One sentence with one label (TREC coarse class or SST-2 polarity name)."""

    text: str
    label: str


@dataclass(frozen=True)
class TokenExample:
    """One sentence as words with one IOB2 tag per word."""

    words: tuple[str, ...]
    tags: tuple[str, ...]


def _show(line: str, limit: int = 80) -> str:
    """The offending line for an error message, quoted and shortened so one bad line cannot flood a log."""
    return repr(line if len(line) <= limit else line[:limit] + "...")


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without its line ending) for each line of a UTF-8 file.

    minilm.base.textio's line reader: a byte-order mark and Windows line endings are dropped, and
    a line that is not UTF-8 fails naming its line. A missing final newline yields no extra empty line.
    """
    try:
        stream = open(path, "rb")  # noqa: SIM115  (opened first to name a missing file; the with below closes it)
    except FileNotFoundError:
        # FileNotFoundError, not DataFormatError: the file is absent, not malformed. Name where data lives.
        raise FileNotFoundError(
            f"{path}: data file not found (the data sets live in ../shared/data, see its README.md)"
        ) from None
    with stream:
        try:
            yield from decoded_lines(stream, str(path))
        except BadRecord as e:  # its message is already "path:line: not valid UTF-8 (...)"
            raise DataFormatError(str(e)) from None


def read_trec(path: str | os.PathLike[str]) -> list[SentenceExample]:
    """TREC lines `COARSE:fine question text` -> examples labelled with the coarse class (one of TREC_LABELS)."""
    examples = []
    for number, line in _lines(path):
        label_field, _, text = line.partition(" ")
        coarse, colon, fine = label_field.partition(":")
        if not (colon and coarse in TREC_LABELS and fine and text.strip()):
            raise DataFormatError(
                f"{path}:{number}: expected 'COARSE:fine question' with COARSE in {', '.join(TREC_LABELS)}, "
                f"got {_show(line)}"
            )
        examples.append(SentenceExample(text=text, label=coarse))
    return examples


def read_sst2(path: str | os.PathLike[str]) -> list[SentenceExample]:
    """SST-2 lines `LABEL sentence` (0 = negative, 1 = positive) -> examples labelled "negative"/"positive"."""
    examples = []
    for number, line in _lines(path):
        label_field, _, text = line.partition(" ")
        if label_field not in ("0", "1") or not text.strip():
            raise DataFormatError(f"{path}:{number}: expected 'LABEL sentence' with LABEL 0 or 1, got {_show(line)}")
        examples.append(SentenceExample(text=text, label=SST2_LABELS[int(label_field)]))
    return examples


def read_conll(path: str | os.PathLike[str]) -> list[TokenExample]:
    """CoNLL-2003 `word POS chunk NER` lines -> one TokenExample per sentence (only the words and NER tags).

    Blank lines end sentences; repeated blank lines and a missing final blank line are fine.
    `-DOCSTART-` lines are skipped and also end any open sentence, since they sit between documents.
    """
    examples = []
    words: list[str] = []
    tags: list[str] = []

    def close_sentence() -> None:
        if words:  # consecutive separators must not make empty sentences
            examples.append(TokenExample(tuple(words), tuple(tags)))
            words.clear()
            tags.clear()

    for number, line in _lines(path):
        if not line.strip():
            close_sentence()
            continue
        # Split on single spaces, as published: a tab or a doubled space is a format error, not a silent guess.
        columns = line.split(" ")
        if columns[0] == DOCSTART:
            close_sentence()
            continue
        if len(columns) != 4:
            raise DataFormatError(
                f"{path}:{number}: expected 4 space-separated columns 'word POS chunk NER', "
                f"got {len(columns)} in {_show(line)}"
            )
        word, tag = columns[0], columns[3]
        if not word:
            raise DataFormatError(f"{path}:{number}: empty word in {_show(line)}")
        if tag not in CONLL_TAGS:
            raise DataFormatError(f"{path}:{number}: NER tag {tag!r} is not one of {' '.join(CONLL_TAGS)}")
        words.append(word)
        tags.append(tag)
    close_sentence()
    return examples
