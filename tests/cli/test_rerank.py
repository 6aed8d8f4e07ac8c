"""python -m minilm.rerank on a reranker in the ms-marco layout built at test time (tests/test_cross_encoder.py
proves its scores equal sentence-transformers'): the printed order and scores are CrossEncoder.rank's."""

from __future__ import annotations

import json

import pytest

from minilm import CrossEncoder
from minilm.rerank import main

from conftest import read_stsb, write_lines
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


def rerank(capsys, *args: str) -> tuple[int, str, list[str]]:
    """main() in this process (what `python -m minilm.rerank` runs): status, stdout, stderr lines."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def test_rerank_prints_the_documents_best_first(reranker, documents, capsys):
    path, texts, query = documents
    expected = CrossEncoder.from_pretrained(str(reranker), verify=False).rank(query, texts)
    status, out, err = rerank(capsys, query, "--input", str(path), "--model", str(reranker), "--no-verify")
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["rank", "score", "line", "text"]
    assert len(rows) == len(texts)
    for rank, (row, hit) in enumerate(zip(rows, expected), start=1):
        number, score, line, text = row.split(maxsplit=3)
        assert (int(number), int(line), text) == (rank, hit["corpus_id"] + 1, " ".join(texts[hit["corpus_id"]].split()))
        assert abs(float(score) - hit["score"]) <= 5e-5  # printed to 4 decimals

    status, out, err = rerank(
        capsys, query, "-i", str(path), "-m", str(reranker), "--no-verify", "-k", "3", "--format", "jsonl"
    )
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["rank"], r["line"], r["score"], r["text"]) for r in records] == [
        (rank, hit["corpus_id"] + 1, hit["score"], texts[hit["corpus_id"]]) for rank, hit in enumerate(expected[:3], 1)
    ]


def test_rerank_user_errors_are_one_line(reranker, documents, tmp_path, capsys):
    path, _, query = documents
    cases = [
        (("q", "--input", str(tmp_path / "none.txt"), "-m", str(reranker), "--no-verify"), "none.txt"),
        (("  ", "--input", str(path), "-m", str(reranker), "--no-verify"), "the query is empty"),
        ((query, "--input", str(path), "-m", str(reranker)), "matches no known checkpoint"),
        ((query, "--input", str(path), "-m", str(tmp_path / "missing")), "does not exist"),
    ]
    for args, message in cases:
        status, _, lines = rerank(capsys, *args)
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    with pytest.raises(SystemExit) as usage:  # argparse exits by itself, with the same one line
        main([query])
    assert usage.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: the following arguments are required")


def test_rerank_names_each_record_by_its_line_in_the_file(reranker, documents, tmp_path, capsys):
    """Blank lines in a JSONL file are skipped, so the record index is not the line: the line is printed."""
    _, texts, query = documents
    path = tmp_path / "hits.jsonl"
    records = [json.dumps({"id": i, "body": text}) for i, text in enumerate(texts[:5])]
    path.write_text("\n".join(["", records[0], "", "", *records[1:]]) + "\n", encoding="utf-8")
    file_line = {text: number for number, text in ((2, texts[0]), *((5 + i, t) for i, t in enumerate(texts[1:5])))}
    status, out, err = rerank(
        capsys, query, "-i", str(path), "--text-field", "body", "-m", str(reranker), "--no-verify", "--format", "jsonl"
    )
    assert status == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["text"] for r in printed) == sorted(texts[:5])
    assert all(r["line"] == file_line[r["text"]] for r in printed), printed


def test_blank_documents_are_skipped_with_a_note_and_none_at_all_is_an_error(reranker, documents, tmp_path, capsys):
    _, texts, query = documents
    path = tmp_path / "gaps.txt"
    path.write_text(f"{texts[0]}\n\n  \n{texts[1]}\n", encoding="utf-8")
    status, out, err = rerank(capsys, query, "-i", str(path), "-m", str(reranker), "--no-verify", "--format", "jsonl")
    assert status == 0 and err == ["note: 2 blank documents skipped"], err
    assert sorted((r["line"], r["text"]) for r in map(json.loads, out.splitlines())) == [(1, texts[0]), (4, texts[1])]
    for name, content in (("empty.txt", ""), ("blanks.txt", "\n \n"), ("header.csv", "text\n"), ("gaps.jsonl", "\n\n")):
        (tmp_path / name).write_text(content, encoding="utf-8")
        status, out, err = rerank(capsys, query, "-i", str(tmp_path / name), "-m", str(reranker), "--no-verify")
        assert status == 2 and out == "" and len(err) == 1, err
        assert err[0].startswith(f"error: {tmp_path / name} holds "), err
