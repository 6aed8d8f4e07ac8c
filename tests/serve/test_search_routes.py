"""POST /search (minilm.serve --index DIR) against Searcher, and TEI's POST /rerank (--reranker) against
CrossEncoder, through a real server; both in the error shapes and limits of the other routes."""

from __future__ import annotations

import math

import pytest

from minilm import CrossEncoder
from minilm.corpus import CorpusSettings, embed_corpus
from minilm.search import Searcher
from tests.serve.test_server import Server
from tests.test_cross_encoder import LAYOUTS, write_cross_encoder

from conftest import write_lines

QUERIES = ["A man is playing a guitar.", "The stock market fell today."]
pytestmark = pytest.mark.slow  # a server of its own


@pytest.fixture(scope="module")
def served(tmp_path_factory, encoder, checkpoint_dir, stsb_sentences):
    root = tmp_path_factory.mktemp("served")
    corpus = write_lines(root / "corpus.txt", stsb_sentences[:1200])
    embed_corpus(encoder, corpus, root / "out", CorpusSettings(shard_rows=500), show_progress_bar=False)
    reranker = write_cross_encoder(root / "ce", checkpoint_dir, LAYOUTS["ms-marco-MiniLM-L-2-v2"] | {"layers": 1})
    server = Server(
        "--no-heads", "--index", str(root / "out"), "--reranker", str(reranker), "--max-request-inputs", "8"
    )
    yield server, root / "out", reranker
    assert server.stop() == 0


def test_search_answers_as_the_searcher_does(served, encoder):
    server, folder, _ = served
    searcher = Searcher(folder, encoder=encoder)
    for query in QUERIES:
        answer = server.post("/search", {"query": query, "k": 5})
        assert answer.status_code == 200, answer.text
        expected = searcher.search([query], k=5)[0]
        got = answer.json()
        assert [h["id"] for h in got] == [h.id for h in expected] and [h["text"] for h in got] == [
            h.text for h in expected
        ]
        assert max(abs(h["score"] - e.score) for h, e in zip(got, expected)) <= 1e-5
        assert [h["rank"] for h in got] == [1, 2, 3, 4, 5]
    assert server.post("/search", {"query": QUERIES[0]}).json()[0]["text"] == "A man is playing a guitar."  # k: 10


def test_rerank_answers_as_tei_does_with_the_cross_encoders_scores(served):
    server, _, model = served
    reranker = CrossEncoder.from_pretrained(str(model), verify=False)
    texts = ["A man plays a guitar.", "Stocks fell sharply.", "A cat sleeps.", "Someone is playing music."]
    logits = [float(x) for x in reranker.predict([(QUERIES[0], t) for t in texts], activation_fn=lambda x: x)]
    order = sorted(range(4), key=lambda i: -logits[i])
    raw = server.post("/rerank", {"query": QUERIES[0], "texts": texts, "raw_scores": True}).json()
    assert [r["index"] for r in raw] == order and all(abs(r["score"] - logits[r["index"]]) <= 1e-5 for r in raw)
    assert "text" not in raw[0]
    squashed = server.post("/rerank", {"query": QUERIES[0], "texts": texts, "return_text": True}).json()
    assert [r["index"] for r in squashed] == order and [r["text"] for r in squashed] == [texts[i] for i in order]
    assert all(abs(r["score"] - 1 / (1 + math.exp(-logits[r["index"]]))) <= 1e-5 for r in squashed)


@pytest.mark.parametrize(
    "path, body, status, needle",
    [
        ("/search", {"query": "a", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ("/search", {"query": "   "}, 422, "query is empty"),
        ("/search", {"k": 3}, 422, "query: is required"),
        ("/rerank", {"query": "a", "texts": []}, 422, "texts: is an empty list"),
        ("/rerank", {"query": "a", "texts": "one text"}, 422, "texts: must be a list of strings"),
        ("/rerank", {"query": "a", "texts": ["t"] * 9}, 413, "the request has 9 inputs; the limit is 8"),
        ("/rerank", {"query": "a", "texts": ["x" * 200_000]}, 413, "text 0 has 200,000 characters"),
    ],
)
def test_bad_requests_get_teis_error_shape(served, path, body, status, needle):
    server, _, _ = served
    answer = server.post(path, body)
    assert answer.status_code == status and set(answer.json()) == {"error", "error_type"}, answer.text
    assert needle in answer.json()["error"], answer.json()
