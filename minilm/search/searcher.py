"""Search a shard folder (`python -m minilm.embed --output DIR/`): each query's nearest rows, with their
ids and texts.

    searcher = Searcher("vectors/")                       # the folder's own model, prompt and settings
    for hit in searcher.search(["how do I reset my password?"], k=5)[0]:
        print(hit.rank, f"{hit.score:.3f}", hit.id, hit.text)

The query is encoded as the folder's rows were: the checkpoint the manifest names (or, for a folder that
names none, the known checkpoint whose weights hash it records), in the compute dtype it records, with
the checkpoint's query prompt where it has one (sentence-transformers' `encode_query`), normalized as
the rows are. A checkpoint given by hand must hash the same, and have the same dimension.

Scoring, by the folder's stored precision (minilm.corpus.quantize); every score is a cosine:
    float32, float16   exact: the query against every row, streamed CHUNK_ROWS rows at a time, so memory
                       holds one chunk and k hits per query, never the corpus
    int8, uint8        the quantized query against the stored bytes picks k x rescore_multiplier
                       candidates, which the float query then rescores against their dequantized rows
    binary, ubinary    Hamming distance picks the candidates; the float query rescores them against the
                       signs they keep (+1 / -1 per dimension), the ranking of sentence-transformers' recipe
With rescore_multiplier=0 the first pass's scores are the answer (Hamming similarity for binary).

A folder is read as `load_shards` reads it: the manifest checked field by field and, with verify, each
listed shard against its sha256. An unfinished folder is searched as far as it is written, and says so
(`notes`). A folder whose input file has changed since is refused: its rows are stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..base.textio import InputError
from ..corpus.folder import DamagedShards, shard_problem
from ..corpus.manifest import Manifest, Shard
from ..corpus.quantize import quantize
from ..corpus.reader import read_manifest
from ..corpus.shards import input_fingerprint
from ..encoders.cross_encoder import CrossEncoder
from ..encoders.sentence_encoder import SentenceEncoder
from ..weights import KNOWN_CHECKPOINTS
from .index import INDEX_JSON, FolderIndex
from .topk import TopK
from .vectors import as_unit_floats, normalized, unpacked_signs

CHUNK_ROWS = 16_384  # rows scored at a time: 24 MiB of float32 at 384 dimensions
# k x this many candidates are rescored; binary + float32 rescoring, recall@10 on 5,000 STS-B sentences:
# 0.91 at 4, 0.975 at 10 (docs/search.md)
DEFAULT_RESCORE_MULTIPLIER = 10


@dataclass(frozen=True)
class Hit:
    rank: int  # 1 for the best
    score: float  # the cosine to the query; with a reranker, the reranker's score
    id: str
    text: str | None  # None for a folder written before texts were kept
    row: int  # the row in the folder, 0-based, in input order
    span: tuple[int, int] | None = None  # with --window: the characters of the document this window covers


class Searcher:
    def __init__(
        self,
        folder: str | Path,
        *,
        encoder: SentenceEncoder | None = None,
        model: str | None = None,
        verify: bool = True,
        rescore_multiplier: int = DEFAULT_RESCORE_MULTIPLIER,
        device: str | None = None,
        exact: bool = False,
    ):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.notes: list[str] = []
        self.rescore_multiplier = rescore_multiplier
        if not self.manifest.complete:
            self.notes.append(f"{self.folder} is unfinished: searching the {self.manifest.rows} rows written so far")
        if verify:
            problems = [p for shard in self.manifest.shards if (p := shard_problem(self.folder, shard))]
        else:  # sizes only: a missing or truncated file is still named, not a NumPy traceback
            problems = [p for shard in self.manifest.shards if (p := size_problem(self.folder, shard))]
        if problems:
            raise DamagedShards(
                f"{self.folder}: {'; '.join(problems)}; rerun the command that embedded it to embed those shards again"
            )
        self._check_input()
        if any(shard.texts is None for shard in self.manifest.shards):
            self.notes.append(f"{self.folder} was written before texts were kept: its hits show ids, not texts")
        # the pins are not needed: the checkpoint's files must hash as the manifest records (_check_encoder)
        self.encoder = encoder or SentenceEncoder.from_pretrained(
            model or folder_model(self.manifest, self.folder),
            device=device,
            dtype=self.manifest.identity.compute_dtype,
            verify=False,
        )
        self._check_encoder()
        self.starts = np.cumsum([0] + [shard.rows for shard in self.manifest.shards])  # first row of each shard
        # the index beside the shards, when there is one and exact search is not asked for
        has_index = (self.folder / INDEX_JSON).exists()
        self.index = FolderIndex(self.folder, self.manifest, verify) if has_index and not exact else None

    # ------------------------------------------------------------------ checks

    def _check_input(self) -> None:
        fingerprint = self.manifest.identity.input
        path = Path(fingerprint["path"])
        if path.is_file() and input_fingerprint(path) != fingerprint:
            raise InputError(
                f"{path} has changed since {self.folder} was embedded from it, so its rows are stale; "
                f"embed it again (python -m minilm.embed --input {path} --output {self.folder}/ --force)"
            )

    def _check_encoder(self) -> None:
        identity = self.manifest.identity
        own = self.encoder.checkpoint.file_hashes if self.encoder.checkpoint else {}
        if identity.model_files and own != identity.model_files:
            differing = sorted(n for n in {*own, *identity.model_files} if own.get(n) != identity.model_files.get(n))
            raise InputError(
                f"{self.folder} was embedded with another checkpoint ({', '.join(differing[:3])} differ"
                f"{' from ' + str(self.encoder.folder) if self.encoder.folder else ''}); search it with its own model"
            )
        if self.encoder.dim != identity.dim:
            raise InputError(f"{self.folder} holds {identity.dim}-d vectors; this model gives {self.encoder.dim}-d")

    # ------------------------------------------------------------------ search

    def query_prompt(self) -> str:
        """The checkpoint's prompt for queries, where it has one ("" otherwise)."""
        return self.encoder.prompts.get("query", "")

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"query {i + 1} is empty; give text to search for")
        vectors = self.encoder.encode(queries, prompt=self.query_prompt(), show_progress_bar=False)
        return normalized(vectors)

    def search(self, queries: list[str], k: int = 10, group: str = "rows") -> list[list[Hit]]:
        """Each query's k best rows (fewer when the folder holds fewer), best first.

        group="documents" (for a folder embedded with --window): the k best documents instead, each by
        its best window, which the hit is.
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if group not in ("rows", "documents"):
            raise InputError(f"group {group!r}: choose rows or documents")
        vectors = self.encode_queries(list(queries))
        if group == "rows":
            return self.search_vectors(vectors, k)
        return [self._best_documents(vectors[q : q + 1], k) for q in range(len(vectors))]

    def rerank(self, queries: list[str], hits: list[list[Hit]], reranker: CrossEncoder) -> list[list[Hit]]:
        """Each query's hits in the order of a cross-encoder reading the query and each hit's text together
        (CrossEncoder.rank), with its scores."""
        if reranker.num_labels != 1:
            raise InputError(f"the reranker scores {reranker.num_labels} labels; ranking needs a one-label reranker")
        ranked = []
        for query, query_hits in zip(queries, hits):
            if any(hit.text is None for hit in query_hits):
                raise InputError(f"{self.folder} keeps no texts (written before they were kept): nothing to rerank")
            order = (
                reranker.rank(query, [hit.text for hit in query_hits], show_progress_bar=False) if query_hits else []
            )
            ranked.append(
                [replace(query_hits[o["corpus_id"]], rank=r, score=o["score"]) for r, o in enumerate(order, 1)]
            )
        return ranked

    def _best_documents(self, query: np.ndarray, k: int) -> list[Hit]:
        """One query's k best documents by their best window: ask for more windows until k documents show."""
        wide = k
        while True:
            wide = min(wide * 4, self.manifest.rows)
            hits, seen = [], set()
            for hit in self.search_vectors(query, wide)[0]:
                if hit.id not in seen:
                    seen.add(hit.id)
                    hits.append(hit)
            if len(hits) >= k or wide >= self.manifest.rows:
                return [replace(hit, rank=rank) for rank, hit in enumerate(hits[:k], 1)]

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """search, for (Q, C) float query vectors already encoded (unit length)."""
        precision = self.manifest.precision
        if self.index is not None:  # the graph picks candidates, their stored vectors rank them
            wide = min(k * max(self.rescore_multiplier, 1), self.manifest.rows)
            scores, rows = self._rescore(queries, self.index.candidates(queries, wide), k)
        elif precision in ("float32", "float16"):
            scores, rows = self._stream(queries, k, precision)
        else:
            wide = k * self.rescore_multiplier if self.rescore_multiplier else k
            scores, rows = self._stream(queries, wide, precision)
            if self.rescore_multiplier:
                scores, rows = self._rescore(queries, rows, k)
        return [self._hits(s, r) for s, r in zip(scores, rows)]

    def _chunks(self):
        """(first row, stored vectors) of every chunk of every shard, in order; the file is memory-mapped."""
        for shard, start in zip(self.manifest.shards, self.starts):
            stored = np.load(self.folder / shard.file, mmap_mode="r")
            for offset in range(0, len(stored), CHUNK_ROWS):
                yield int(start) + offset, stored[offset : offset + CHUNK_ROWS]

    def _stream(self, queries: np.ndarray, k: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
        best = TopK(len(queries), k)
        first = self._first_pass_queries(queries, precision)
        for start, chunk in self._chunks():
            best.add(self._first_pass_scores(first, np.asarray(chunk), precision), start)
        return best.result()

    def _first_pass_queries(self, queries: np.ndarray, precision: str) -> np.ndarray:
        if precision in ("int8", "uint8"):
            return quantize(queries, precision, self.manifest.ranges_array()).astype(np.float32)
        if precision in ("binary", "ubinary"):
            return quantize(queries, precision)
        return queries

    def _first_pass_scores(self, first: np.ndarray, chunk: np.ndarray, precision: str) -> np.ndarray:
        if precision in ("float32", "float16"):
            return first @ normalized(chunk.astype(np.float32)).T
        if precision in ("int8", "uint8"):
            return first @ chunk.astype(np.float32).T  # the quantized query against the stored buckets
        # Hamming distance h as a similarity, 1 - 2h/C: the +-1 signs' dot product over C, one matrix product
        return unpacked_signs(first, self.manifest.dim) @ unpacked_signs(chunk, self.manifest.dim).T / self.manifest.dim

    def _rescore(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The float queries against their candidates' stored vectors (dequantized, or their signs)."""
        unique = np.unique(rows[rows >= 0])  # -1: a place the index left empty
        vectors = self._rescoring_vectors(unique)  # one read of every candidate, whichever queries share it
        candidates = vectors[np.searchsorted(unique, np.maximum(rows, 0)).clip(max=len(unique) - 1)]  # (Q, wide, C)
        scores = np.einsum("qc,qwc->qw", queries, candidates).astype(np.float32)
        scores[rows < 0] = -np.inf
        best = TopK(len(queries), k)
        best.add(scores, rows)
        scores, rows = best.result()
        if np.isinf(scores).any():  # fewer candidates than k: keep each query's real ones
            return [s[np.isfinite(s)] for s in scores], [r[np.isfinite(s)] for s, r in zip(scores, rows)]
        return scores, rows

    def _rescoring_vectors(self, rows: np.ndarray) -> np.ndarray:
        return as_unit_floats(self.stored_rows(rows), self.manifest)

    def stored_rows(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of these rows, read from the memory-mapped shards."""
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for index in np.unique(shard_of):
            stored = np.load(self.folder / self.manifest.shards[index].file, mmap_mode="r")
            mask = shard_of == index
            part = np.asarray(stored[rows[mask] - self.starts[index]])
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
            out[mask] = part
        return out

    # ------------------------------------------------------------------ hits

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        hits = []
        for rank, (score, row) in enumerate(zip(scores, rows), 1):
            index = int(np.searchsorted(self.starts, row, side="right") - 1)
            ids, texts, spans = self._shard_rows(index)
            at = int(row) - int(self.starts[index])
            text, span = (None if texts is None else texts[at]), (None if spans is None else tuple(spans[at]))
            hits.append(Hit(rank, float(score), ids[at], text, int(row), span))
        return hits

    @lru_cache(maxsize=64)  # noqa: B019  (one Searcher, a few shards' ids, texts and spans)
    def _shard_rows(self, index: int) -> tuple[list[str], list[str] | None, list[list[int]] | None]:
        shard = self.manifest.shards[index]
        ids = json.loads((self.folder / shard.ids).read_bytes())
        texts = json.loads((self.folder / shard.texts).read_bytes()) if shard.texts else None
        spans = json.loads((self.folder / shard.spans).read_bytes()) if shard.spans else None
        return ids, texts, spans


def size_problem(folder: Path, shard: Shard) -> str | None:
    """What is wrong with one shard's files, judged by their presence and the .npy's size alone."""
    missing = [name for name in shard.files() if not (folder / name).is_file()]
    if missing:
        return f"{missing[0]} is missing"
    if (size := (folder / shard.file).stat().st_size) != shard.bytes:
        return f"{shard.file} is {size:,} bytes, expected {shard.bytes:,} (truncated or rewritten)"
    return None


def folder_model(manifest: Manifest, folder: Path) -> str:
    """The checkpoint a folder was embedded with: the folder its manifest names while it is there, else the
    known checkpoint with the weights hash it records."""
    if manifest.model and Path(manifest.model).is_dir():
        return manifest.model
    for known in KNOWN_CHECKPOINTS.values():
        if known.pins["model.safetensors"].sha256 == manifest.identity.model_sha256:
            return known.name
    if manifest.model:
        return manifest.model  # gone: resolving it names the folder
    raise InputError(f"{folder}'s manifest does not say which checkpoint embedded it; pass --model")
