"""An index beside a shard folder, for corpora too big to scan per query: `python -m minilm.search build
DIR` writes it, and Searcher uses it while it matches the folder. Two kinds:

    hnsw     DIR/index.usearch   an HNSW graph (usearch) over every row, cosine, stored as i8, f16 or f32
    binary   DIR/index.bits.npy  every row's sign bits, packed (48 bytes at 384 dimensions, 1/32 of float32),
                                 searched exactly by Hamming distance, in memory (minilm.search.hamming)
    both     DIR/index.json      what it is: kind, settings, its file's size and sha256, the rows, and the
                                 name and sha256 of every shard it was built from

Either kind only proposes candidates (k x the rescore multiplier); their stored vectors rescore them
exactly, so a float32 folder with a binary index is sentence-transformers' "binary + float32
rescoring" recipe with the float vectors left on disk and only the bits in memory.

usearch was chosen for HNSW (the `[search]` extra) because it is maintained, ships one small wheel
with no system dependency, builds HNSW over f32, f16, i8 and packed bits, and can search a saved graph
as a memory-mapped view, so a query process does not load it whole. Exact search and the binary index
need none of it: NumPy's popcount and torch's int8 matrix product score packed bits exactly, and faster
than usearch's exact search here (docs/search.md).

An index is never searched stale: Searcher compares index.json's parts with the folder's, so a
folder resumed, grown or re-embedded since the build is refused with the command that rebuilds it.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..base.textio import InputError, atomic_path
from ..corpus.folder import sha256_bytes, write_bytes, write_json
from ..corpus.quantize import quantize
from ..weights import file_sha256
from .folders import VectorFolder, open_folder, require_complete
from .hamming import BITS_CHUNK_ROWS, column_words, nearest_by_bits
from .vectors import as_unit_floats

INDEX_JSON = "index.json"
INDEX_FILES = {"hnsw": "index.usearch", "binary": "index.bits.npy"}
INDEX_KINDS = tuple(INDEX_FILES)
FORMAT = "minilm-index/1"
INDEX_DTYPES = ("f32", "f16", "i8")
# How the graph stores vectors. i8 searches twice as fast as f16 at the same ef (half the bytes a hop reads,
# VNNI's dot products) and ranks its candidates a little less exactly, which rescoring k x 4 of them with
# the stored vectors repairs: the same recall@10 as f16 over 150,000 rows of the 1M-line corpus.
DEFAULT_INDEX_DTYPE = "i8"
ADD_ROWS = 65_536  # rows given to usearch at a time while building
# HNSW edges per node. usearch's default, 16, reached recall@10 0.976 at ef 400 over the 1M-line corpus
# (each sentence there is repeated with a line number: tight clusters of near-copies); 32 links past them.
DEFAULT_CONNECTIVITY = 32
# HNSW candidates a query's graph search keeps (ef, usearch's expansion_search): recall rises with it, and
# so does the lookup's time. Chosen on the 1M-line corpus (docs/search.md).
DEFAULT_EXPANSION_SEARCH = 300


@dataclass(frozen=True)
class IndexInfo:
    format: str
    kind: str  # hnsw or binary
    file: str  # index.usearch or index.bits.npy
    dtype: str  # how it stores vectors: f32, f16 or i8 (hnsw), b1 (binary)
    connectivity: int  # HNSW edges per node (M); 0 for binary
    expansion_add: int  # HNSW candidates kept while inserting (efConstruction); 0 for binary
    rows: int
    bytes: int  # of the index file
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
        if info.format != FORMAT or INDEX_FILES.get(info.kind) != info.file:
            raise InputError(f"{path} is not a {FORMAT} index; rebuild it with --force")
        return info


def import_usearch():
    try:
        import usearch.index
    except ImportError:
        raise InputError("an HNSW index needs usearch: pip install 'minilm[search]'") from None
    return usearch.index


def build_index(
    folder: str | Path,
    *,
    kind: str = "hnsw",
    dtype: str = DEFAULT_INDEX_DTYPE,
    connectivity: int = DEFAULT_CONNECTIVITY,
    expansion_add: int = 128,
    force: bool = False,
    progress=None,
) -> IndexInfo:
    """Build DIR's index of `kind` over every row of a finished folder (each shard checked first)."""
    folder = Path(folder)
    if kind not in INDEX_KINDS:
        raise InputError(f"--kind {kind!r}: choose one of {', '.join(INDEX_KINDS)}")
    if kind == "hnsw" and dtype not in INDEX_DTYPES:
        raise InputError(f"--dtype {dtype!r}: choose one of {', '.join(INDEX_DTYPES)}")
    source = open_folder(folder, verify=True)  # every part checked against its hash first
    require_complete(source)
    if (folder / INDEX_JSON).exists() and not force:
        raise InputError(f"{folder / INDEX_JSON} exists; pass --force to build it again")
    if kind == "hnsw":
        graph = import_usearch().Index(
            ndim=source.dim, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add
        )
    bits, start = [], 0
    for index in range(len(source.starts) - 1):
        vectors = as_unit_floats(source.part(index), source.precision, source.dim, source.ranges)
        for offset in range(0, len(vectors), ADD_ROWS):
            part = vectors[offset : offset + ADD_ROWS]
            if kind == "hnsw":
                graph.add(np.arange(start + offset, start + offset + len(part), dtype=np.uint64), part)
            else:
                bits.append(quantize(part, "ubinary"))
            if progress is not None:
                progress(len(part))
        start += len(vectors)
    (folder / INDEX_JSON).unlink(missing_ok=True)  # the old description goes first: a crash leaves no stale pair
    for old in INDEX_FILES.values():
        (folder / old).unlink(missing_ok=True)
    path = folder / INDEX_FILES[kind]
    if kind == "hnsw":
        with atomic_path(path, suffix=".usearch") as tmp:
            graph.save(str(tmp))
        data = path.read_bytes()
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate(bits) if bits else np.zeros((0, -(-source.dim // 8)), np.uint8))
        data = buffer.getvalue()
        write_bytes(path, data)
    settings = (dtype, connectivity, expansion_add) if kind == "hnsw" else ("b1", 0, 0)
    size, digest = len(data), sha256_bytes(data)
    info = IndexInfo(FORMAT, kind, path.name, *settings, source.rows, size, digest, source.cover())
    write_json(folder / INDEX_JSON, asdict(info))  # last: the index counts from here on
    return info


class FolderIndex:
    """A built index, checked against the folder it sits in: the graph memory-mapped, or the bits in memory."""

    def __init__(self, folder: Path, source: VectorFolder, verify: bool = True):
        self.info = IndexInfo.read(folder / INDEX_JSON)
        path = folder / self.info.file
        fix = f"rebuild it: python -m minilm.search build {folder} --force (or search with --exact)"
        if self.info.shards != source.cover() or self.info.rows != source.rows:
            raise InputError(
                f"{path} covers other shards than {folder} holds now "
                f"(resumed, grown or re-embedded since it was built); {fix}"
            )
        if not path.is_file() or path.stat().st_size != self.info.bytes:
            raise InputError(f"{path} is missing or not the size index.json records; {fix}")
        if verify and file_sha256(path) != self.info.sha256:
            raise InputError(f"{path}: sha256 differs from index.json's (damaged or rewritten); {fix}")
        if self.info.kind == "hnsw":
            self.graph = import_usearch().Index.restore(str(path), view=True)
        else:
            self.words = column_words(np.load(path))  # the bits as popcounts read them
            self.dim = source.dim

    def candidates(self, queries: np.ndarray, count: int, expansion: int = DEFAULT_EXPANSION_SEARCH) -> np.ndarray:
        """(Q, count) rows, nearest first, for unit float queries; -1 where the index gave fewer. expansion: the
        candidates an HNSW search keeps on its way (ef), at least `count`."""
        if self.info.kind == "binary":
            return self._nearest_bits(quantize(queries, "ubinary"), count)
        self.graph.expansion_search = max(expansion, count)
        matches = self.graph.search(queries, count)
        keys = np.full((len(queries), count), -1, dtype=np.int64)
        if len(queries) == 1:  # usearch answers one query with its found keys only
            found = np.asarray(matches.keys, dtype=np.int64).reshape(-1)[:count]
            keys[0, : len(found)] = found
        else:
            for q, n in enumerate(np.asarray(matches.counts)):
                keys[q, :n] = np.asarray(matches.keys[q][:n], dtype=np.int64)
        return keys

    def _nearest_bits(self, query_bits: np.ndarray, count: int) -> np.ndarray:
        """Every row's bits against the queries', exactly, a chunk at a time (the bits are in memory)."""
        rows, step = self.words.shape[1], BITS_CHUNK_ROWS
        chunks = ((start, self.words[:, start : start + step]) for start in range(0, rows, step))
        return nearest_by_bits(query_bits, chunks, self.dim, count)[1]
