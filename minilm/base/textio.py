"""Reading texts and writing files safely, for every command line of the project.

`InputError` is the exception for bad input: minilm.cli turns it into one `error:` line and exit 2.

`read_records` streams the texts of a corpus file in any of the input formats:

    .txt       one text per line; the id is the line number
    .jsonl     one JSON object per line: a text field ("text") and an optional id field
    .csv       a header row naming the columns, then one record per row (quoted fields may span lines)
    .tsv       the same with tabs and no quoting (IANA text/tab-separated-values, as STS-B's files):
               a '"' is part of the text, and a text holds no tab or line break
    .parquet   a text column and an optional id column (needs pyarrow: `pip install 'minilm[parquet]'`)

A record that cannot be embedded (invalid JSON, a missing field, a byte that is not UTF-8, an
empty line) comes out as a `BadRecord` in its place, so the caller decides between stopping at
file:line and skipping it with a count. Problems that could swallow other records raise an
`InputError` instead, since skipping them would lose more than one record without a count:

    a carriage return inside a line     old Mac (CR-only) line endings would make the file one text
    a CSV record over several lines     a stray quote runs on into the next rows: the record is bad
      that is malformed, or whose         (unclosed quote, text after a closing quote, wrong field
      continuation lines read as rows     count), or two or more of its later lines are rows themselves
    a CSV record over MAX_RECORD_LINES  a quote that never closes
      lines or MAX_RECORD_BYTES bytes
    an unreadable file, a .json file    (a .json array is not one record per line: use .jsonl)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

PARQUET_BATCH_ROWS = 4096  # rows decoded at a time from a Parquet file: memory stays flat
INPUT_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")  # the formats above; any other suffix reads as .txt
RECORD_SUFFIXES = INPUT_SUFFIXES[1:]  # the formats with named fields (a text field, an id field)
MAX_RECORD_LINES = 1000  # a CSV record (quoted line breaks) over this many lines is a quote that never closes
MAX_RECORD_BYTES = 16 << 20  # and one over 16 MiB too (the csv module's own limit, 128 KiB, is raised to this)


class InputError(Exception):
    """Bad command-line input; the message names the file, the line and the fix."""


class ReadDigest:
    """sha256 of the bytes a reader has consumed: all of them, and those since the last `cut()`.

    The shard writer cuts at every window, so each shard records the byte range and hash of the
    input it was embedded from, and a rerun can tell which finished shards still match the file.
    """

    def __init__(self) -> None:
        self.whole, self.part = hashlib.sha256(), hashlib.sha256()
        self.offset, self.start = 0, 0

    def update(self, data: bytes) -> None:
        self.whole.update(data)
        self.part.update(data)
        self.offset += len(data)

    def cut(self) -> dict[str, int | str]:
        """{"start", "end", "sha256"} of the bytes read since the last cut; the next part starts here."""
        span = {"start": self.start, "end": self.offset, "sha256": self.part.hexdigest()}
        self.part, self.start = hashlib.sha256(), self.offset
        return span


class BadRecord(InputError):
    """One record of an input file that cannot be embedded; str() reads "file:line: what is wrong"."""

    def __init__(self, name: str, line: int, problem: str):
        super().__init__(f"{name}:{line}: {problem}")
        self.line = line
        self.problem = problem


class EmptyLine(BadRecord):
    """A blank line (or CSV row): no text to embed.

    Skipped by `minilm.cli.read_texts`, a bad record for the shard writer.
    """

    def __init__(self, name: str, line: int):
        super().__init__(name, line, "empty line")


@dataclass(frozen=True)
class Record:
    line: int  # where the record starts in the file: 1-based line (row, for Parquet)
    id: str  # the id field's value, or the line (row) number
    text: str


def _lines(
    stream: BinaryIO, name: str, keep_ends: bool = False, digest: ReadDigest | None = None
) -> Iterator[tuple[int, str | BadRecord]]:
    """(line number, text) for each line; a line that is not UTF-8 comes as a BadRecord instead of its text.

    Lines end at "\n" (or "\r\n"). A "\r" anywhere else raises: in a file with old Mac line endings
    it is the line break, and reading on would make the whole file one text. `digest` sees every byte read.
    """
    number = 0
    while True:
        try:
            raw = stream.readline()
        except OSError as e:
            raise InputError(f"cannot read {name}: {e.strerror or e}") from None
        if not raw:
            return
        if digest is not None:
            digest.update(raw)
        number += 1
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark is not part of the text
        body = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
        if b"\r" in body:
            raise InputError(
                f"{name}:{number}: a carriage return (\\r) inside the line: old Mac line endings, or a stray CR; "
                f"convert them to line breaks first, e.g. tr '\\r' '\\n' < {name} > fixed{Path(name).suffix}"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield (
                number,
                BadRecord(
                    name,
                    number,
                    f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-save the file as UTF-8",
                ),
            )
            continue
        yield number, line if keep_ends else line.rstrip("\r\n")


def decoded_lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, without its line ending; a non-UTF-8 line is an InputError."""
    for number, line in _lines(stream, name):
        if isinstance(line, BadRecord):
            raise line
        yield number, line


