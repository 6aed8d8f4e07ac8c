"""A shard folder on disk: its lock, its atomic files, the check of a rerun against the run it continues,
and the check of one shard's files against the manifest. The manifest's fields are manifest.py; the writer
is shards.py, the reader and verifier reader.py."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ..base.textio import InputError, atomic_output
from ..weights import file_sha256
from .manifest import MANIFEST, Manifest, RunIdentity, Shard

try:
    import fcntl
except ImportError:  # Windows: no flock, so no run lock
    fcntl = None

LOCK_FILE = ".minilm.lock"
# what atomic writes leave when a run is killed mid-write
TEMPORARY_FILES = (".part-*.tmp", f".{MANIFEST}.*.tmp", ".stdin-*.tmp")


class DamagedShards(InputError):
    """Listed shards that are missing or differ from what the manifest recorded; the message names each one."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_shard_folder(out_dir: Path) -> None:
    """`out_dir` as an --output shard folder: created if missing; a file, or a folder that is not ours, refused."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output {out_dir} is a file; give a folder for the shards")
    if out_dir.is_dir() and not is_shard_folder(out_dir):
        raise InputError(f"{out_dir} exists and is not a minilm shard folder; choose an empty or new --output folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot create --output folder {out_dir} ({e.strerror or e}); choose another --output"
        ) from None


def spool_stdin(out_dir: Path, stream: BinaryIO) -> Path:
    """Keep standard input in out_dir as stdin-<sha256 prefix>.txt and return its path, so that a shard folder
    of piped texts has a file to read from, to resume from and to show texts from.

    Named by its content: the same input piped again is the same file (and its run resumes); other input
    is another file, which the run identity then refuses unless --force. Written atomically.
    """
    make_shard_folder(out_dir)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".stdin-", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            while block := stream.read(1 << 20):
                digest.update(block)
                f.write(block)
        path = out_dir / f"stdin-{digest.hexdigest()[:16]}.txt"
        if not path.is_file():  # piped before: that file stays (its run's identity names it)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"cannot keep standard input in {out_dir}: {e.strerror or e}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes(path: Path, data: bytes) -> None:
    try:
        with atomic_output(path, binary=True) as f:
            f.write(data)
    except OSError as e:
        raise InputError(
            f"cannot write {path}: {e.strerror or e}; "
            "free some space (or fix the folder) and rerun the same command to continue"
        ) from None


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


STDIN_SPOOL = "stdin-*.txt"  # standard input kept in the folder (spool_stdin), named by its content's hash


def is_shard_folder(out_dir: Path) -> bool:
    """Whether a folder is empty or one of ours: our lock file (left even by a run killed early), our manifest,
    or only the standard input a run kept there."""
    entries = list(out_dir.iterdir())
    if all(entry.match(STDIN_SPOOL) for entry in entries) or (out_dir / LOCK_FILE).is_file():
        return True
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("minilm-shards/")


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold the lock on `out_dir` for the block; another holder is an InputError that names it.

    The lock is flock on the folder itself, so deleting or replacing the file that names the holder
    (.minilm.lock) cannot let a second run in. The kernel releases it when the holding process dies,
    however it dies, so a killed run's lock is simply taken over.
    """
    try:
        fd = os.open(out_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise InputError(
            f"cannot open --output folder {out_dir} ({e.strerror or e}); choose another --output"
        ) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    f"{out_dir} is being written by another run ({_lock_holder(out_dir)}); "
                    "wait for it to end, or stop it, before running again"
                ) from None
        _name_holder(out_dir)
        yield
    finally:
        os.close(fd)


def _lock_holder(out_dir: Path) -> str:
    try:
        return (out_dir / LOCK_FILE).read_text(encoding="utf-8", errors="replace").strip() or "another process"
    except OSError:
        return "another process"


def _name_holder(out_dir: Path) -> None:
    """Write who holds the lock into .minilm.lock, replacing whatever is there (never following a symlink)."""
    path = out_dir / LOCK_FILE
    if path.is_symlink() or path.is_dir():
        raise InputError(f"{path} is not a plain file; remove it and rerun")
    text = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"cannot write in {out_dir} ({e.strerror or e}); choose a writable --output folder") from None


def _remove_stale_files(out_dir: Path, everything: bool) -> None:
    """Temporary files of a killed run; with `everything` (--force, or a new run) also the shards and the manifest."""
    patterns = [
        *TEMPORARY_FILES,
        *(("part-*.npy", "part-*.ids.json", "part-*.texts.json", "part-*.spans.json", MANIFEST) if everything else ()),
    ]
    for pattern in patterns:
        for path in out_dir.glob(pattern):
            path.unlink()


def prepare_output(out_dir: Path, identity: RunIdentity, force: bool) -> Manifest | None:
    """The manifest of the same run written so far (None for a new run). Call with the lock held.

    Refuses a different run unless `force`, which (as a new run does) removes the earlier files.
    """
    manifest_path = out_dir / MANIFEST
    if force or not manifest_path.is_file():
        _remove_stale_files(out_dir, everything=True)
        return None
    _remove_stale_files(out_dir, everything=False)
    manifest = Manifest.read(manifest_path)
    differing = identity.differences(manifest.identity)
    if differing == ["input"] and manifest.identity.input.get("sha256") == identity.input["sha256"]:
        raise InputError(
            f"{out_dir} was embedded from {manifest.identity.input.get('path')}, the same content at another path; "
            "give that path, or pass --force to start over"
        )
    if differing:
        raise InputError(
            f"{out_dir} holds a run with a different {', '.join(differing)}; "
            "rerun with the same settings to resume, or pass --force to start over"
        )
    return manifest


def shard_problem(out_dir: Path, shard: Shard, vectors: bytes | None = None) -> str | None:
    """What is wrong with one listed shard (missing, wrong size, sha256 mismatch, of its .npy, ids or texts), or None.

    vectors: the .npy's bytes when the caller has read them already (they are then hashed, not read again).
    """
    for name, size, digest, data in (
        (shard.file, shard.bytes, shard.sha256, vectors),
        (shard.ids, None, shard.ids_sha256, None),
        *([(shard.texts, None, shard.texts_sha256, None)] if shard.texts else []),
        *([(shard.spans, None, shard.spans_sha256, None)] if shard.spans else []),
    ):
        path = out_dir / name
        if data is None and not path.is_file():
            return f"{name} is missing"
        actual = len(data) if data is not None else path.stat().st_size
        if size is not None and actual != size:
            return f"{name} is {actual:,} bytes, expected {size:,} (truncated or rewritten)"
        if (sha256_bytes(data) if data is not None else file_sha256(path)) != digest:
            return f"{name}: sha256 differs from the manifest's (damaged or rewritten)"
    return None
