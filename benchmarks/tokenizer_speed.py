"""How much slower is the plain-Python WordPiece tokenizer than the Rust `tokenizers` library?

    .venv/bin/python benchmarks/tokenizer_speed.py

Both tokenize the same real sentences (STS-B test, SST-2 train, TREC train), one thread each
(TOKENIZERS_PARALLELISM=false), best of 3:
- through `SentenceTokenizer.encode`, the path `SentenceEncoder.encode` takes (truncation and
  [CLS]/[SEP] are added in Python there, for both);
- bare, `Tokenizer.encode_batch` against `WordPieceTokenizer.encode`;
- bare, on the module docstrings of the standard library: long, multi-line text, which takes the
  Python tokenizer's general path (the sentences are printable ASCII, which has a shortcut).
It also times the encoder on the sentences, so the tokenizer's share of `encode` can be seen.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # compare one thread with one thread
sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import DATA_DIR, read_stsb_test, require

from minilm import SentenceEncoder

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "text")]  # conftest, and test_wordpiece's corpus of docstrings
from test_wordpiece import stdlib_module_docstrings  # noqa: E402 (found through the path set just above)


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
    encode_s = best_of(1, lambda: fast.encode(sample, show_progress_bar=False)) * len(texts) / len(sample)
    print(f"{len(texts)} sentences (STS-B test, SST-2 train, TREC train); {os.cpu_count()} cores")
    print(f"tokenizers (Rust), 1 thread : {len(texts) / fast_s:10.0f} texts/s   through SentenceTokenizer.encode")
    print(f"minilm.text.wordpiece (Python)   : {len(texts) / python_s:10.0f} texts/s   {python_s / fast_s:.1f}x slower")
    rust, plain = fast.tokenizer.tokenizer, python.tokenizer.tokenizer  # the bare tokenizers
    for name, corpus in (("sentences", texts), ("stdlib docstrings", stdlib_module_docstrings())):
        rust_s = best_of(3, lambda: rust.encode_batch(corpus))
        plain_s = best_of(3, lambda: [plain.encode(t) for t in corpus])
        chars = sum(map(len, corpus)) / 1e6
        print(
            f"bare, {name:<17}: Rust {chars / rust_s:6.2f} M chars/s, "
            f"Python {chars / plain_s:5.2f} M chars/s: {plain_s / rust_s:.1f}x slower"
        )
    added = (python_s - fast_s) / encode_s
    print(
        f"encode() with the Rust one  : {len(texts) / encode_s:10.0f} texts/s   "
        f"(the Python tokenizer would add {added:.0%} to its time)"
    )


if __name__ == "__main__":
    main()
