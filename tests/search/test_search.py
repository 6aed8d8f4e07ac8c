"""minilm.search over real shard folders: exact search against a brute-force NumPy top-k, rescoring
against brute force over what it rescores with, texts with their ids for every input format, and the
refusals, each one `error:` line with exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minilm.corpus import CorpusSettings, embed_corpus, load_shards
from minilm.corpus.quantize import dequantize
from minilm.search import Searcher
from minilm.search.__main__ import main as search_main
from minilm.search.vectors import unpacked_signs

from conftest import write_lines

QUERIES = ["A man is playing a guitar.", "The stock market fell today.", "A cat sleeps on the sofa."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, encoder, stsb_sentences) -> dict[str, tuple[Path, list[str]]]:
    """2,500 real STS-B sentences embedded into float32, int8 and binary folders (shards of 700)."""
    root = tmp_path_factory.mktemp("search")
    texts = stsb_sentences[:2500]
    corpus = write_lines(root / "corpus.txt", texts)
    made = {}
    for precision in ("float32", "int8", "binary"):
        out = root / precision
        embed_corpus(encoder, corpus, out, CorpusSettings(shard_rows=700, precision=precision), show_progress_bar=False)
        made[precision] = (out, texts)
    return made


def brute_force(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, 1), order


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
def test_exact_search_equals_brute_force_numpy(folders, encoder, monkeypatch):
    monkeypatch.setattr("minilm.search.searcher.CHUNK_ROWS", 300)  # chunks that cut across the 700-row shards
    out, texts = folders["float32"]
    searcher = Searcher(out, encoder=encoder)
    hits = searcher.search(QUERIES, k=10)
    ids, vectors = load_shards(out)
    scores, rows = brute_force(unit(encoder.encode(QUERIES)), unit(vectors), 10)
    for q, query_hits in enumerate(hits):
        assert [h.row for h in query_hits] == rows[q].tolist()
        assert [h.id for h in query_hits] == [ids[r] for r in rows[q]] == [str(r + 1) for r in rows[q]]
        assert [h.text for h in query_hits] == [texts[r] for r in rows[q]]
        assert np.abs(np.array([h.score for h in query_hits]) - scores[q]).max() <= 1e-5
        assert [h.rank for h in query_hits] == list(range(1, 11))
    assert hits[0][0].text == "A man is playing a guitar." and searcher.notes == []


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_rescoring_that_covers_the_corpus_equals_brute_force_over_the_rescoring_vectors(folders, encoder, precision):
    out, _ = folders[precision]
    queries = unit(encoder.encode(QUERIES))
    searcher = Searcher(out, encoder=encoder, rescore_multiplier=2500)  # k x 2500 >= every row: nothing missed
    hits = searcher.search(QUERIES, k=10)
    _, stored = load_shards(out, dequantize_vectors=False)
    if precision == "int8":
        rescoring = unit(dequantize(stored, "int8", searcher.source.ranges))
    else:
        rescoring = unpacked_signs(stored, 384) / np.sqrt(384)
    scores, rows = brute_force(queries, rescoring, 10)
    for q, query_hits in enumerate(hits):
        assert [h.row for h in query_hits] == rows[q].tolist()
        assert np.abs(np.array([h.score for h in query_hits]) - scores[q]).max() <= 1e-5
    # against exact float32: what the stored precision keeps of the ranking
    _, exact_rows = brute_force(queries, unit(load_shards(folders["float32"][0])[1]), 10)
    recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact_rows)])
    assert recall >= (0.9 if precision == "int8" else 0.6), recall


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = search_main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
def test_the_command_prints_jsonl_hits_and_a_table(folders, capsys):
    out, texts = folders["float32"]
    status, stdout, _ = run_cli(capsys, str(out), QUERIES[0], "-k", "3", "--format", "jsonl")
    records = [json.loads(line) for line in stdout.splitlines()]
    assert status == 0 and [r["rank"] for r in records] == [1, 2, 3]
    assert set(records[0]) == {"query", "rank", "score", "id", "text"} and records[0]["query"] == QUERIES[0]
    assert all(texts[int(r["id"]) - 1] == r["text"] for r in records)
    status, stdout, _ = run_cli(capsys, str(out), QUERIES[0], "-k", "2")
    assert status == 0 and stdout.splitlines()[0] == f"query: {QUERIES[0]}" and "A man is playing a guitar." in stdout


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_texts_and_ids_of_record_inputs(tmp_path, tiny_encoder, capsys, suffix):
    texts = ["The cat sat on the mat.", "Stocks fell sharply today.", "A guitar solo ended the show."]
    ids = ["cat", "stocks", "guitar"]
    path = tmp_path / f"docs{suffix}"
    frame = pd.DataFrame({"doc": ids, "body": texts})
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"doc": i, "body": t}) + "\n" for i, t in zip(ids, texts)))
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    settings = CorpusSettings(text_field="body", id_field="doc")
    embed_corpus(tiny_encoder, path, tmp_path / "out", settings, show_progress_bar=False)
    status, stdout, _ = run_cli(capsys, str(tmp_path / "out"), texts[1], "-k", "3", "--format", "jsonl")
    records = [json.loads(line) for line in stdout.splitlines()]
    assert status == 0 and records[0]["id"] == "stocks" and records[0]["text"] == texts[1]
    assert sorted((r["id"], r["text"]) for r in records) == sorted(zip(ids, texts))


def one_error(capsys, *args: str) -> str:
    status, stdout, stderr = run_cli(capsys, *args)
    lines = stderr.strip().splitlines()
    assert status == 2 and stdout == "" and len(lines) == 1 and lines[0].startswith("error: "), (status, stderr)
    return lines[0]


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
def test_refusals_are_one_line(tmp_path, folders, tiny_checkpoint, capsys):
    out, _ = folders["float32"]
    (tmp_path / "plain").mkdir()
    assert "is not a minilm shard folder" in one_error(capsys, str(tmp_path / "plain"), "query")
    with pytest.raises(SystemExit) as caught:
        search_main([str(out), "query", "-k", "0"])
    assert caught.value.code == 2 and "argument -k/--top-k" in capsys.readouterr().err
    assert "query 1 is empty" in one_error(capsys, str(out), "   ")
    assert "no query" in one_error(capsys, str(out))
    message = one_error(capsys, str(out), "query", "--model", str(tiny_checkpoint))
    assert "was embedded with another checkpoint (" in message and "search it with its own model" in message
    # a damaged shard is named, with or without the sha256 check
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "part-00002.npy").write_bytes((damaged / "part-00002.npy").read_bytes()[:-100])
    for extra in ((), ("--no-verify",)):
        assert "part-00002.npy is " in one_error(capsys, str(damaged), "query", *extra)


def test_a_changed_input_and_an_old_or_unfinished_folder(tmp_path, tiny_encoder, capsys):
    corpus = write_lines(tmp_path / "c.txt", ["one fine line", "a second line", "and a third"])
    embed_corpus(tiny_encoder, corpus, tmp_path / "out", CorpusSettings(shard_rows=2), show_progress_bar=False)
    manifest_path = tmp_path / "out" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    # a folder written before texts were kept: hits show ids, and one note says why
    data["shards"] = [{k: v for k, v in s.items() if not k.startswith("texts")} for s in data["shards"]]
    data["complete"] = False
    manifest_path.write_text(json.dumps(data))
    status, stdout, stderr = run_cli(capsys, str(tmp_path / "out"), "a second line", "--format", "jsonl")
    assert status == 0 and json.loads(stdout.splitlines()[0]) == {
        "query": "a second line",
        "rank": 1,
        "score": pytest.approx(1.0, abs=1e-5),
        "id": "2",
        "text": None,
    }
    assert "note: " in stderr and "unfinished: searching the 3 rows written so far" in stderr
    assert "written before texts were kept" in stderr
    corpus.write_text("one fine line\na second line, edited\nand a third\n")
    message = one_error(capsys, str(tmp_path / "out"), "query")
    assert f"{corpus} has changed since" in message and "--force" in message


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
def test_rerank_orders_the_hits_as_the_cross_encoder_ranks_their_texts(
    folders, encoder, checkpoint_dir, tmp_path, capsys
):
    """No reranker's weights are here, so a random-weight one in the ms-marco layout (tests/test_cross_encoder.py):
    the order must be CrossEncoder.rank's over the same hits, whatever its quality."""
    from minilm import CrossEncoder
    from tests.test_cross_encoder import LAYOUTS, write_cross_encoder

    model = write_cross_encoder(tmp_path / "ce", checkpoint_dir, LAYOUTS["ms-marco-MiniLM-L-2-v2"] | {"layers": 1})
    reranker = CrossEncoder.from_pretrained(str(model), verify=False)
    out, _ = folders["float32"]
    searcher = Searcher(out, encoder=encoder)
    hits = searcher.search(QUERIES[:2], k=8)
    reranked = searcher.rerank(QUERIES[:2], hits, reranker)
    for query, before, after in zip(QUERIES, hits, reranked):
        expected = reranker.rank(query, [h.text for h in before])
        assert [h.row for h in after] == [before[e["corpus_id"]].row for e in expected]
        assert [h.score for h in after] == [e["score"] for e in expected] and [h.rank for h in after] == list(
            range(1, 9)
        )
    status, stdout, _ = run_cli(capsys, str(out), QUERIES[0], "-k", "8", "--rerank", str(model), "--format", "jsonl")
    assert status == 0 and [json.loads(line)["id"] for line in stdout.splitlines()] == [h.id for h in reranked[0]]


