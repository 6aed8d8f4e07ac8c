"""minilm.search.hamming against brute force: the ±1 sign vectors multiplied out in float, every pair, then
sorted by (score descending, row ascending). Both ways of counting (popcounts for a few queries, the int8
matrix product for many) must give exactly those rows and scores, for binary and ubinary bits, a width
that is not a multiple of 8, chunks in any order, and rows tied with many others."""

from __future__ import annotations

import numpy as np
import pytest

from minilm.corpus.quantize import quantize
from minilm.search import hamming
from minilm.search.hamming import column_words, nearest_by_bits
from minilm.search.vectors import unpacked_signs


def brute_force(query_bits: np.ndarray, bits: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = unpacked_signs(query_bits, dim) @ unpacked_signs(bits, dim).T / np.float32(dim)
    order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores], dtype=np.int64)
    order = order.reshape(len(query_bits), min(k, len(bits)))
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("popcount_queries", [0, 8, 1000], ids=["int8-matmul", "default", "popcount"])
@pytest.mark.parametrize("precision", ["ubinary", "binary"])
@pytest.mark.parametrize("dim", [384, 20])
def test_the_nearest_rows_are_brute_forces(monkeypatch, popcount_queries: int, precision: str, dim: int):
    monkeypatch.setattr(hamming, "POPCOUNT_QUERIES", popcount_queries)
    rng = np.random.default_rng(dim)
    rows = rng.standard_normal((900, dim)).astype(np.float32)
    rows[600:] = rows[:300]  # 300 exact duplicates: ties that must go to the lower row
    bits = quantize(rows, precision)
    query_bits = quantize(rng.standard_normal((20, dim)).astype(np.float32), precision)
    chunks = [(start, column_words(bits[start : start + 128])) for start in range(0, 900, 128)][::-1]  # any order
    for queries in (0, 1, 3, 20):
        for k in (1, 10, 900, 1000):
            scores, found = nearest_by_bits(query_bits[:queries], chunks, dim, k)
            want_scores, want_rows = brute_force(query_bits[:queries], bits, dim, k)
            assert found.shape == (queries, min(k, 900))
            assert np.array_equal(found, want_rows)
            assert np.array_equal(scores, want_scores)


@pytest.mark.parametrize("popcount", [np.bitwise_count, hamming.popcounts_by_unpacking], ids=["numpy", "unpacking"])
def test_both_counts_give_the_same_dot_products(monkeypatch, popcount):
    monkeypatch.setattr(hamming, "popcount", popcount)
    rng = np.random.default_rng(0)
    bits = quantize(rng.standard_normal((500, 384)).astype(np.float32), "ubinary")
    words, queries = column_words(bits), column_words(bits[:40]).T
    by_matmul = hamming.sign_dots(queries, words, 384).numpy()  # 40 queries: the int8 matrix product
    by_popcount = np.concatenate([hamming.sign_dots(queries[i : i + 1], words, 384).numpy() for i in range(40)])
    assert np.array_equal(by_matmul, by_popcount)
    assert (np.diag(by_popcount) == 384).all()  # each row against itself: every sign agrees
