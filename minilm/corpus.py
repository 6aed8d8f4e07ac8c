"""Embed a corpus file into a shard directory: streaming, in input order, resumable after a crash.

    python -m minilm.embed --input corpus.txt --output vectors/      # a folder: this module's job

The input is read in windows of `shard_rows` texts, so memory does not grow with the corpus. Each
window is embedded (sorted by length inside it, as `SentenceEncoder.encode` always does; the
rows come back in input order) and written as one shard:

    vectors/part-00000.npy        (rows, dim) float32, or the stored form of --precision (minilm.quantize)
    vectors/part-00000.ids.json   the ids of those rows, in order (line numbers, or --id-field)
    vectors/manifest.json         model sha256, dim, precision, normalization, input size and hash, settings,
                                  int8 ranges, the shards written so far with their row counts, skipped lines

The input is any format of `minilm.textio.read_records` (.txt, .jsonl, .csv, .tsv, .parquet). A
bad record (invalid JSON, a missing field, a byte that is not UTF-8, an empty line) stops the run
with its file:line, or with `skip_bad_lines` is skipped, counted in the manifest and reported.
int8 and uint8 ranges are calibrated on the first shard's embeddings and kept in the manifest,
so every shard, and a resumed run, uses the same ones.

Every file is written atomically (temporary file, then rename), and the manifest last: a shard
counts only once the manifest lists it. Rerunning the same command skips the listed rows and
carries on; a different model, input or setting is refused unless --force starts over. Ctrl-C
stops after the current shard.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .quantize import PRECISIONS, STORED_DTYPE, Precision, calibration_ranges, dequantize, quantize
from .sentence_encoder import PROGRESS_BAR_MIN_TEXTS, SentenceEncoder
from .textio import BadRecord, InputError, Record, atomic_output, count_records, read_records, require_input_file
from .weights import sha256_of

MANIFEST = "manifest.json"
FORMAT = "minilm-shards/1"
SKIPPED_EXAMPLES = 10  # bad lines quoted in the manifest (all of them are counted)
WARNED_SKIPS = 5  # bad lines also printed as they are skipped


@dataclass
class CorpusSettings:
    shard_rows: int = 10_000
    text_field: str = "text"  # the field or column of .jsonl, .csv, .tsv and .parquet input
    id_field: str | None = None  # None: ids are line numbers (row numbers for Parquet)
    batch_size: int = 32
    max_batch_tokens: int | None = None
    normalize: bool | None = None  # None: as the checkpoint says
    precision: Precision = "float32"  # how the shards store the vectors (minilm.quantize)
    skip_bad_lines: bool = False  # False: a bad record stops the run at its file:line


class SkippedLines:
    """Bad records passed over with skip_bad_lines: all counted, the first few quoted and printed."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples}

    def add(self, bad: BadRecord) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(str(bad))
        if self.count <= WARNED_SKIPS:
            tqdm.write(f"warning: skipped {bad}", file=sys.stderr)
        elif self.count == WARNED_SKIPS + 1:
            tqdm.write("warning: skipping more bad lines; the manifest counts them all", file=sys.stderr)