@pytest.mark.slow  # real weights on 2,500 sentences in three folders (about 20 s), or subprocesses
def test_piped_texts_are_kept_in_the_folder_and_searched_with_their_texts(tmp_path, tiny_checkpoint, capsys):
    """--input - with a folder: stdin is kept as DIR/stdin-<hash>.txt, so the run resumes and hits show texts."""
    from conftest import run_module

    texts = ["The cat sat on the mat.", "Stocks fell sharply today.", "A guitar solo ended the show."]
    piped = "".join(t + "\n" for t in texts).encode()
    args = (
        "minilm.embed",
        "--model",
        str(tiny_checkpoint),
        "--no-verify",
        "--input",
        "-",
        "--output",
        f"{tmp_path}/out/",
    )
    first = run_module(*args, stdin=piped)
    assert first.returncode == 0, first.stderr.decode()
    [kept] = (tmp_path / "out").glob("stdin-*.txt")
    assert kept.read_bytes() == piped and not list((tmp_path / "out").glob(".stdin-*"))
    status, stdout, _ = run_cli(capsys, str(tmp_path / "out"), texts[1], "-k", "1", "--format", "jsonl")
    assert status == 0 and json.loads(stdout)["text"] == texts[1] and json.loads(stdout)["id"] == "2"
    assert run_module(*args, stdin=piped).returncode == 0  # the same texts again: the finished run, resumed
    other = run_module(*args, stdin=b"something else\n")
    assert other.returncode == 2 and "holds a run with a different input" in other.stderr.decode()
    assert run_module(*args, "--force", stdin=b"something else\n").returncode == 0
