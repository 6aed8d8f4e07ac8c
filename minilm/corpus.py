"""Embed a corpus file into a shard directory: streaming, in input order, resumable after a crash.

    python -m minilm.embed --input corpus.txt --output vectors/      # a folder: this module's job

The input is read in windows of `shard_rows` texts, so memory does not grow with the corpus. Each
window is embedded (sorted by length inside it, as `SentenceEncoder.encode` always does; the
rows come back in input order) and written as one shard:

    vectors/part-00000.npy        float32 (rows, dim)
    vectors/part-00000.ids.json   the ids of those rows, in order (line numbers, or --id-field)
    vectors/manifest.json         model sha256, dim, dtype, normalization, input size and hash, settings,
                                  and the shards written so far with their row counts

Every file is written atomically (temporary file, then rename), and the manifest last: a shard
counts only once the manifest lists it. Rerunning the same command skips the listed rows and
carries on; a different model, input or setting is refused unless --force starts over. Ctrl-C
stops after the current shard.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .textio import InputError, _decoded_lines, atomic_output
from .sentence_encoder import PROGRESS_BAR_MIN_TEXTS, SentenceEncoder
from .weights import sha256_of

MANIFEST = "manifest.json"
FORMAT = "minilm-shards/1"


@dataclass
class CorpusSettings:
    shard_rows: int = 10_000
    text_field: str = "text"  # .jsonl only
    id_field: str | None = None  # .jsonl only; None: ids are line numbers
    batch_size: int = 32
    max_batch_tokens: int | None = None
    normalize: bool | None = None  # None: as the checkpoint says


def read_records(path: Path, settings: CorpusSettings) -> Iterator[tuple[str, str]]:
    """(id, text) for each text of a .txt (one per line) or .jsonl file, streamed; errors name file:line."""
    with open(path, "rb") as stream:
        for number, line in _decoded_lines(stream, str(path)):
            if path.suffix != ".jsonl":
                yield str(number), line
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: invalid JSON ({e.msg}); each line must be an object like {{\"{settings.text_field}\": \"...\"}}") from None
            for field in (settings.text_field, settings.id_field):
                if field is not None and (not isinstance(record, dict) or field not in record):
                    raise InputError(f'{path}:{number}: no "{field}" field; each line must be an object with one')
            if not isinstance(record[settings.text_field], str):
                raise InputError(f'{path}:{number}: "{settings.text_field}" is {type(record[settings.text_field]).__name__}, expected a string')
            yield (str(record[settings.id_field]) if settings.id_field else str(number)), record[settings.text_field]


def count_lines(path: Path) -> int:
    """Lines in a file, read in 1 MiB blocks (the progress bar's total)."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of the first MiB: cheap, and enough to notice a different or edited input."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256_first_mib": head}


def run_identity(encoder: SentenceEncoder, path: Path, settings: CorpusSettings) -> dict[str, Any]:
    """Everything that must match for a rerun to continue an earlier run."""
    normalize = encoder.config.normalize if settings.normalize is None else settings.normalize
    return {
        "format": FORMAT,
        "model_sha256": sha256_of(encoder.folder / "model.safetensors") if encoder.folder else None,
        "dim": encoder.dim,
        "dtype": "float32",
        "compute_dtype": encoder.dtype,
        "normalized": normalize,
        "pooling": encoder.config.pooling,
        "max_seq_length": encoder.max_seq_length,
        "input": input_fingerprint(path),
        "shard_rows": settings.shard_rows,
        "text_field": settings.text_field if path.suffix == ".jsonl" else None,
        "id_field": settings.id_field,
    }


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def _write_json(path: Path, data: Any) -> None:
    with atomic_output(path, binary=False) as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def prepare_output(out_dir: Path, identity: dict[str, Any], force: bool) -> list[dict[str, Any]]:
    """The shards already written by the same run (empty for a new one). Refuses what it must not touch."""
    manifest_path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output {out_dir} is a file; give a folder for the shards")
    if manifest_path.is_file() and not force:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{manifest_path} cannot be read ({e}); pass --force to start over") from None
        differing = [key for key, value in identity.items() if manifest.get(key) != value]
        if differing:
            raise InputError(
                f"{out_dir} holds a run with a different {', '.join(differing)}; rerun with the same settings to resume, or pass --force to start over"
            )
        return manifest["shards"]
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not manifest_path.is_file():
            raise InputError(f"{out_dir} exists and is not a minilm shard folder; choose an empty or new --output folder")
        for old in [*out_dir.glob("part-*.npy"), *out_dir.glob("part-*.ids.json"), manifest_path]:
            old.unlink()  # --force: start over
    out_dir.mkdir(parents=True, exist_ok=True)
    return []


def embed_corpus(
    encoder: SentenceEncoder, path: Path, out_dir: Path, settings: CorpusSettings, force: bool = False, show_progress_bar: bool | None = None
) -> dict[str, Any]:
    """Embed `path` into shards under `out_dir`, resuming an earlier run of the same settings. Returns the manifest.

    show_progress_bar: None shows one on stderr for inputs of 1,000 lines or more.
    """
    if not path.is_file():
        raise InputError(f"input file {path} does not exist" if not path.exists() else f"input {path} is not a file")
    identity = run_identity(encoder, path, settings)
    shards = prepare_output(out_dir, identity, force)
    done = sum(shard["rows"] for shard in shards)
    manifest = {**identity, "shards": shards, "rows": done, "complete": False}

    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if _main_thread() else None
    records = read_records(path, settings)
    try:
        total = count_lines(path)
        show = total >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        with tqdm(total=total, initial=done, desc="Embedding", unit="text", disable=not show, file=sys.stderr) as bar:
            for _ in range(done):  # resume: skip what the manifest already holds
                next(records)
            tokens = 0
            while not interrupted:
                window = [record for _, record in zip(range(settings.shard_rows), records)]
                if not window:
                    manifest["complete"] = True
                    break
                ids, texts = [r[0] for r in window], [r[1] for r in window]
                result = encoder.encode_detailed(
                    texts, settings.batch_size, settings.normalize, show_progress_bar=False, max_batch_tokens=settings.max_batch_tokens
                )
                name = shard_name(len(manifest["shards"]))
                with atomic_output(out_dir / f"{name}.npy", binary=True) as f:
                    np.save(f, result.embeddings)
                _write_json(out_dir / f"{name}.ids.json", ids)
                manifest["shards"].append({"file": f"{name}.npy", "ids": f"{name}.ids.json", "rows": len(ids)})
                manifest["rows"] += len(ids)
                _write_json(out_dir / MANIFEST, manifest)  # last: the shard counts from here on
                tokens += sum(min(n, encoder.max_seq_length) for n in result.n_tokens)
                bar.update(len(ids))
                bar.set_postfix(tokens_per_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    _write_json(out_dir / MANIFEST, manifest)
    return manifest


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def load_shards(out_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings (N, dim)) of a shard folder, in input order."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    ids: list[str] = []
    parts = []
    for shard in manifest["shards"]:
        ids += json.loads((out_dir / shard["ids"]).read_text(encoding="utf-8"))
        parts.append(np.load(out_dir / shard["file"]))
    embeddings = np.concatenate(parts) if parts else np.zeros((0, manifest["dim"]), dtype=np.float32)
    return ids, embeddings
