"""How much slower is the plain-Python WordPiece tokenizer than the Rust `tokenizers` library?

    .venv/bin/python benchmarks/tokenizer_speed.py

Both tokenize the same real sentences (STS-B test, SST-2 train, TREC train) through
`SentenceTokenizer.encode`, the path `SentenceEncoder.encode` takes, on one thread each
(TOKENIZERS_PARALLELISM=false), best of 3. It also times the encoder on the same texts, so the
tokenizer's share of a whole `encode` call can be seen. Prints texts/s and the ratios.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # compare one thread with one thread
sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import DATA_DIR, read_stsb_test, require  # noqa: E402

from minilm import SentenceEncoder  # noqa: E402


def sentences() -> list[str]:
    _, first, second = read_stsb_test(DATA_DIR)
    texts = first + second
    for relative in ("sst2/train.txt", "trec/train.txt"):
        with open(require(DATA_DIR / relative), encoding="utf-8") as f:
            texts += [line.rstrip("\n").split(" ", 1)[1] for line in f]
    return texts


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    texts = sentences()
    fast = SentenceEncoder.from_pretrained(tokenizer="fast")
    python = SentenceEncoder.from_pretrained(tokenizer="python")
    assert [e.ids for e in fast.tokenizer.encode(texts)[0]] == [e.ids for e in python.tokenizer.encode(texts)[0]]
    fast_s = best_of(3, lambda: fast.tokenizer.encode(texts))
    python_s = best_of(3, lambda: python.tokenizer.encode(texts))
    sample = texts[:2000]
    encode_s = best_of(1, lambda: fast.encode(sample)) * len(texts) / len(sample)
    print(f"{len(texts)} sentences (STS-B test, SST-2 train, TREC train); {os.cpu_count()} cores")
    print(f"tokenizers (Rust), 1 thread : {len(texts) / fast_s:10.0f} texts/s")
    print(f"minilm.wordpiece (Python)   : {len(texts) / python_s:10.0f} texts/s   {python_s / fast_s:.1f}x slower")
    added = (python_s - fast_s) / encode_s
    print(f"encode() with the Rust one  : {len(texts) / encode_s:10.0f} texts/s   (the Python tokenizer would add {added:.0%} to its time)")


if __name__ == "__main__":
    main()
