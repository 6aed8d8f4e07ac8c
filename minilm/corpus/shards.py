"""Embed a corpus file into a shard directory: streaming, in input order, resumable after a crash.

    python -m minilm.embed --input corpus.txt --output vectors/      # a folder: this module's job
    python -m minilm.embed --verify vectors/                         # check a folder without embedding

The input is read in windows of `shard_rows` texts, so memory does not grow with the corpus. Each
window is embedded (sorted by length inside it, as `SentenceEncoder.encode` always does; the
rows come back in input order) and written as one shard:

    vectors/part-00000.npy        (rows, dim) float32, or the stored form of --precision (minilm.corpus.quantize)
    vectors/part-00000.ids.json   the ids of those rows, in order (line numbers, or --id-field)
    vectors/part-00000.texts.json their texts, in order: what a search hit shows (minilm.search)
    vectors/manifest.json         the run identity (below), int8 ranges, skipped lines, and every finished
                                  shard with its row count, byte size and sha256, its ids file's sha256,
                                  and the byte range and sha256 of the input it was read from
    vectors/.minilm.lock          who holds the folder's lock (the lock itself is flock on the folder)

The run identity is everything that shapes the rows: the sha256 of every checkpoint file
(weights, config.json, tokenizer and pooling files), the dimension, precision, normalization,
the input's path, size and full sha256, and the settings. A rerun continues only an identical
run; anything else is refused unless --force starts over.

The input is any format of `minilm.base.textio.read_records` (.txt, .jsonl, .csv, .tsv, .parquet). A
bad record (invalid JSON, a missing field, a byte that is not UTF-8, an empty line) stops the run
with its file:line, or with `skip_bad_lines` is skipped, counted in the manifest and reported.
int8 and uint8 ranges are calibrated on the first shard's embeddings and kept in the manifest,
so every shard, and a resumed run, uses the same ones.

What makes it safe:
  * One run at a time: the folder is locked for the whole run, and a second run stops at once
    naming the first. The kernel drops the lock when its process dies, so a killed run's lock is
    simply taken over.
  * Every file is written atomically (temporary file, then rename), and the manifest last: a shard
    counts only once the manifest lists it. The manifest is first written before the first shard,
    so a run killed at any point leaves a folder its rerun recognizes; stale temporary files are
    removed when the next run takes the lock.
  * A rerun (and `load_shards`, and `--verify`) checks the manifest field by field and every listed
    shard's size and sha256 and the ids file's sha256: a damaged or missing shard is named, and a
    rerun embeds it again, and only it, before it carries on. A rerun also embeds again a shard whose
    input bytes no longer hash the same, and refuses to finish a pass over an input that changed
    while it was read.
  * Ctrl-C or SIGTERM stops after the current shard; the rerun continues from there.
"""

from __future__ import annotations

import ctypes
import io
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

from ..base.textio import (
    RECORD_SUFFIXES,
    BadRecord,
    InputError,
    ReadDigest,
    Record,
    count_records,
    read_records,
    require_input_file,
)
from ..encoders.batching import show_bar
from ..encoders.sentence_encoder import NonFiniteOutput, SentenceEncoder
from ..text.windows import text_windows
from ..weights import file_sha256
from ..weights.int8_scales import smoothing_sha256
from .folder import make_shard_folder, prepare_output, run_lock, sha256_bytes, shard_problem, write_bytes, write_json
from .manifest import FORMAT, MANIFEST, Counted, Manifest, RunIdentity, Shard, shard_name
from .quantize import STORED_DTYPE, STORED_PRECISIONS, StoredPrecision, calibration_ranges, quantize

SKIPPED_EXAMPLES = 10  # bad lines quoted in the manifest (all of them are counted)
WARNED_SKIPS = 5  # bad lines also printed as they are skipped
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # both stop the run after the current shard


