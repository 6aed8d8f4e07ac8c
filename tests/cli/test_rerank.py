"""python -m minilm.rerank on a reranker in the ms-marco layout built at test time (tests/test_cross_encoder.py
proves its scores equal sentence-transformers'): the printed order and scores are CrossEncoder.rank's."""

from __future__ import annotations

import json

import pytest

from minilm import CrossEncoder

from conftest import read_stsb, run_module, write_lines
from test_cross_encoder import LAYOUTS, write_cross_encoder


@pytest.fixture(scope="module")
def reranker(tmp_path_factory, checkpoint_dir):
    layout = LAYOUTS["ms-marco-MiniLM-L-6-v2"] | {"layers": 2}
    return write_cross_encoder(tmp_path_factory.mktemp("rerank") / "ms-marco", checkpoint_dir, layout)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    _, first, second = read_stsb("dev")
    texts = second[:40]
    path = tmp_path_factory.mktemp("docs") / "docs.txt"
    write_lines(path, texts)
    return path, texts, first[0]


@pytest.mark.slow
def test_rerank_prints_the_documents_best_first(reranker, documents):
    path, texts, query = documents
    expected = CrossEncoder.from_pretrained(str(reranker), verify=False).rank(query, texts)
    done = run_module("minilm.rerank", query, "--input", str(path), "--model", str(reranker), "--no-verify")
    assert done.returncode == 0, done.stderr.decode()
    header, *rows = done.stdout.decode().splitlines()
    assert header.split() == ["rank", "score", "line", "text"]
    assert len(rows) == len(texts)
    for rank, (row, hit) in enumerate(zip(rows, expected), start=1):
        number, score, line, text = row.split(maxsplit=3)
        assert (int(number), int(line), text) == (rank, hit["corpus_id"] + 1, " ".join(texts[hit["corpus_id"]].split()))
        assert abs(float(score) - hit["score"]) <= 5e-5  # printed to 4 decimals

    top = run_module(
        "minilm.rerank", query, "-i", str(path), "-m", str(reranker), "--no-verify", "-k", "3", "--format", "jsonl"
    )
    assert top.returncode == 0, top.stderr.decode()
    records = [json.loads(line) for line in top.stdout.decode().splitlines()]
    assert [(r["rank"], r["line"], r["score"], r["text"]) for r in records] == [
        (rank, hit["corpus_id"] + 1, hit["score"], texts[hit["corpus_id"]]) for rank, hit in enumerate(expected[:3], 1)
    ]


@pytest.mark.slow
def test_rerank_user_errors_are_one_line(reranker, documents, tmp_path):
    path, _, query = documents
    cases = [
        (("q", "--input", str(tmp_path / "none.txt"), "-m", str(reranker), "--no-verify"), "none.txt"),
        (("  ", "--input", str(path), "-m", str(reranker), "--no-verify"), "the query is empty"),
        ((query, "--input", str(path), "-m", str(reranker)), "matches no known checkpoint"),
        ((query, "--input", str(path), "-m", str(tmp_path / "missing")), "does not exist"),
        ((query,), "the following arguments are required: --input"),
    ]
    for args, message in cases:
        done = run_module("minilm.rerank", *args)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            args,
            lines,
        )
