"""minilm.corpus.textio's records by hand: a blank line is an `EmptyLine`, a BadRecord that the
one-shot CLI (`minilm.cli.read_texts`) skips in record files and the shard writer reports."""

from __future__ import annotations

from pathlib import Path

from minilm.cli import read_texts
from minilm.corpus.textio import BadRecord, EmptyLine, InputError, Record, read_records


def test_empty_line_is_a_bad_record_named_by_file_and_line():
    error = EmptyLine("corpus.jsonl", 4)
    assert isinstance(error, BadRecord) and isinstance(error, InputError)
    assert str(error) == "corpus.jsonl:4: empty line"
    assert (error.line, error.problem) == (4, "empty line")


def test_blank_jsonl_lines_are_empty_lines_that_read_texts_skips(tmp_path: Path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "First."}\n\n   \n{"text": "Fourth."}\n', encoding="utf-8")
    records = list(read_records(path))
    assert [type(r) for r in records] == [Record, EmptyLine, EmptyLine, Record]
    assert [str(r) for r in records[1:3]] == [f"{path}:2: empty line", f"{path}:3: empty line"]
    assert [(r.line, r.id, r.text) for r in (records[0], records[3])] == [(1, "1", "First."), (4, "4", "Fourth.")]
    assert read_texts(str(path)) == ["First.", "Fourth."]


def test_a_blank_line_of_a_txt_file_is_an_empty_text_for_read_texts_only(tmp_path: Path):
    """One text per line: the CLI keeps the empty text; the shard reader still calls it an empty line."""
    path = tmp_path / "texts.txt"
    path.write_text("one\n\nthree\n", encoding="utf-8")
    assert read_texts(str(path)) == ["one", "", "three"]
    assert [str(r) if isinstance(r, BadRecord) else r.text for r in read_records(path)] == [
        "one",
        f"{path}:2: empty line",
        "three",
    ]