@dataclass(frozen=True)
class CorpusSettings:
    shard_rows: int = 10_000
    text_field: str = "text"  # the field or column of .jsonl, .csv, .tsv and .parquet input
    id_field: str | None = None  # None: ids are line numbers (row numbers for Parquet)
    batch_size: int | None = None  # None: the encoder's default for its dtype (minilm.encoders.batching)
    max_batch_tokens: int | None = None
    normalize: bool | None = None  # None: as the checkpoint says
    precision: StoredPrecision = "float32"  # how the shards store the vectors (minilm.corpus.quantize)
    skip_bad_lines: bool = False  # False: a bad record stops the run at its file:line
    prompt: str | None = None  # put before every text; None: the checkpoint's default prompt, if any
    window: int | None = None  # word pieces per row of a long text (--window); None: one row per text, truncated
    stride: int | None = None  # word pieces from one window's start to the next's (--stride; default 3/4 window)

    @property
    def step(self) -> int | None:
        return None if self.window is None else self.stride or max(1, self.window * 3 // 4)


@dataclass(frozen=True)
class Row:
    """One row of a shard: a record's text, or with --window one window of it."""

    record: Record
    text: str  # what is embedded and kept
    span: tuple[int, int] | None  # the characters of record.text it covers; None without --window


def rows_of(encoder: SentenceEncoder, records: list[Record], settings: CorpusSettings) -> list[Row]:
    """The rows of a part of the input: one per record, or each record's windows (minilm.text.windows)."""
    if settings.window is None:
        return [Row(r, r.text, None) for r in records]
    spans = text_windows(encoder.tokenizer, [r.text for r in records], settings.window, settings.step)
    return [Row(r, r.text[start:end], (start, end)) for r, windows in zip(records, spans) for start, end in windows]


def check_windows(encoder: SentenceEncoder, settings: CorpusSettings) -> None:
    """--window must fit the model with [CLS], [SEP] and the prompt; --stride must be 1 .. --window."""
    if settings.window is None:
        if settings.stride is not None:
            raise InputError("--stride is the step between windows: give --window too")
        return
    prompt = encoder.resolve_prompt(prompt=settings.prompt)
    prompt_pieces = len(encoder.tokenizer.split([prompt])[0].ids) if prompt else 0
    room = encoder.max_seq_length - encoder.tokenizer.num_special - prompt_pieces
    if not 1 <= settings.window <= room:
        raise InputError(
            f"--window {settings.window}: this model reads at most {room} word pieces of text at a time "
            f"({encoder.max_seq_length} with [CLS], [SEP] and the prompt); give --window 1 to {room}"
        )
    if settings.stride is not None and not 1 <= settings.stride <= settings.window:
        raise InputError(f"--stride {settings.stride}: give 1 to --window ({settings.window}), so windows leave no gap")


class Examples:
    """Things counted over a run (skipped lines, repeated ids): all counted, the first few quoted and printed."""

    def __init__(self, what: str, more: str) -> None:
        self.what = what  # what the warning line starts with: "skipped", "repeated id"
        self.more = more  # the warning after the first few: "skipping more bad lines"
        self.count = 0
        self.examples: list[str] = []

    def summary(self) -> Counted:
        return Counted(self.count, list(self.examples))

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(example)
        if self.count <= WARNED_SKIPS:
            tqdm.write(f"warning: {self.what} {example}", file=sys.stderr)
        elif self.count == WARNED_SKIPS + 1:
            tqdm.write(f"warning: {self.more}; the manifest counts them all", file=sys.stderr)


def good_records(records: Iterable[Record | BadRecord], skip_bad_lines: bool, skipped: Examples) -> Iterator[Record]:
    """The records to embed: a bad one stops with its file:line, or with skip_bad_lines is counted and passed over."""
    for record in records:
        if isinstance(record, BadRecord):
            if not skip_bad_lines:
                raise InputError(f"{record}. To skip and count such lines instead, pass --skip-bad-lines")
            skipped.add(str(record))
            continue
        yield record


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and the sha256 of the whole file: any edit, anywhere in it, is a different input."""
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest}


def run_identity(encoder: SentenceEncoder, path: Path, settings: CorpusSettings) -> RunIdentity:
    """Everything that must match for a rerun to continue an earlier run."""
    model_files = encoder.checkpoint.file_hashes if encoder.checkpoint else None
    return RunIdentity(
        format=FORMAT,
        model_sha256=(model_files or {}).get("model.safetensors"),
        model_files=model_files,
        dim=encoder.dim,
        precision=settings.precision,
        dtype=STORED_DTYPE[settings.precision],
        compute_dtype=encoder.dtype,
        normalized=encoder.config.normalize if settings.normalize is None else settings.normalize,
        pooling=encoder.config.pooling,
        max_seq_length=encoder.max_seq_length,
        input=input_fingerprint(path),
        shard_rows=settings.shard_rows,
        text_field=settings.text_field if path.suffix.lower() in RECORD_SUFFIXES else None,
        id_field=settings.id_field,
        skip_bad_lines=settings.skip_bad_lines,
        # null when there is none, as in manifests written before prompts existed, so those still resume
        prompt=encoder.resolve_prompt(prompt=settings.prompt) or None,
        # int8 vectors depend on the calibrated scales too
        int8_scales_sha256=None if encoder.int8_smoothing is None else smoothing_sha256(encoder.int8_smoothing),
        window=settings.window,
        stride=settings.step,
    )


def _reached(point: str) -> None:
    """A named point in the write sequence.

    Does nothing; the fault-injection tests (tests/faults/) kill the process here.
    """


def _encode_shard(stored: np.ndarray, rows: list[Row]) -> tuple[bytes, bytes, bytes, bytes | None]:
    """The bytes of a shard's files: the .npy of the vectors, and the JSON lists of its rows' ids, texts and
    (with --window) spans."""
    buffer = io.BytesIO()
    np.save(buffer, stored)
    ids, texts = (
        (json.dumps(values) + "\n").encode("utf-8") for values in ([r.record.id for r in rows], [r.text for r in rows])
    )
    spans = (json.dumps([list(r.span) for r in rows]) + "\n").encode("utf-8") if rows[0].span is not None else None
    return buffer.getvalue(), ids, texts, spans


# --------------------------------------------------------------------------- the run


def embed_corpus(
    encoder: SentenceEncoder,
    path: Path,
    out_dir: Path,
    settings: CorpusSettings,
    force: bool = False,
    show_progress_bar: bool | None = None,
) -> Manifest:
    """Embed `path` into shards under `out_dir`, resuming an earlier run of the same settings. Returns the manifest.

    The manifest's `complete` is False when Ctrl-C or SIGTERM stopped the run; `stopped_by` (not written to
    the file) then names the signal. show_progress_bar: None shows one on stderr for inputs of 1,000 lines or more.
    """
    require_input_file(path)
    check_windows(encoder, settings)
    if settings.precision not in STORED_PRECISIONS:
        raise InputError(f"unknown precision {settings.precision!r}; choose one of {', '.join(STORED_PRECISIONS)}")
    make_shard_folder(out_dir)
    identity = run_identity(encoder, path, settings)
    with run_lock(out_dir):
        manifest = prepare_output(out_dir, identity, force)
        model = str(encoder.folder) if encoder.folder else None  # the same weights (identity), found here now
        if manifest is None:
            manifest = Manifest(identity, model=model)
            _reached("before-first-manifest")
            write_json(out_dir / MANIFEST, manifest.to_json())  # from here on the folder is a run its rerun recognizes
        manifest.complete, manifest.model = False, model
        return _embed_windows(encoder, path, out_dir, settings, manifest, show_progress_bar)


def _embed_windows(
    encoder: SentenceEncoder,
    path: Path,
    out_dir: Path,
    settings: CorpusSettings,
    manifest: Manifest,
    show_progress_bar: bool | None,
) -> Manifest:
    """Walk the input window by window: pass over the listed shards that are intact, embed the rest."""
    shards = manifest.shards
    damaged = set()
    for i, shard in enumerate(shards):
        if problem := shard_problem(out_dir, shard):
            print(f"warning: {problem}; embedding that shard again", file=sys.stderr)
            damaged.add(i)
    digest = ReadDigest()
    stopped: list[int] = []
    previous = (
        {s: signal.signal(s, lambda number, _: stopped.append(number)) for s in STOP_SIGNALS} if _main_thread() else {}
    )
    skipped, repeated = Examples("skipped", "skipping more bad lines"), Examples("repeated id", "more ids repeat")
    records = good_records(
        read_records(path, settings.text_field, settings.id_field, digest), settings.skip_bad_lines, skipped
    )
    seen_ids: dict[str, int] | None = {} if settings.id_field else None  # id -> line, to warn about repeats
    try:
        total = count_records(path)
        show = show_bar(total, show_progress_bar)
        with tqdm(total=total, desc="Embedding", unit="text", disable=not show, file=sys.stderr) as bar:
            tokens, index, passed = 0, 0, 0
            while not stopped:
                part = [record for _, record in zip(range(settings.shard_rows), records)]
                if seen_ids is not None:
                    for r in part:
                        if (first := seen_ids.setdefault(r.id, r.line)) != r.line:
                            repeated.add(f"{r.id!r} at {path}:{r.line} (first at line {first})")
                if not part:
                    _check_input_unchanged(path, manifest.identity.input, digest)
                    del shards[index:]  # listed beyond the input's end: a hand-made entry, not rows of this input
                    manifest.complete = True
                    break
                passed += len(part)
                span = digest.cut()  # the input bytes this part was read from
                if index < len(shards) and index not in damaged:
                    if shards[index].input == span and shards[index].records == len(part):  # intact, still this part's
                        index += 1
                        bar.update(passed + skipped.count - bar.n)
                        continue
                    print(
                        f"warning: {shards[index].file} was embedded from other input lines; "
                        "embedding that shard again",
                        file=sys.stderr,
                    )
                rows = rows_of(encoder, part, settings)
                try:
                    result = encoder.encode_detailed(
                        [r.text for r in rows],
                        settings.batch_size,
                        settings.normalize,
                        show_progress_bar=False,
                        max_batch_tokens=settings.max_batch_tokens,
                        prompt=settings.prompt,
                    )
                except NonFiniteOutput as e:  # named by its line in the file, not its place in the part
                    raise NonFiniteOutput(f"{path}:{rows[e.index].record.line}", e.dtype, e.index) from None
                if settings.precision in ("int8", "uint8") and manifest.ranges is None:
                    manifest.ranges = calibration_ranges(result.embeddings).tolist()  # the first shard calibrates
                shard = _write_shard(
                    out_dir,
                    index,
                    quantize(result.embeddings, settings.precision, manifest.ranges_array()),
                    rows,
                    len(part),
                    span,
                    result.n_tokens,
                    encoder.max_seq_length,
                )
                shards[index : index + 1] = [shard]
                manifest.skipped, manifest.repeated_ids = skipped.summary(), repeated.summary()
                _reached("before-manifest")
                write_json(out_dir / MANIFEST, manifest.to_json())  # last: the shard counts from here on
                index += 1
                tokens += sum(min(n, encoder.max_seq_length) for n in result.n_tokens)
                bar.update(passed + skipped.count - bar.n)
                release_freed_memory()
                bar.set_postfix(
                    tokens_per_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f}", skipped=skipped.count
                )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    manifest.skipped, manifest.repeated_ids = skipped.summary(), repeated.summary()
    write_json(out_dir / MANIFEST, manifest.to_json())
    manifest.stopped_by = signal.Signals(stopped[0]).name if stopped else None
    return manifest


def _check_input_unchanged(path: Path, fingerprint: dict[str, Any], digest: ReadDigest) -> None:
    """At the end of a pass: what was read must be the input the run identity hashed at the start."""
    read = digest.whole.hexdigest() if path.suffix.lower() != ".parquet" else input_fingerprint(path)["sha256"]
    if read != fingerprint["sha256"]:
        raise InputError(
            f"{path} changed while it was being embedded; once it stops changing, rerun the same command "
            "(it embeds again the shards read from other contents), or pass --force to start over"
        )


def _write_shard(
    out_dir: Path,
    index: int,
    stored: np.ndarray,
    rows: list[Row],
    records: int,
    span: dict[str, Any],
    n_tokens: list[int],
    max_seq_length: int,
) -> Shard:
    """Write one shard's .npy, ids and texts files atomically; returns its manifest entry."""
    name = shard_name(index)
    vectors, ids, texts, spans = _encode_shard(stored, rows)
    write_bytes(out_dir / f"{name}.npy", vectors)
    _reached("after-npy")
    write_bytes(out_dir / f"{name}.ids.json", ids)
    _reached("after-ids")
    write_bytes(out_dir / f"{name}.texts.json", texts)
    if spans is not None:
        write_bytes(out_dir / f"{name}.spans.json", spans)
    _reached("after-texts")
    return Shard(
        file=f"{name}.npy",
        ids=f"{name}.ids.json",
        rows=len(rows),
        bytes=len(vectors),
        sha256=sha256_bytes(vectors),
        ids_sha256=sha256_bytes(ids),
        input=span,
        truncated=sum(n > max_seq_length for n in n_tokens),
        longest=max(n_tokens),
        texts=f"{name}.texts.json",
        texts_sha256=sha256_bytes(texts),
        spans=None if spans is None else f"{name}.spans.json",
        spans_sha256=None if spans is None else sha256_bytes(spans),
        documents=None if spans is None else records,
    )


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