def good_records(records: Iterable[Record | BadRecord], skip_bad_lines: bool, skipped: SkippedLines) -> Iterator[Record]:
    """The records to embed: a bad one stops with its file:line, or with skip_bad_lines is counted and passed over."""
    for record in records:
        if isinstance(record, BadRecord):
            if not skip_bad_lines:
                raise InputError(f"{record}. To skip and count such lines instead, pass --skip-bad-lines")
            skipped.add(record)
            continue
        yield record


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
        "precision": settings.precision,
        "dtype": STORED_DTYPE[settings.precision],
        "compute_dtype": encoder.dtype,
        "normalized": normalize,
        "pooling": encoder.config.pooling,
        "max_seq_length": encoder.max_seq_length,
        "input": input_fingerprint(path),
        "shard_rows": settings.shard_rows,
        "text_field": settings.text_field if path.suffix.lower() in (".jsonl", ".csv", ".tsv", ".parquet") else None,
        "id_field": settings.id_field,
        "skip_bad_lines": settings.skip_bad_lines,
    }


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def _write_json(path: Path, data: Any) -> None:
    with atomic_output(path, binary=False) as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def prepare_output(out_dir: Path, identity: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The manifest of the same run written so far (None for a new run). Refuses what it must not touch."""
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
        return manifest
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not manifest_path.is_file():
            raise InputError(f"{out_dir} exists and is not a minilm shard folder; choose an empty or new --output folder")
        for old in [*out_dir.glob("part-*.npy"), *out_dir.glob("part-*.ids.json"), manifest_path]:
            old.unlink()  # --force: start over
    out_dir.mkdir(parents=True, exist_ok=True)
    return None


def embed_corpus(
    encoder: SentenceEncoder, path: Path, out_dir: Path, settings: CorpusSettings, force: bool = False, show_progress_bar: bool | None = None
) -> dict[str, Any]:
    """Embed `path` into shards under `out_dir`, resuming an earlier run of the same settings. Returns the manifest.

    show_progress_bar: None shows one on stderr for inputs of 1,000 lines or more.
    """
    require_input_file(path)
    if settings.precision not in PRECISIONS:
        raise InputError(f"unknown precision {settings.precision!r}; choose one of {', '.join(PRECISIONS)}")
    identity = run_identity(encoder, path, settings)
    earlier = prepare_output(out_dir, identity, force)
    manifest = {**identity, "ranges": None, "shards": [], "rows": 0, **(earlier or {}), "complete": False}
    done = manifest["rows"]

    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if _main_thread() else None
    skipped = SkippedLines()
    records = good_records(read_records(path, settings.text_field, settings.id_field), settings.skip_bad_lines, skipped)
    try:
        total = count_records(path)
        show = total >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        with tqdm(total=total, desc="Embedding", unit="text", disable=not show, file=sys.stderr) as bar:
            for _ in range(done):  # resume: pass over what the manifest already holds
                next(records)
            bar.update(done + skipped.count)
            tokens = 0
            while not interrupted:
                window = [record for _, record in zip(range(settings.shard_rows), records)]
                if not window:
                    manifest["complete"] = True
                    break
                result = encoder.encode_detailed(
                    [r.text for r in window], settings.batch_size, settings.normalize, show_progress_bar=False, max_batch_tokens=settings.max_batch_tokens
                )
                if settings.precision in ("int8", "uint8") and manifest["ranges"] is None:
                    manifest["ranges"] = calibration_ranges(result.embeddings).tolist()  # the first shard calibrates
                stored = quantize(result.embeddings, settings.precision, _ranges(manifest))
                name = shard_name(len(manifest["shards"]))
                with atomic_output(out_dir / f"{name}.npy", binary=True) as f:
                    np.save(f, stored)
                _write_json(out_dir / f"{name}.ids.json", [r.id for r in window])
                manifest["shards"].append({"file": f"{name}.npy", "ids": f"{name}.ids.json", "rows": len(window)})
                manifest["rows"] += len(window)
                manifest["skipped"] = skipped.summary()
                _write_json(out_dir / MANIFEST, manifest)  # last: the shard counts from here on
                tokens += sum(min(n, encoder.max_seq_length) for n in result.n_tokens)
                bar.update(manifest["rows"] + skipped.count - bar.n)
                release_freed_memory()
                bar.set_postfix(tokens_per_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f}", skipped=skipped.count)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    manifest["skipped"] = skipped.summary()
    _write_json(out_dir / MANIFEST, manifest)
    return manifest


def _libc_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only: elsewhere there is nothing to trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim() if sys.platform.startswith("linux") else None


def release_freed_memory() -> None:
    """Give the memory freed by the last shard back to the OS.

    glibc keeps freed blocks for reuse, and the tokenizer's and the encoder's buffers come in new
    sizes with every window, so without this the RSS creeps up shard after shard (measured: 543 to
    667 MiB over six shards of 5,000 lines; with it, 430 to 441 MiB).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _ranges(manifest: dict[str, Any]) -> np.ndarray | None:
    return None if manifest.get("ranges") is None else np.array(manifest["ranges"], dtype=np.float32)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a shard folder: precision, dim, int8 ranges, shards, rows, skipped lines."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out_dir} is not a minilm shard folder: it has no {MANIFEST}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_shards(out_dir: str | Path, dequantize_vectors: bool = True) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings) of a shard folder, in input order.

    float32 comes back as stored; float16, int8 and uint8 come back as (N, dim) float32
    (`minilm.quantize.dequantize`) unless dequantize_vectors=False. binary and ubinary always come
    back packed, (N, dim / 8) int8 or uint8: compare them with `minilm.quantize.hamming_distance`
    or `binary_similarity` (quantize the queries with `quantize(q, precision)` first).
    """
    manifest = read_manifest(out_dir)
    out_dir = Path(out_dir)
    ids: list[str] = []
    parts = []
    for shard in manifest["shards"]:
        ids += json.loads((out_dir / shard["ids"]).read_text(encoding="utf-8"))
        parts.append(np.load(out_dir / shard["file"]))
    precision = manifest.get("precision", "float32")
    width = -(-manifest["dim"] // 8) if precision in ("binary", "ubinary") else manifest["dim"]
    stored = np.concatenate(parts) if parts else np.zeros((0, width), dtype=STORED_DTYPE[precision])
    if dequantize_vectors and precision not in ("float32", "binary", "ubinary"):
        return ids, dequantize(stored, precision, _ranges(manifest))
    return ids, stored