def open_input(path: Path) -> BinaryIO:
    """`path` opened for reading in binary; an InputError (not a traceback) when it cannot be."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None


def require_input_file(path: str | Path) -> None:
    """An InputError unless `path` is an existing file in a format we read (the --input of every command line)."""
    if not Path(path).is_file():
        raise InputError(
            f"input file {path} does not exist" if not Path(path).exists() else f"input {path} is not a file"
        )
    if Path(path).suffix.lower() == ".json":
        raise InputError(
            f"{path} is a .json file, which is read neither as lines nor as records; "
            "write one JSON object per line as .jsonl instead "
            f"(e.g. jq -c '.[]' {path} > {Path(path).with_suffix('.jsonl')})"
        )


def read_records(
    path: Path | str,
    text_field: str = "text",
    id_field: str | None = None,
    digest: ReadDigest | None = None,
    opener: Callable[[], BinaryIO] | None = None,
) -> Iterator[Record | BadRecord]:
    """Each record of a corpus file in order, streamed (format by suffix; see the module docstring).

    digest: fed every byte read, for the line formats (Parquet is read by pyarrow: it gets none).
    opener: opens the file as a binary stream (a seekable one for Parquet), for a file that is not a
    local path, such as an s3:// object (minilm.corpus.ray); `path` then only names it in errors and
    picks the format. None opens the local file `path`.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_records(path, text_field, id_field, opener)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_records(path, "\t" if suffix == ".tsv" else ",", text_field, id_field, digest, opener)
    else:
        with opener() if opener else open_input(path) as stream:
            for number, line in _lines(stream, str(path), digest=digest):
                if isinstance(line, BadRecord) or not line.strip():
                    yield line if isinstance(line, BadRecord) else EmptyLine(str(path), number)
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
    with open_input(path) as f:
        try:
            while block := f.read(1 << 20):  # 1 MiB at a time
                count += block.count(b"\n")
                last = block[-1:]
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    count += last != b"\n"
    return max(count - 1, 0) if suffix in (".csv", ".tsv") else count  # the header row holds no text


def _field_record(
    values: dict, name: str, line: int, text_field: str, id_field: str | None, kind: str
) -> Record | BadRecord:
    """A Record from one parsed row (a JSON object, a CSV row, a Parquet row), or what is wrong with it."""
    for field in (text_field, id_field):
        if field is not None and values.get(field) is None:
            return BadRecord(name, line, f'no "{field}" {kind}' if field not in values else f'"{field}" is null')
    text = values[text_field]
    if not isinstance(text, str):
        return BadRecord(name, line, f'"{text_field}" is {type(text).__name__}, expected a string')
    record_id = _id_text(values[id_field]) if id_field else str(line)
    for field, value in ((text_field, text), (id_field, record_id)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # a JSON escape such as "\ud800": a lone surrogate, which no file can hold
            return BadRecord(name, line, f'"{field}" holds a lone surrogate (\\u{ord(value[e.start]):04x}), not text')
    return Record(line, record_id, text)


def _id_text(value: object) -> str:
    """An id as text: strings as they are, anything else as JSON (true, 1.5, [1, 2]), not Python's str()."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_record(line: str, name: str, number: int, text_field: str, id_field: str | None) -> Record | BadRecord:
    try:
        values = json.loads(line)
    except json.JSONDecodeError as e:
        return BadRecord(
            name, number, f'invalid JSON ({e.msg}); each line must be an object like {{"{text_field}": "..."}}'
        )
    if not isinstance(values, dict):
        return BadRecord(name, number, f'a JSON {type(values).__name__}, not an object like {{"{text_field}": "..."}}')
    return _field_record(values, name, number, text_field, id_field, "field")


def _csv_records(
    path: Path | str,
    delimiter: str,
    text_field: str,
    id_field: str | None,
    digest: ReadDigest | None,
    opener: Callable[[], BinaryIO] | None = None,
) -> Iterator[Record | BadRecord]:
    name = str(path)
    csv.field_size_limit(MAX_RECORD_BYTES)
    with opener() if opener else open_input(path) as stream:
        record_lines: list[tuple[int, str]] = []  # (number, text) of the lines the current record took so far
        record_size = [0]  # their characters
        undecodable: list[BadRecord] = []

        def decoded() -> Iterator[str]:
            for number, line in _lines(stream, name, keep_ends=True, digest=digest):
                if isinstance(line, BadRecord):
                    undecodable.append(line)
                    continue
                record_lines.append((number, line))
                record_size[0] += len(line)
                if len(record_lines) > MAX_RECORD_LINES or record_size[0] > MAX_RECORD_BYTES:
                    raise InputError(
                        _run_on(name, record_lines, f"a quoted field is still open after {len(record_lines)} lines")
                    )
                yield line

        rows = csv.reader(
            decoded(),
            delimiter=delimiter,
            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
            strict=delimiter != "\t",
        )
        header = next(rows, None)
        if header is None:
            return
        for field in (text_field, id_field):
            if field is not None and field not in header:
                flag = "--text-column" if field == text_field else "--id-field"
                raise InputError(
                    f'{name}:1: no "{field}" column (the header has {", ".join(header)}); name the column with {flag}'
                )
            if field is not None and header.count(field) > 1:
                raise InputError(
                    f'{name}:1: the header names "{field}" {header.count(field)} times; '
                    "rename the columns so that one holds the text"
                )
        while True:
            record_lines.clear()
            record_size[0] = 0
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                row = e
            yield from undecodable
            undecodable.clear()
            if not record_lines:  # only undecodable lines were left
                break
            line = record_lines[0][0]  # the first line the record took
            problem = _csv_problem(row, header, delimiter)
            if problem and len(record_lines) > 1:
                raise InputError(_run_on(name, record_lines, problem))
            if problem:
                yield BadRecord(name, line, problem)
            elif not row:
                yield EmptyLine(name, line)
            elif len(record_lines) > 1 and len(rows_inside := _rows_inside(record_lines[1:], header, delimiter)) >= 2:
                raise InputError(
                    _run_on(
                        name,
                        record_lines,
                        f"lines {rows_inside[0]} and {rows_inside[1]} inside it read as rows of their own",
                    )
                )
            else:
                yield _field_record(dict(zip(header, row)), name, line, text_field, id_field, "column")
        yield from undecodable


def _csv_problem(row: list[str] | csv.Error, header: list[str], delimiter: str) -> str | None:
    """What is wrong with one parsed CSV row, or None (an empty row is for the caller to judge)."""
    if isinstance(row, csv.Error):
        return f"unreadable CSV ({row})"
    if row and len(row) != len(header):
        return f"{len(row)} fields where the header has {len(header)}"
    return None


def _rows_inside(lines: list[tuple[int, str]], header: list[str], delimiter: str) -> list[int]:
    """Numbers of the lines (a multi-line record's continuation lines) that would parse as a full row by themselves.

    With one column every non-blank line is a row, so there a field that holds two or more more lines is refused.
    """
    found = []
    for number, text in lines:
        fields = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter), [])
        if len(fields) == len(header) and any(f.strip() for f in fields):
            found.append(number)
    return found


def _run_on(name: str, lines: list[tuple[int, str]], problem: str) -> str:
    """The error for a CSV record that runs over several lines: it may hold other records, so it is never skipped."""
    first, last = lines[0][0], lines[-1][0]
    return (
        f"{name}:{first}-{last}: a CSV record runs on over {last - first + 1} lines and {problem}: a stray quote? "
        f'Quote a field that holds a quote and double the quote inside it ("say ""hi"""); this is not skipped, '
        "since it may hold other records"
    )


