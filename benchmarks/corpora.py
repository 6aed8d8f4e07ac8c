"""The real-text corpora every speed benchmark uses, built from ../shared/data.

- short: the 2,758 STS-B test sentences (both columns), mean about 14 tokens.
- long: passages of 128-256 tokens, each made by joining consecutive CoNLL-2003 sentences of one
  Reuters document (train, dev and test files, in order) until the passage reaches 128 tokens.
- mixed: short + long, shuffled with a fixed seed.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from tokenizers import Tokenizer

from minilm.base.stsb import read_stsb

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LONG_MIN_TOKENS, LONG_MAX_TOKENS = 128, 256  # with [CLS] and [SEP]


def require(path: Path) -> Path:
    if not path.is_file():
        raise SystemExit(
            f"error: {path} is missing; the benchmarks read the real data sets from ../shared/data beside the project"
        )
    return path


def read_stsb_test(data_dir: Path = DATA_DIR) -> tuple[list[float], list[str], list[str]]:
    """(gold scores, sentence1s, sentence2s) of STS-B test; columns 4-6 by index, quotes literal."""
    return read_stsb(require(data_dir / "stsbenchmark" / "sts-test.csv"))


def short_corpus(data_dir: Path = DATA_DIR) -> list[str]:
    _, first, second = read_stsb_test(data_dir)
    return first + second


DATELINE = re.compile(r"(^|\s)19\d\d-\d\d-\d\d$")  # "ROME 1996-12-06": the line under each Reuters headline


def conll_documents(data_dir: Path = DATA_DIR) -> list[list[str]]:
    """CoNLL-2003 as Reuters stories, each a list of sentences (words joined by spaces).

    This copy of the data has no -DOCSTART- lines, so a story is taken to start at the headline
    right above each dateline sentence (225 datelines in test, against 231 stories in the release).
    """
    sentences: list[str] = []
    for split in ("train", "dev", "test"):
        words: list[str] = []
        with open(require(data_dir / "conll2003" / f"{split}.txt"), encoding="utf-8") as f:
            for line in f:
                word = line.split(" ", 1)[0].strip()
                if word and word != "-DOCSTART-":
                    words.append(word)
                elif words:
                    sentences.append(" ".join(words))
                    words = []
        if words:
            sentences.append(" ".join(words))
    starts = [0] + [i - 1 for i, s in enumerate(sentences) if i > 1 and DATELINE.search(s)] + [len(sentences)]
    return [sentences[a:b] for a, b in zip(starts, starts[1:]) if b > a]


def long_corpus(tokenizer: Tokenizer, n: int = 1000, data_dir: Path = DATA_DIR) -> list[str]:
    """The first n passages of 128-256 tokens. A passage that overshoots 256 is dropped, not cut."""
    passages: list[str] = []
    for document in conll_documents(data_dir):
        passage: list[str] = []
        for sentence in document:
            passage.append(sentence)
            text = " ".join(passage)
            length = len(tokenizer.encode(text).ids)
            if length >= LONG_MIN_TOKENS:
                if length <= LONG_MAX_TOKENS:
                    passages.append(text)
                    if len(passages) == n:
                        return passages
                passage = []
    raise SystemExit(
        f"error: CoNLL-2003 gives only {len(passages)} passages of {LONG_MIN_TOKENS}-{LONG_MAX_TOKENS} tokens, "
        f"{n} asked for"
    )


def mixed_corpus(short: list[str], long: list[str], seed: int = 0) -> list[str]:
    texts = short + long
    random.Random(seed).shuffle(texts)
    return texts
