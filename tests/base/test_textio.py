"""minilm.base.textio by hand: records of each format, line endings and bad bytes, the read digest's spans,
float32 vectors as JSON, and atomic files. A blank line is an `EmptyLine`, a BadRecord that the one-shot
CLI (`minilm.cli.read_texts`) skips in record files and the shard writer reports. The hostile inputs
(run-on CSV quotes, huge records, remote files) are in tests/faults/test_inputs.py and tests/corpus."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from minilm.base.textio import (
    BadRecord,
    EmptyLine,
    InputError,
    ReadDigest,
    Record,
    atomic_output,
    count_records,
    json_vector,
    read_records,
)
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


def test_line_endings_a_byte_order_mark_and_a_bad_byte(tmp_path: Path):
    """CRLF and LF both end a line, a UTF-8 BOM is not text, and a non-UTF-8 line is a BadRecord at its line."""
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\nsecond\ncaf\xe9\nlast")
    records = list(read_records(path))
    assert [r.text for r in records if isinstance(r, Record)] == ["first", "second", "last"]
    assert str(records[2]) == f"{path}:3: not valid UTF-8 (byte 0xe9 at column 4); re-save the file as UTF-8"
    assert count_records(path) == 4  # the last line has no line break and still counts
    with pytest.raises(InputError, match=r"cr.txt:2: a carriage return \(\\r\) inside the line"):
        (tmp_path / "cr.txt").write_bytes(b"one\ntwo\rthree\n")
        list(read_records(tmp_path / "cr.txt"))


def test_the_digest_cuts_at_record_boundaries_and_hashes_what_was_read(tmp_path: Path):
    path = tmp_path / "c.txt"
    data = b"alpha\nbeta\ngamma\ndelta\n"
    path.write_bytes(data)
    digest = ReadDigest()
    records = read_records(path, digest=digest)
    first = [next(records), next(records)]
    span = digest.cut()
    rest = list(records)
    assert [r.text for r in first + rest] == ["alpha", "beta", "gamma", "delta"]
    assert span == {"start": 0, "end": 11, "sha256": hashlib.sha256(b"alpha\nbeta\n").hexdigest()}
    assert digest.cut() == {"start": 11, "end": 23, "sha256": hashlib.sha256(b"gamma\ndelta\n").hexdigest()}
    assert digest.whole.hexdigest() == hashlib.sha256(data).hexdigest()


def test_csv_and_tsv_records_by_hand(tmp_path: Path):
    """A quoted CSV field may hold commas and line breaks (the record keeps its first line's number); a TSV
    '"' is text; ids that are not strings read as JSON; the header row is not counted."""
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('id,text\n7,"one, with a comma"\n1.5,"two\nlines"\nx,\n', encoding="utf-8")
    records = list(read_records(csv_path, id_field="id"))
    assert records[:2] == [Record(2, "7", "one, with a comma"), Record(3, "1.5", "two\nlines")]
    assert records[2] == Record(5, "x", "")  # an empty field is an empty text; only a blank row is an EmptyLine
    assert count_records(csv_path) == 4  # lines minus the header: an estimate for the progress bar
    tsv_path = tmp_path / "t.tsv"
    tsv_path.write_text('text\tscore\nsaid "hi"\t1\n', encoding="utf-8")
    assert list(read_records(tsv_path)) == [Record(2, "2", 'said "hi"')]
    jsonl = tmp_path / "j.jsonl"
    jsonl.write_text('{"text": "a", "id": true}\n{"text": "b", "id": [1, 2]}\n{"text": 3}\n', encoding="utf-8")
    got = list(read_records(jsonl, id_field="id"))
    assert [(r.id, r.text) for r in got[:2]] == [("true", "a"), ("[1, 2]", "b")]
    assert str(got[2]) == f'{jsonl}:3: no "id" field'
    assert str(list(read_records(jsonl))[2]) == f'{jsonl}:3: "text" is int, expected a string'


def test_json_vector_round_trips_float32_exactly():
    values = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    text = json_vector(values.tolist())
    assert np.array_equal(np.array(json.loads(text), dtype=np.float32), values)
    assert json_vector(np.array([0.1, -2.0, 1e-10], dtype=np.float32).tolist()) == "[0.100000001,-2,1.00000001e-10]"


def test_atomic_output_replaces_at_the_end_and_leaves_nothing_on_error(tmp_path: Path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_output(path, binary=False) as f:
        f.write("new\n")
        assert path.read_text() == "old\n"  # not yet: the old content stays until the block ends
    assert path.read_text() == "new\n" and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    with pytest.raises(RuntimeError), atomic_output(path, binary=True) as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    target = tmp_path / "target.txt"
    target.write_text("t\n")
    (tmp_path / "link.txt").symlink_to(target)
    with atomic_output(tmp_path / "link.txt", binary=False) as f:
        f.write("through the link\n")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "through the link\n"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