def _parquet_file(path: Path | str, opener: Callable[[], BinaryIO] | None = None):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading {Path(path).name} needs pyarrow: pip install 'minilm[parquet]'") from None
    source = opener() if opener else path  # outside the try: the opener's own InputError says what went wrong
    try:
        return pq.ParquetFile(source)
    except Exception as e:  # pyarrow raises its own error types for a file that is not Parquet
        raise InputError(f"{path} is not a readable Parquet file ({e})") from None


def _parquet_records(
    path: Path | str, text_field: str, id_field: str | None, opener: Callable[[], BinaryIO] | None = None
) -> Iterator[Record | BadRecord]:
    file = _parquet_file(path, opener)
    columns = [c for c in (text_field, id_field) if c is not None]
    for column in columns:
        if column not in file.schema_arrow.names:
            flag = "--text-column" if column == text_field else "--id-field"
            raise InputError(
                f'{path}: no "{column}" column (it has {", ".join(file.schema_arrow.names)}); '
                f"name the column with {flag}"
            )
    row = 0
    batches = file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # pyarrow's own errors (a corrupt page, a bad compression block)
            raise InputError(
                f"{path}: rows after {row} cannot be read ({e}); the file is damaged, write it again"
            ) from None
        if batch is None:
            return
        for values in batch.to_pylist():
            row += 1
            yield _field_record(values, str(path), row, text_field, id_field, "column")


def json_vector(values: Sequence[float]) -> str:
    """A float32 vector as a JSON array, each value to 9 significant digits.

    %.9g round-trips float32 exactly and keeps the file about half the size of repr(float), and it is
    one format call per value where json.dumps of pre-rounded floats took three.
    """
    return "[" + ",".join(f"{v:.9g}" for v in values) + "]"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` for a writer that takes a file name (safetensors, matplotlib):
    renamed into place when the block ends; on error nothing is left. `suffix` keeps an extension that
    the writer reads the format from.

    A symlink is written through, as a shell's `>` does: its target gets the new content, the link stays.
    """
    path = Path(os.path.realpath(path)) if os.path.islink(path) else path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path, binary: bool) -> Iterator[TextIO | BinaryIO]:
    """`atomic_path` as an open file: write to it, and it replaces `path` when the block ends."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        yield f
