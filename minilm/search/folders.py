"""The folders search reads, behind one face (`open_folder`): a shard folder of `minilm.embed --output
DIR/`, or the Parquet folder of `minilm.embed --engine ray`. Each gives what the query must match (the
checkpoint's files, dimension, compute dtype), its rows chunk by chunk (a scan holds one chunk), each
part's ids, texts and spans, and the list of parts an index records it covers.

    source = open_folder("vectors/")
    for start, stored in source.chunks(16_384): ...        # (first row, stored vectors), in row order
    ids, texts, spans = source.labels(0)                   # of part 0
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from ..base.textio import InputError
from ..corpus.folder import DamagedShards, shard_problem
from ..corpus.manifest import MANIFEST, Shard
from ..corpus.ray_run import RUN_FILE, read_run
from ..corpus.reader import read_manifest

Labels = tuple[list[str], "list[str] | None", "list[list[int]] | None"]
MAPPED_ROWS = 4096  # rows read through the shard maps before their pages are dropped: at most ~256 MiB mapped
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(eq=False)  # a folder is itself (hashed by identity, for the caches below)
class VectorFolder:
    """What search needs of a folder of vectors; the two kinds below fill it in."""

    folder: Path
    precision: str  # the stored precision (minilm.corpus.quantize)
    dim: int
    model: str | None  # the checkpoint folder it was embedded with, as recorded
    model_files: dict | None  # sha256 of each checkpoint file: what a query's encoder must match
    model_sha256: str | None
    compute_dtype: str
    input: dict | None  # the input file's fingerprint {"path", "size", "sha256"}, when it was a local file
    complete: bool
    starts: np.ndarray  # the first row of each part, and the row count last
    ranges: np.ndarray | None = None  # int8/uint8: the per-dimension calibration ranges
    window: int | None = None  # --window, for a folder of windows
    normalized: bool = False  # rows stored at unit length (float32/float16 then need no normalizing to score)
    notes: list[str] = field(default_factory=list)  # what a user should know: unfinished, no texts

    @property
    def rows(self) -> int:
        return int(self.starts[-1])

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, stored vectors) of every chunk of at most chunk_rows rows, in row order."""
        for index in range(len(self.starts) - 1):
            for offset, chunk in _cut(self.part(index), chunk_rows):
                yield int(self.starts[index]) + offset, chunk

    def stored(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of these rows (any order), read part by part."""
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for index in np.unique(part_of):
            mask = part_of == index
            values = np.asarray(self.part(int(index))[rows[mask] - self.starts[index]])
            if out is None:
                out = np.empty((len(rows), *values.shape[1:]), dtype=values.dtype)
            out[mask] = values
        return out if out is not None else np.empty((0, self.dim), dtype=np.float32)

    def labels_of(self, row: int) -> tuple[str, str | None, tuple[int, int] | None]:
        index = int(np.searchsorted(self.starts, row, side="right") - 1)
        ids, texts, spans = self.labels(index)
        at = row - int(self.starts[index])
        return ids[at], None if texts is None else texts[at], None if spans is None else tuple(spans[at])

    def part(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def labels(self, index: int) -> Labels:
        raise NotImplementedError

    def cover(self) -> list[dict]:
        """What an index built on this folder records it covers: each part's file and fingerprint."""
        raise NotImplementedError


class ShardFolder(VectorFolder):
    """A shard folder: its manifest, its .npy shards (read in chunks; memory-mapped to pick single rows), its
    ids, texts and spans files."""

    def __init__(self, folder: Path, verify: bool):
        manifest = read_manifest(folder)
        identity = manifest.identity
        super().__init__(
            folder,
            manifest.precision,
            manifest.dim,
            manifest.model,
            identity.model_files,
            identity.model_sha256,
            identity.compute_dtype,
            identity.input,
            manifest.complete,
            np.cumsum([0] + [shard.rows for shard in manifest.shards]),
            manifest.ranges_array(),
            identity.window,
            bool(identity.normalized),
        )
        self.manifest = manifest
        self.rows_mapped = 0  # rows read through the shard maps since their pages were last dropped
        check = shard_problem if verify else size_problem  # sizes only: still names a missing or cut file
        problems = [problem for shard in manifest.shards if (problem := check(folder, shard))]
        if problems:
            raise DamagedShards(
                f"{folder}: {'; '.join(problems)}; rerun the command that embedded it to embed those shards again"
            )
        if not manifest.complete:
            self.notes.append(f"{folder} is unfinished: searching the {manifest.rows} rows written so far")
        if any(shard.texts is None for shard in manifest.shards):
            self.notes.append(f"{folder} was written before texts were kept: its hits show ids, not texts")

    def part(self, index: int) -> np.ndarray:
        return np.load(self.folder / self.manifest.shards[index].file, mmap_mode="r")

    @cache  # noqa: B019  (a few numbers per shard)
    def layout(self, index: int) -> tuple[int, tuple[int, int], np.dtype] | None:
        """(where the rows start in the .npy file, its shape, its dtype); None for a file not laid out as our
        writer writes it (rows in C order), which is then read through NumPy."""
        with open(self.folder / self.manifest.shards[index].file, "rb") as f:
            read_header = NPY_HEADERS.get(np.lib.format.read_magic(f))
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(f)
            return None if fortran or len(shape) != 2 else (f.tell(), shape, dtype)

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """As VectorFolder.chunks, each chunk read from its shard file into a new array: a scan of the whole
        folder keeps one chunk in memory. (Chunks of a memory-mapped shard would stay mapped and resident
        in this process once read: the whole corpus, by the end of a scan.)"""
        for index, shard in enumerate(self.manifest.shards):
            first, layout = int(self.starts[index]), self.layout(index)
            if layout is None:
                yield from ((first + offset, chunk) for offset, chunk in _cut(self.part(index), chunk_rows))
                continue
            start, (rows, width), dtype = layout
            with open(self.folder / shard.file, "rb") as f:
                f.seek(start)
                for offset in range(0, rows, chunk_rows):
                    count = min(chunk_rows, rows - offset)
                    yield first + offset, np.fromfile(f, dtype=dtype, count=count * width).reshape(count, width)

    def stored(self, rows: np.ndarray) -> np.ndarray:
        """As VectorFolder.stored, from shard maps opened once. Touching a row maps the pages around it too
        (the kernel's fault-around, up to 64 KiB), so over many queries the maps would hold the whole corpus
        in this process: after every MAPPED_ROWS rows read, their pages are dropped from the process (they
        stay in the page cache). Dropping after every query would cost more than the reads (1 ms a query)."""
        maps = [self.row_map(index) for index in range(len(self.manifest.shards))]
        if not rows.size or None in maps:
            return super().stored(rows)
        out = np.empty((len(rows), *maps[0][1].shape[1:]), dtype=maps[0][1].dtype)
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        for index in np.unique(part_of):
            at = part_of == index
            out[at] = maps[index][1][rows[at] - self.starts[index]]
            self.rows_mapped += int(at.sum())
            if self.rows_mapped >= MAPPED_ROWS and hasattr(mmap, "MADV_DONTNEED"):
                for pages, _ in maps:
                    pages.madvise(mmap.MADV_DONTNEED)
                self.rows_mapped = 0
        return out

    @cache  # noqa: B019  (one map per shard)
    def row_map(self, index: int) -> tuple[mmap.mmap, np.ndarray] | None:
        """The shard's rows as an array over a read-only map of its file, and the map; None when the file is
        not laid out as our writer writes it."""
        if (layout := self.layout(index)) is None:
            return None
        start, (rows, width), dtype = layout
        with open(self.folder / self.manifest.shards[index].file, "rb") as f:
            pages = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return pages, np.frombuffer(pages, dtype=dtype, count=rows * width, offset=start).reshape(rows, width)

    @lru_cache(maxsize=64)  # noqa: B019  (one folder, a few shards' ids, texts and spans)
    def labels(self, index: int) -> Labels:
        shard = self.manifest.shards[index]
        read = lambda name: json.loads((self.folder / name).read_bytes()) if name else None  # noqa: E731
        return read(shard.ids), read(shard.texts), read(shard.spans)

    def cover(self) -> list[dict]:
        return [{"file": shard.file, "sha256": shard.sha256} for shard in self.manifest.shards]


class ParquetFolder(VectorFolder):
    """The Parquet folder of `minilm.embed --engine ray`: its run record (minilm.corpus.ray_run.RUN_FILE) and
    its files of (id, embedding, text), float32. A file is read whole when one of its rows is needed."""

    def __init__(self, folder: Path, verify: bool):
        run = read_run(folder, verify=verify)
        super().__init__(
            folder,
            "float32",
            run["dim"],
            run.get("model"),
            run.get("model_files"),
            run.get("model_sha256"),
            run.get("compute_dtype", "float32"),
            run.get("input"),
            True,
            np.cumsum([0] + [part["rows"] for part in run["files"]]),
            normalized=bool(run.get("normalized")),
        )
        self.files = run["files"]

    @lru_cache(maxsize=4)  # noqa: B019  (a few files' vectors at a time)
    def part(self, index: int) -> np.ndarray:
        table = self._table(index, ["embedding"])
        column = table.column("embedding").combine_chunks()
        return np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, self.dim)

    @lru_cache(maxsize=64)  # noqa: B019
    def labels(self, index: int) -> Labels:
        table = self._table(index, None)
        texts = table.column("text").to_pylist() if "text" in table.column_names else None
        return table.column("id").to_pylist(), texts, None

    def _table(self, index: int, columns: list[str] | None):
        import pyarrow.parquet as pq

        return pq.read_table(self.folder / self.files[index]["name"], columns=columns)

    def cover(self) -> list[dict]:
        return [{"file": part["name"], "sha256": part["sha256"]} for part in self.files]


def open_folder(folder: str | Path, verify: bool = True) -> VectorFolder:
    """The folder as search reads it: a shard folder (manifest.json) or a Ray Parquet folder (RUN_FILE)."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file() and not (folder / MANIFEST).is_file():
        return ParquetFolder(folder, verify)
    return ShardFolder(folder, verify)  # read_manifest names a folder that is neither


def size_problem(folder: Path, shard: Shard) -> str | None:
    """What is wrong with one shard's files, judged by their presence and the .npy's size alone."""
    missing = [name for name in shard.files() if not (folder / name).is_file()]
    if missing:
        return f"{missing[0]} is missing"
    if (size := (folder / shard.file).stat().st_size) != shard.bytes:
        return f"{shard.file} is {size:,} bytes, expected {shard.bytes:,} (truncated or rewritten)"
    return None


def require_complete(source: VectorFolder) -> None:
    if not source.complete:
        raise InputError(
            f"{source.folder} holds an unfinished run; finish it (rerun the command that embedded it), then build"
        )


def _cut(stored: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    return ((offset, stored[offset : offset + chunk_rows]) for offset in range(0, len(stored), chunk_rows))
