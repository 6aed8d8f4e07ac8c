"""Reading texts and writing files safely, for every command line of the project.

`InputError` is the one exception the CLIs turn into an `error:` line and exit status 2. It lives
here, not in minilm.embed, so that modules imported by `python -m minilm.embed` (which runs as
`__main__`) raise the very class its `except` catches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO


class InputError(Exception):
    """Bad command-line input; the message names the file, the line and the fix."""


def _decoded_lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, without its line ending; a non-UTF-8 line is an InputError."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark is not part of the text
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{name}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-save the file as UTF-8") from None
        yield number, line.rstrip("\r\n")


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
