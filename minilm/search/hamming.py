"""The nearest rows by Hamming distance over packed sign bits: the first pass of binary search.

Two packed vectors of C sign bits differ in h bits (their Hamming distance). The ±1 vectors they stand
for have the dot product C - 2h, so 1 - 2h/C is their cosine, and ranking by it ranks by h. The same
integer dot products come out of either of two computations, and the cheaper one is used:

- **A few queries:** XOR each query's bits with every row's and count the set bits (NumPy's
  `bitwise_count`, a popcount instruction where the CPU has one). The rows are held as columns of
  words (`column_words`: word j of every row together), so each pass reads contiguous memory.
- **Many queries:** unpack the rows to ±1 int8 once and multiply them with the queries' signs in 8-bit
  integers (`torch._int_mm`, VNNI where the CPU has it). Unpacking costs C bytes a row, paid once for
  all the queries; the products are exact in int32.

Keeping the best: a dot product takes one of only 2C + 1 values, so a query's k-th best is nearly always
tied with rows beyond the k-th. Each dot and its row within the chunk go into one int32 key (the dot in
the high bits, the row reversed in the low ones), so one `torch.topk` over the keys keeps a chunk's k
best with ties to the lower row, as minilm.search.topk.TopK orders float scores, without a second pass
over the ties; the chunks' bests then merge as int64 keys of the dot and the row in the whole corpus.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

# Measured over 1,000,000 rows on 2 cores (docs/search.md): popcounts cost about 8 ms a query, the int8
# product about 4 ms a query after a fixed cost, so they cross near 32 queries.
POPCOUNT_QUERIES = 32  # up to this many queries, popcounts; above, the integer matrix product
BITS_CHUNK_ROWS = 65_536  # rows of bits scored at a time: 3 MiB of bits, and (Q, 65,536) int32 keys


def column_words(bits: np.ndarray) -> np.ndarray:
    """(n, B) packed bits, binary or ubinary -> (W, n) ubinary words: row i's word j at [j, i]. A word is 8
    bytes where B allows, else 1."""
    ubinary = bits.view(np.uint8) ^ np.uint8(0x80) if bits.dtype == np.int8 else bits  # binary = ubinary - 128
    ubinary = np.ascontiguousarray(ubinary)
    return np.ascontiguousarray(ubinary.view(np.uint64 if ubinary.shape[1] % 8 == 0 else np.uint8).T)


def nearest_by_bits(
    query_bits: np.ndarray, chunks: Iterable[tuple[int, np.ndarray]], dim: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities 1 - 2h/C as float32, rows), each (Q, min(k, rows)), nearest first, ties to the lower
    row. query_bits: (Q, B) packed; chunks: (first row, column_words of its rows), in any order."""
    queries = column_words(query_bits).T  # (Q, W)
    row_bits = 31 - (2 * dim).bit_length()  # a key (dot + C) << row_bits | reversed row stays below 2**31
    best = torch.empty((len(queries), 0), dtype=torch.int64)
    for start, words in chunks:
        for offset in range(0, words.shape[1], 1 << row_bits):
            part = words[:, offset : offset + (1 << row_bits)]
            dots, rows = _chunk_best(queries, part, dim, k, row_bits)
            rows = start + offset + rows.to(torch.int64)
            merged = torch.cat([best, dots.to(torch.int64) * (1 << 32) + ((1 << 32) - 1 - rows)], dim=1)
            best = torch.topk(merged, min(k, merged.shape[1]), dim=1).values  # distinct keys: no ties left
    dots, rows = torch.div(best, 1 << 32, rounding_mode="floor"), (1 << 32) - 1 - (best & 0xFFFFFFFF)
    return (dots.to(torch.float32) / dim).numpy(), rows.numpy()


def _chunk_best(
    queries: np.ndarray, words: np.ndarray, dim: int, k: int, row_bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dots, rows within the chunk) of each query's k best rows of this chunk, in no particular order."""
    n = words.shape[1]
    last = (dim << row_bits) + (1 << row_bits) - 1  # key = last + dot << row_bits - row: C + dot >= 0 on top
    keys = torch.add(last - torch.arange(n, dtype=torch.int32), sign_dots(queries, words, dim), alpha=1 << row_bits)
    keys = torch.topk(keys, min(k, n), dim=1, sorted=False).values
    return (keys >> row_bits) - dim, (1 << row_bits) - 1 - (keys & ((1 << row_bits) - 1))


def sign_dots(queries: np.ndarray, words: np.ndarray, dim: int) -> torch.Tensor:
    """(Q, W) query words and (W, n) row words (column_words) -> (Q, n) int32 dot products C - 2h."""
    if len(queries) > POPCOUNT_QUERIES:  # the ±1 signs multiplied out, in int8
        return torch._int_mm(_signs(queries, dim), _signs(words.T, dim).T)
    dots = np.empty((len(queries), words.shape[1]), dtype=np.int32)
    for out, query in zip(dots, queries):
        differing = np.zeros(words.shape[1], dtype=np.int32)
        for word, query_word in zip(words, query):
            differing += popcount(word ^ query_word)
        np.subtract(dim, 2 * differing, out=out)
    return torch.from_numpy(dots)


def popcounts_by_unpacking(words: np.ndarray) -> np.ndarray:
    """(n,) words -> (n,) set bits, for NumPy < 2, which has no bitwise_count."""
    return np.unpackbits(words.view(np.uint8)).reshape(len(words), -1).sum(axis=1, dtype=np.int32)


popcount = getattr(np, "bitwise_count", popcounts_by_unpacking)


def _signs(words: np.ndarray, dim: int) -> torch.Tensor:
    """(n, W) words of ubinary bits -> (n, C) int8 of +1 (bit set) and -1."""
    unpacked = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1)[:, :dim].view(np.int8)
    return torch.from_numpy(unpacked * np.int8(2) - np.int8(1))
