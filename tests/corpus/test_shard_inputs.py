"""Every input format of the shard writer (.txt, .jsonl, .csv, .tsv, .parquet) gives the same vectors,
and bad records stop at their file:line or, with --skip-bad-lines, are skipped and counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minilm.base.textio import InputError
from minilm.cli import read_texts
from minilm.corpus import CorpusSettings, embed_corpus, load_shards, read_manifest
from minilm.corpus.manifest import Counted

from conftest import real_lines, run_module, write_lines

TRICKY = '"No, thanks," he said; tabs\tand commas, too'  # quotes, commas and a tab inside one text (csv quotes it)


def write_format(path: Path, ids: list[str], texts: list[str]) -> Path:
    """texts (and ids) as a file of path's format, written by the standard tool for that format."""
    if path.suffix == ".txt":
        return write_lines(path, texts)
    if path.suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in zip(ids, texts)),
            encoding="utf-8",
        )
    elif path.suffix == ".parquet":
        pq.write_table(pa.table({"id": ids, "text": texts}), path)
    elif path.suffix == ".tsv":  # no quoting: the '"' stays part of the text, as in STS-B's files
        path.write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in zip(ids, texts)), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows(zip(ids, texts))
    return path


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".tsv", ".parquet"])
def test_every_format_gives_the_same_vectors_and_ids(tmp_path: Path, encoder, suffix: str):
    texts = [*real_lines(40), TRICKY.replace("\t", " ") if suffix in (".txt", ".tsv") else TRICKY]
    ids = [f"doc-{i}" for i in range(len(texts))]
    path = write_format(tmp_path / f"corpus{suffix}", ids, texts)
    id_field = None if suffix == ".txt" else "id"
    embed_corpus(encoder, path, tmp_path / "out", CorpusSettings(shard_rows=16, id_field=id_field))
    got_ids, vectors = load_shards(tmp_path / "out")
    assert got_ids == ([str(n) for n in range(1, 42)] if suffix == ".txt" else ids)
    assert np.abs(vectors - encoder.encode(texts)).max() <= 1e-6
    assert read_texts(str(path)) == texts  # the one-shot CLI reads the same texts


def test_csv_ids_are_the_line_where_each_record_starts(tmp_path: Path, encoder):
    path = tmp_path / "corpus.csv"
    path.write_text('title,text\na,"First line\nsecond line of the same text"\nb,Another text\n', encoding="utf-8")
    embed_corpus(encoder, path, tmp_path / "out", CorpusSettings())
    ids, vectors = load_shards(tmp_path / "out")
    assert ids == ["2", "4"]
    assert np.abs(vectors - encoder.encode(["First line\nsecond line of the same text", "Another text"])).max() <= 1e-6


BAD_JSONL = b"".join(
    [
        b'{"text": "A fine first sentence."}\n',
        b'{"text": broken\n',  # 2: invalid JSON
        b'{"body": "no text field"}\n',  # 3: missing field
        b'{"text": "caf\xe9"}\n',  # 4: a Latin-1 byte, not UTF-8
        b"\n",  # 5: empty line
        b'{"text": "A fine last sentence."}\n',
    ]
)


@pytest.mark.slow
def test_bad_lines_stop_at_file_line_or_are_skipped_and_counted(tmp_path: Path, encoder):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(BAD_JSONL)
    stopped = run_module("minilm.embed", "--input", str(path), "--output", f"{tmp_path / 'stopped'}/")
    assert stopped.returncode == 2
    assert stopped.stderr.decode().splitlines() == [
        f"error: {path}:2: invalid JSON (Expecting value); each line must be an object like "
        '{"text": "..."}. To skip and count such lines instead, pass --skip-bad-lines'
    ]

    skipped = run_module(
        "minilm.embed", "--input", str(path), "--output", f"{tmp_path / 'skipped'}/", "--skip-bad-lines"
    )
    assert skipped.returncode == 0, skipped.stderr.decode()
    stderr = skipped.stderr.decode()
    assert (
        stderr.count("warning: skipped ") == 4
        and f"skipped 4 bad lines (listed in {tmp_path / 'skipped' / 'manifest.json'})" in stderr
    )
    assert read_manifest(tmp_path / "skipped").skipped == Counted(
        count=4,
        examples=[
            f'{path}:2: invalid JSON (Expecting value); each line must be an object like {{"text": "..."}}',
            f'{path}:3: no "text" field',
            f"{path}:4: not valid UTF-8 (byte 0xe9 at column 14); re-save the file as UTF-8",
            f"{path}:5: empty line",
        ],
    )
    ids, vectors = load_shards(tmp_path / "skipped")
    assert ids == ["1", "6"]  # the ids stay the line numbers of the good lines
    assert np.abs(vectors - encoder.encode(["A fine first sentence.", "A fine last sentence."])).max() <= 1e-6


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.txt", b"one\n\nthree\n", ":2: empty line"),
        ("blank.jsonl", b'{"text": "one"}\n\n{"text": "three"}\n', ":2: empty line"),
        ("latin1.txt", b"one\ncaf\xe9\n", ":2: not valid UTF-8 (byte 0xe9 at column 4)"),
        ("fields.csv", b"id,text\n1,one\n2,two,three\n", ":3: 3 fields where the header has 2"),
        ("null.jsonl", b'{"text": null}\n', ':1: "text" is null'),
        ("number.jsonl", b'{"text": 7}\n', ':1: "text" is int, expected a string'),
        ("array.jsonl", b'["text"]\n', ":1: a JSON list, not an object"),
    ],
)
def test_each_kind_of_bad_record_names_its_line(tmp_path: Path, encoder, name: str, content: bytes, expected: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match="pass --skip-bad-lines") as error:
        embed_corpus(encoder, path, tmp_path / "out", CorpusSettings())
    assert str(error.value).startswith(f"{path}{expected}")
    manifest = embed_corpus(encoder, path, tmp_path / "out", CorpusSettings(skip_bad_lines=True), force=True)
    assert manifest.skipped.count == 1 and manifest.complete


def test_a_missing_column_is_an_error_about_the_file(tmp_path: Path, encoder):
    path = write_format(tmp_path / "corpus.csv", ["1"], ["one"])
    with pytest.raises(
        InputError,
        match=r'corpus.csv:1: no "body" column \(the header has id, text\); name the column with --text-column',
    ):
        embed_corpus(encoder, path, tmp_path / "out", CorpusSettings(text_field="body", skip_bad_lines=True))
    path = write_format(tmp_path / "corpus.parquet", ["1"], ["one"])
    with pytest.raises(InputError, match=r'corpus.parquet: no "body" column \(it has id, text\)'):
        embed_corpus(encoder, path, tmp_path / "out2", CorpusSettings(text_field="body"))
