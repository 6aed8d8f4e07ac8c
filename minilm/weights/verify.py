"""Checking a folder against its pins: file hashes, which known checkpoint a folder is, and the
fingerprint of every file that shapes the vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import WeightsError
from .files import missing_safetensors
from .known import CHECKPOINT_FILES, KNOWN_CHECKPOINTS, KnownCheckpoint, PinnedFile
from .resolve import ResolvedCheckpoint

_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read 4 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """file_sha256, remembered per (path, size, mtime) so one process hashes each checkpoint file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = file_sha256(path)
    return _hash_cache[key]


def pin_problem(path: Path, pin: PinnedFile) -> str | None:
    """What is wrong with one pinned file ("missing", a size or sha256 mismatch), or None when it matches."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if pin.size is not None and size != pin.size:
        return (
            f"{path}: size {size:,} bytes, expected {pin.size:,} (truncated or wrong file); "
            f"expected sha256 {pin.sha256}"
        )
    actual = sha256_of(path)
    if actual != pin.sha256:
        return f"{path}: sha256 mismatch: expected {pin.sha256}, actual {actual}"
    return None


def _other_pins_match(folder: Path, known: KnownCheckpoint) -> bool:
    """Whether every pinned file but the weights is present and matches `known` (so the folder is a copy
    of it, however damaged its model.safetensors)."""
    others = [name for name in known.pins if name != "model.safetensors"]
    return bool(others) and all(
        (folder / name).is_file() and sha256_of(folder / name) == known.pins[name].sha256 for name in others
    )


def identify_checkpoint(resolved: ResolvedCheckpoint) -> KnownCheckpoint:
    """The known checkpoint a folder is (or is a damaged copy of). A folder given by path is identified by its
    model.safetensors hash, or else by its tokenizer files."""
    if resolved.known is not None:
        return resolved.known
    weights = resolved.path / "model.safetensors"
    if not weights.is_file():
        raise WeightsError(missing_safetensors(resolved.path))
    actual = sha256_of(weights)
    matches = [k for k in KNOWN_CHECKPOINTS.values() if k.pins["model.safetensors"].sha256 == actual]
    # a damaged copy of a known checkpoint still carries its tokenizer files: check it as that checkpoint
    matches = matches or [k for k in KNOWN_CHECKPOINTS.values() if _other_pins_match(resolved.path, k)]
    if not matches:
        expected = ", ".join(f"{k.pins['model.safetensors'].sha256} ({k.name})" for k in KNOWN_CHECKPOINTS.values())
        raise WeightsError(
            f"{weights}: sha256 {actual} matches no known checkpoint (expected {expected}); "
            "if this is your own checkpoint, pass --no-verify (verify=False)"
        )
    return matches[0]


def verify_checkpoint(resolved: ResolvedCheckpoint) -> KnownCheckpoint:
    """Check every pinned file; the error names each one that is missing or differs."""
    known = identify_checkpoint(resolved)
    problems = [p for name, pin in known.pins.items() if (p := pin_problem(resolved.path / name, pin))]
    if problems:
        fix = "re-download or reinstall it"
        if resolved.known is None:
            fix += f", or if it is your own checkpoint rather than a damaged copy of {known.name}, pass --no-verify"
        raise WeightsError(f"{'; '.join(problems)}; the checkpoint is corrupt or changed: {fix}")
    return known


def checkpoint_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every checkpoint file present in `folder` (CHECKPOINT_FILES): all that shape the vectors."""
    return {name: sha256_of(folder / name) for name in CHECKPOINT_FILES if (folder / name).is_file()}
