"""minilm.search.topk: TopK against a full sort, however the scores are cut into chunks (ties included),
and semantic_search against sentence-transformers' on the same real vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minilm.search import TopK, semantic_search
from minilm.search.topk import SORT_WHOLE, top_k


def brute_force(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best by a full sort: score descending, then row ascending."""
    order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_topk_over_chunks_equals_a_full_sort_ties_included(chunk: int):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=(5, 300)).astype(np.float32)  # few values: many ties at the k-th place
    best = TopK(5, 10)
    for start in range(0, 300, chunk):
        best.add(scores[:, start : start + chunk], start)
    got_scores, got_rows = best.result()
    want_scores, want_rows = brute_force(scores, 10)
    assert np.array_equal(got_rows, want_rows) and np.array_equal(got_scores, want_scores)


def test_topk_takes_explicit_rows_and_returns_fewer_when_fewer_were_seen():
    best = TopK(2, 5)
    best.add(np.array([[0.5, 0.9, 0.1], [0.2, 0.2, 0.3]], dtype=np.float32), np.array([[40, 7, 3], [9, 8, 1]]))
    scores, rows = best.result()
    assert rows.tolist() == [[7, 40, 3], [1, 8, 9]] and scores.shape == (2, 3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        TopK(1, 0)


@pytest.mark.parametrize("shape", [(1, 40), (3, 50), (30, 200)])  # sorted whole, then through TopK
def test_top_k_of_candidates_is_the_full_sort_by_score_then_row(shape):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 8, size=shape).astype(np.float32)  # many ties
    rows = np.stack([rng.permutation(10_000)[: shape[1]] for _ in range(shape[0])])  # distinct rows, any order
    want = [np.lexsort((r, -s))[:10] for s, r in zip(scores, rows)]
    got_scores, got_rows = top_k(scores, rows, 10)
    assert got_rows.tolist() == [r[w].tolist() for r, w in zip(rows, want)]
    assert got_scores.tolist() == [s[w].tolist() for s, w in zip(scores, want)]
    assert (scores.size > SORT_WHOLE) == (shape == (30, 200))


def test_semantic_search_equals_sentence_transformers(encoder, stsb_sentences):
    from sentence_transformers import util

    corpus = encoder.encode(stsb_sentences[:1500], normalize=False)  # unnormalized: cos_sim normalizes
    queries = encoder.encode(stsb_sentences[1500:1540], normalize=False)
    ours = semantic_search(queries, corpus, query_chunk_size=16, corpus_chunk_size=400, top_k=7)
    theirs = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=7)
    assert [[h["corpus_id"] for h in q] for q in ours] == [[h["corpus_id"] for h in q] for q in theirs]
    assert max(abs(a["score"] - b["score"]) for q, r in zip(ours, theirs) for a, b in zip(q, r)) <= 1e-6
    one = semantic_search(torch.from_numpy(queries[0]), torch.from_numpy(corpus), top_k=3)  # a 1-d query, tensors
    assert [h["corpus_id"] for h in one[0]] == [h["corpus_id"] for h in theirs[0][:3]]
