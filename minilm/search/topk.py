"""Exact top-k over scores that come in chunks, so memory holds one chunk and k hits per query, never
the corpus; and `semantic_search`, sentence-transformers' function of that name, signature and result.

    best = TopK(n_queries=3, k=10)
    for first_row, chunk in chunks:              # (n, C) vectors, any number of rows
        best.add(queries @ chunk.T, first_row)   # (3, n) scores of rows first_row ...
    scores, rows = best.result()                 # (3, 10) each, best first

Ties go to the lower row, so a result does not depend on how the corpus was cut into chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

CHUNK_ROWS = 32_768  # rows scored at a time: 48 MiB of float32 at 384 dimensions (docs/search.md)
# top_k sorts up to this many scores in all whole (one query's 40: 0.01 ms against TopK's 0.1); more go
# through TopK (100 queries x 200 candidates: 0.3 ms against 1.3 ms sorted whole).
SORT_WHOLE = 4096


class TopK:
    """The k best (score, row) of each query over what has been added so far."""

    def __init__(self, n_queries: int, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.scores = np.empty((n_queries, 0), dtype=np.float32)
        self.rows = np.empty((n_queries, 0), dtype=np.int64)

    def add(self, scores: np.ndarray, rows: np.ndarray | int) -> None:
        """scores: (Q, n). rows: (Q, n) row numbers, or the first of n consecutive rows shared by every query."""
        if scores.shape[1] == 0:
            return
        if isinstance(rows, (int, np.integer)):
            rows = np.broadcast_to(np.arange(rows, rows + scores.shape[1], dtype=np.int64), scores.shape)
        keep = self._best(scores, rows)  # this chunk's k best first: the merge then sorts 2k, not n
        scores = np.concatenate([self.scores, np.take_along_axis(scores, keep, 1)], axis=1)
        rows = np.concatenate([self.rows, np.take_along_axis(rows, keep, 1)], axis=1)
        keep = self._best(scores, rows)
        self.scores, self.rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)

    def _best(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Each query's columns of its k best, best first, ties to the lower row.

        torch.topk finds k candidates per query in one call; they are the k best exactly unless more than k
        columns reach the k-th score (a tie across the cut), and only such a query is done again column by
        column. Sorting k candidates by (score descending, row ascending) is one vectorized lexsort.
        """
        n = scores.shape[1]
        if n > self.k:
            part = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), self.k, dim=1, sorted=False)
            columns = part.indices.numpy()
            kth = part.values.numpy().min(axis=1, keepdims=True)
            tied = np.flatnonzero((scores >= kth).sum(axis=1) > self.k)
        else:
            columns, tied = np.broadcast_to(np.arange(n), scores.shape), np.empty(0, dtype=np.int64)
        order = np.lexsort((np.take_along_axis(rows, columns, 1), -np.take_along_axis(scores, columns, 1)), axis=-1)
        picked = np.array(np.take_along_axis(columns, order, 1), dtype=np.int64)
        for q in tied:  # every column at or above the k-th score, then the same order
            candidates = np.flatnonzero(scores[q] >= kth[q, 0])
            picked[q] = candidates[np.lexsort((rows[q, candidates], -scores[q, candidates]))[: self.k]]
        return picked

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, min(k, rows added)), best first."""
        return self.scores, self.rows


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, n) scores of rows (Q, n), each query's rows distinct -> each query's k best, as TopK orders them."""
    if scores.size > SORT_WHOLE:
        best = TopK(len(scores), k)
        best.add(scores, rows)
        return best.result()
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def cos_sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Q, C) and (N, C) -> (Q, N) cosine similarities, as sentence_transformers.util.cos_sim."""
    return torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T


def semantic_search(
    query_embeddings,
    corpus_embeddings,
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500_000,
    top_k: int = 10,
    score_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cos_sim,
) -> list[list[dict[str, int | float]]]:
    """sentence_transformers.util.semantic_search: for each query, its top_k corpus rows as
    {"corpus_id": row, "score": score}, best first. Tensors and NumPy arrays are both taken; one query
    may be a 1-d vector."""
    queries, corpus = (
        x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x)) for x in (query_embeddings, corpus_embeddings)
    )
    if queries.dim() == 1:
        queries = queries[None]
    results: list[list[dict[str, int | float]]] = []
    for q0 in range(0, len(queries), query_chunk_size):
        chunk = queries[q0 : q0 + query_chunk_size]
        best = TopK(len(chunk), top_k)
        for c0 in range(0, len(corpus), corpus_chunk_size):
            with torch.no_grad():
                best.add(score_function(chunk, corpus[c0 : c0 + corpus_chunk_size]).float().cpu().numpy(), c0)
        results += [
            [{"corpus_id": int(r), "score": float(s)} for s, r in zip(scores, rows)]
            for scores, rows in zip(*best.result())
        ]
    return results
