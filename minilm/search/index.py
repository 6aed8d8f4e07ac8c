"""An approximate index beside a shard folder, for corpora too big to scan per query:
`python -m minilm.search build DIR` writes it, and Searcher uses it while it matches the folder.

    DIR/index.usearch   an HNSW graph (usearch) over every row, cosine, in f32, f16 or i8 (--dtype)
    DIR/index.json      what it covers: the format, its settings, its file's size and sha256, the rows,
                        and the name and sha256 of every shard it was built from

usearch was chosen (the `[search]` extra) because it is maintained, ships one small wheel with no
system dependency, builds HNSW over f32, f16, i8 and packed bits, and can search a saved index as a
memory-mapped view, so a query process does not load it whole. Exact search needs none of it.

An index is never searched stale: Searcher compares index.json's shards with the manifest's, so a
folder resumed, grown or re-embedded since the build is refused with the command that rebuilds it.
The index picks candidates; their stored vectors rescore them exactly, as minilm.search.searcher does
for int8 and binary folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..base.textio import InputError, atomic_path
from ..corpus.folder import sha256_bytes, write_json
from ..corpus.manifest import Manifest
from ..corpus.reader import verify_shards
from ..weights import file_sha256
from .vectors import stored_float_rows

INDEX_FILE = "index.usearch"
INDEX_JSON = "index.json"
FORMAT = "minilm-index/1"
INDEX_DTYPES = ("f32", "f16", "i8")
ADD_ROWS = 65_536  # rows given to usearch at a time while building


@dataclass(frozen=True)
class IndexInfo:
    format: str
    dtype: str  # how the graph stores vectors: f32, f16 or i8
    connectivity: int  # HNSW edges per node (M)
    expansion_add: int  # candidates kept while inserting (efConstruction)
    rows: int
    bytes: int  # of index.usearch
    sha256: str
    shards: list  # [{"file", "sha256"}] of every shard, in order: what it covers

    @classmethod
    def read(cls, path: Path) -> IndexInfo:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            info = cls(**{key: data[key] for key in cls.__dataclass_fields__})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{path} cannot be read ({e}); rebuild it: python -m minilm.search build {path.parent} --force"
            ) from None
        if info.format != FORMAT:
            raise InputError(f"{path} is of format {info.format!r}, not {FORMAT}; rebuild it with --force")
        return info


def covered(manifest: Manifest) -> list[dict]:
    return [{"file": shard.file, "sha256": shard.sha256} for shard in manifest.shards]


def import_usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise InputError("an HNSW index needs usearch: pip install 'minilm[search]'") from None
    return Index


def build_index(
    folder: str | Path,
    *,
    dtype: str = "f16",
    connectivity: int = 16,
    expansion_add: int = 128,
    force: bool = False,
    progress=None,
) -> IndexInfo:
    """Build DIR/index.usearch over every row of a finished folder (each shard checked first)."""
    folder = Path(folder)
    if dtype not in INDEX_DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(INDEX_DTYPES)}")
    manifest = verify_shards(folder)
    if not manifest.complete:
        raise InputError(
            f"{folder} holds an unfinished run; finish it (rerun the command that embedded it) before building"
        )
    if (folder / INDEX_JSON).exists() and not force:
        raise InputError(f"{folder / INDEX_JSON} exists; pass --force to build it again")
    Index = import_usearch()
    index = Index(ndim=manifest.dim, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add)
    start = 0
    for shard in manifest.shards:
        vectors = stored_float_rows(folder, manifest, shard)
        for offset in range(0, len(vectors), ADD_ROWS):
            part = vectors[offset : offset + ADD_ROWS]
            index.add(np.arange(start + offset, start + offset + len(part), dtype=np.uint64), part)
            if progress is not None:
                progress(len(part))
        start += len(vectors)
    (folder / INDEX_JSON).unlink(missing_ok=True)  # the old description goes first: a crash leaves no stale pair
    with atomic_path(folder / INDEX_FILE, suffix=".usearch") as tmp:
        index.save(str(tmp))
        data = tmp.read_bytes()
    info = IndexInfo(
        FORMAT, dtype, connectivity, expansion_add, manifest.rows, len(data), sha256_bytes(data), covered(manifest)
    )
    write_json(folder / INDEX_JSON, asdict(info))  # last: the index counts from here on
    return info


class HnswIndex:
    """A built index, checked against the folder, memory-mapped."""

    def __init__(self, folder: Path, manifest: Manifest, verify: bool = True):
        self.info = IndexInfo.read(folder / INDEX_JSON)
        fix = f"rebuild it: python -m minilm.search build {folder} --force (or search with --exact)"
        if self.info.shards != covered(manifest) or self.info.rows != manifest.rows:
            raise InputError(
                f"{folder / INDEX_FILE} covers other shards than {folder} holds now "
                f"(resumed, grown or re-embedded since it was built); {fix}"
            )
        path = folder / INDEX_FILE
        if not path.is_file() or path.stat().st_size != self.info.bytes:
            raise InputError(f"{path} is missing or not the size index.json records; {fix}")
        if verify and file_sha256(path) != self.info.sha256:
            raise InputError(f"{path}: sha256 differs from index.json's (damaged or rewritten); {fix}")
        self.index = import_usearch().restore(str(path), view=True)

    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """(Q, count) rows, nearest first; -1 where the graph gave fewer."""
        self.index.expansion_search = max(self.index.expansion_search, count)
        matches = self.index.search(queries, count)
        keys = np.full((len(queries), count), -1, dtype=np.int64)
        if len(queries) == 1:  # usearch answers one query with its found keys only
            found = np.asarray(matches.keys, dtype=np.int64)
            keys[0, : len(found)] = found
        else:
            for q, n in enumerate(np.asarray(matches.counts)):
                keys[q, :n] = np.asarray(matches.keys[q][:n], dtype=np.int64)
        return keys
