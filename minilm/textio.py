"""Reading texts and writing files safely, for every command line of the project.

`InputError` is the one exception the CLIs turn into an `error:` line and exit status 2. It lives
here, not in minilm.embed, so that modules imported by `python -m minilm.embed` (which runs as
`__main__`) raise the very class its `except` catches.

`read_records` streams the texts of a corpus file in any of the input formats:

    .txt       one text per line; the id is the line number
    .jsonl     one JSON object per line: a text field ("text") and an optional id field
    .csv       a header row naming the columns, then one record per row (quoted fields may span lines)
    .tsv       the same with tabs and no quoting (IANA text/tab-separated-values, as STS-B's files):
               a '"' is part of the text, and a text holds no tab or line break
    .parquet   a text column and an optional id column (needs pyarrow: `pip install 'minilm[parquet]'`)

A record that cannot be embedded (invalid JSON, a missing field, a byte that is not UTF-8, an
empty line) comes out as a `BadRecord` in its place, so the caller decides between stopping at
file:line and skipping it with a count. Problems with the whole file (no such column) raise.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

PARQUET_BATCH_ROWS = 4096  # rows decoded at a time from a Parquet file: memory stays flat


class InputError(Exception):
    """Bad command-line input; the message names the file, the line and the fix."""


class BadRecord(InputError):
    """One record of an input file that cannot be embedded; str() reads "file:line: what is wrong"."""

    def __init__(self, name: str, line: int, problem: str):
        super().__init__(f"{name}:{line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Record:
    line: int  # where the record starts in the file: 1-based line (row, for Parquet)
    id: str  # the id field's value, or the line (row) number
    text: str


def _lines(stream: BinaryIO, name: str, keep_ends: bool = False) -> Iterator[tuple[int, str | BadRecord]]:
    """(line number, text) for each line; a line that is not UTF-8 comes as a BadRecord instead of its text."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark is not part of the text
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield number, BadRecord(name, number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-save the file as UTF-8")
            continue
        yield number, line if keep_ends else line.rstrip("\r\n")


def _decoded_lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, without its line ending; a non-UTF-8 line is an InputError."""
    for number, line in _lines(stream, name):
        if isinstance(line, BadRecord):
            raise line
        yield number, line


def require_input_file(path: str | Path) -> None:
    """An InputError unless `path` is an existing file (the --input of every command line)."""
    if not Path(path).is_file():
        raise InputError(f"input file {path} does not exist" if not Path(path).exists() else f"input {path} is not a file")


def read_records(path: Path, text_field: str = "text", id_field: str | None = None) -> Iterator[Record | BadRecord]:
    """Each record of a corpus file in order, streamed (format by suffix; see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_records(path, text_field, id_field)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_records(path, "\t" if suffix == ".tsv" else ",", text_field, id_field)
    else:
        with open(path, "rb") as stream:
            for number, line in _lines(stream, str(path)):
                if isinstance(line, BadRecord) or not line.strip():
                    yield line if isinstance(line, BadRecord) else BadRecord(str(path), number, "empty line")
                elif suffix == ".jsonl":
                    yield _json_record(line, str(path), number, text_field, id_field)
                else:
                    yield Record(number, str(number), line)


def count_records(path: Path) -> int:
    """About how many records `read_records` will yield (the progress bar's total), without parsing them."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_file(path).metadata.num_rows
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # 1 MiB at a time
            count += block.count(b"\n")
            last = block[-1:]
    count += last != b"\n"
    return max(count - 1, 0) if suffix in (".csv", ".tsv") else count  # the header row holds no text


def _field_record(values: dict, name: str, line: int, text_field: str, id_field: str | None, kind: str) -> Record | BadRecord:
    """A Record from one parsed row (a JSON object, a CSV row, a Parquet row), or what is wrong with it."""
    for field in (text_field, id_field):
        if field is not None and values.get(field) is None:
            return BadRecord(name, line, f'no "{field}" {kind}' if field not in values else f'"{field}" is null')
    text = values[text_field]
    if not isinstance(text, str):
        return BadRecord(name, line, f'"{text_field}" is {type(text).__name__}, expected a string')
    return Record(line, str(values[id_field]) if id_field else str(line), text)


def _json_record(line: str, name: str, number: int, text_field: str, id_field: str | None) -> Record | BadRecord:
    try:
        values = json.loads(line)
    except json.JSONDecodeError as e:
        return BadRecord(name, number, f'invalid JSON ({e.msg}); each line must be an object like {{"{text_field}": "..."}}')
    if not isinstance(values, dict):
        return BadRecord(name, number, f'a JSON {type(values).__name__}, not an object like {{"{text_field}": "..."}}')
    return _field_record(values, name, number, text_field, id_field, "field")


def _csv_records(path: Path, delimiter: str, text_field: str, id_field: str | None) -> Iterator[Record | BadRecord]:
    name = str(path)
    with open(path, "rb") as stream:
        read: list[int] = []  # line numbers handed to the csv reader so far
        undecodable: list[BadRecord] = []

        def decoded() -> Iterator[str]:
            for number, line in _lines(stream, name, keep_ends=True):
                if isinstance(line, BadRecord):
                    undecodable.append(line)
                else:
                    read.append(number)
                    yield line

        rows = csv.reader(decoded(), delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        header = next(rows, None)
        if header is None:
            return
        for field in (text_field, id_field):
            if field is not None and field not in header:
                flag = "--text-column" if field == text_field else "--id-field"
                raise InputError(f"{name}:1: no \"{field}\" column (the header has {', '.join(header)}); name the column with {flag}")
        while True:
            start = len(read)
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                row = e
            yield from undecodable
            undecodable.clear()
            line = read[start] if start < len(read) else read[-1]  # the first line the row took
            if isinstance(row, csv.Error):
                yield BadRecord(name, line, f"unreadable CSV ({row})")
            elif not row:
                yield BadRecord(name, line, "empty line")
            elif len(row) != len(header):
                yield BadRecord(name, line, f"{len(row)} fields where the header has {len(header)}")
            else:
                yield _field_record(dict(zip(header, row)), name, line, text_field, id_field, "column")
        yield from undecodable


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading {path.name} needs pyarrow: pip install 'minilm[parquet]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file that is not Parquet
        raise InputError(f"{path} is not a readable Parquet file ({e})") from None


def _parquet_records(path: Path, text_field: str, id_field: str | None) -> Iterator[Record | BadRecord]:
    file = _parquet_file(path)
    columns = [c for c in (text_field, id_field) if c is not None]
    for column in columns:
        if column not in file.schema_arrow.names:
            flag = "--text-column" if column == text_field else "--id-field"
            raise InputError(f"{path}: no \"{column}\" column (it has {', '.join(file.schema_arrow.names)}); name the column with {flag}")
    row = 0
    for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        for values in batch.to_pylist():
            row += 1
            yield _field_record(values, str(path), row, text_field, id_field, "column")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: Path, binary: bool) -> Iterator[TextIO | BinaryIO]:
    """Write to a temporary file beside `path`, then rename it into place; on error nothing is left."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
