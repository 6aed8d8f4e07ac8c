"""minilm.base.textio's records by hand: a blank line is an `EmptyLine`, a BadRecord that the
one-shot CLI (`minilm.cli.read_texts`) skips in record files and the shard writer reports."""

from __future__ import annotations

from pathlib import Path

from minilm.base.textio import BadRecord, EmptyLine, InputError, Record, read_records
from minilm.cli import read_texts


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


def test_a_lone_surrogate_escaped_in_json_is_a_bad_record_at_its_line(tmp_path):
    """'{"text": "ab\\ud800cd"}' decodes to a str no file can hold: the encoder refused it as "texts[1]" (a position in
    its batch, not the file's line), Ray with a codec error, and --skip-bad-lines could not skip it."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "ab\\ud800cd"}\n{"text": "ok", "id": "x\\udc00"}\n', encoding="utf-8")
    records = list(read_records(path))
    assert [str(r) if isinstance(r, BadRecord) else r.text for r in records] == [
        "fine",
        f'{path}:2: "text" holds a lone surrogate (\\ud800), not text',
        "ok",
    ]
    assert (
        str(list(read_records(path, id_field="id"))[2]) == f'{path}:3: "id" holds a lone surrogate (\\udc00), not text'
    )
