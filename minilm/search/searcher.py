"""Search a folder of vectors (`python -m minilm.embed --output DIR/`, or its `--engine ray` Parquet
folder; search/folders.py reads both): each query's nearest rows, with their ids, texts and spans.

    searcher = Searcher("vectors/")                       # the folder's own model, prompt and settings
    for hit in searcher.search(["how do I reset my password?"], k=5)[0]:
        print(hit.rank, f"{hit.score:.3f}", hit.id, hit.text)

The query is encoded as the folder's rows were: the checkpoint the folder names (or, for a folder that
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
An index beside the folder (minilm.search.index: HNSW, or the rows' bits) picks the candidates instead,
and they are rescored the same way; exact=True ignores it.

A folder is read as `load_shards` reads it: the manifest checked field by field and, with verify, each
listed part against its sha256. An unfinished folder is searched as far as it is written, and says so
(`notes`). A folder whose input file has changed since is refused: its rows are stale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..base.textio import InputError
from ..corpus.quantize import quantize
from ..corpus.shards import input_fingerprint
from ..encoders.cross_encoder import CrossEncoder
from ..encoders.sentence_encoder import SentenceEncoder
from ..weights import KNOWN_CHECKPOINTS
from .folders import VectorFolder, open_folder
from .hamming import BITS_CHUNK_ROWS, column_words, nearest_by_bits
from .index import DEFAULT_EXPANSION_SEARCH, INDEX_JSON, FolderIndex
from .topk import CHUNK_ROWS, TopK, top_k
from .vectors import as_unit_floats, normalized

# k x this many candidates are rescored. Binary index + float32 rescoring over 1,000,000 rows, recall@10
# against exact float32: 0.91 at 10, 0.96 at 20, 0.98 at 40 (docs/search.md); 20 costs 1.3x 10's lookup.
DEFAULT_RESCORE_MULTIPLIER = 20
# An HNSW graph ranks the candidates it keeps by its own distances, near the float32 ones (i8 and f16 alike
# put the true top 10 within their first 20 over 150,000 rows of the 1M-line corpus), so fewer need rescoring.
GRAPH_RESCORE_MULTIPLIER = 4


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
        rescore_multiplier: int | None = None,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        device: str | None = None,
        exact: bool = False,
    ):
        """rescore_multiplier: k x this many candidates are rescored (None: GRAPH_RESCORE_MULTIPLIER with an HNSW
        index, DEFAULT_RESCORE_MULTIPLIER otherwise); expansion_search: the candidates an HNSW search keeps (ef)."""
        self.folder = Path(folder)
        self.source = open_folder(self.folder, verify)  # a shard folder, or a Ray Parquet folder
        self.notes = list(self.source.notes)
        self.expansion_search = expansion_search
        self._check_input()
        # the pins are not needed: the checkpoint's files must hash as the folder records (_check_encoder)
        self.encoder = encoder or SentenceEncoder.from_pretrained(
            model or folder_model(self.source),
            device=device,
            dtype=self.source.compute_dtype,
            verify=False,
        )
        self._check_encoder()
        # the index beside the vectors, when there is one and exact search is not asked for
        has_index = (self.folder / INDEX_JSON).exists()
        self.index = FolderIndex(self.folder, self.source, verify) if has_index and not exact else None
        if rescore_multiplier is None:
            graph = self.index is not None and self.index.info.kind == "hnsw"
            rescore_multiplier = GRAPH_RESCORE_MULTIPLIER if graph else DEFAULT_RESCORE_MULTIPLIER
        self.rescore_multiplier = rescore_multiplier

    # ------------------------------------------------------------------ checks

    def _check_input(self) -> None:
        fingerprint = self.source.input or {}
        path = Path(fingerprint["path"]) if "sha256" in fingerprint else None  # a local input file, fingerprinted
        if path is not None and path.is_file() and input_fingerprint(path) != fingerprint:
            raise InputError(
                f"{path} has changed since {self.folder} was embedded from it, so its rows are stale; "
                f"embed it again (python -m minilm.embed --input {path} --output {self.folder}/ --force)"
            )

    def _check_encoder(self) -> None:
        recorded = self.source.model_files
        own = self.encoder.checkpoint.file_hashes if self.encoder.checkpoint else {}
        if recorded and own != recorded:
            differing = sorted(n for n in {*own, *recorded} if own.get(n) != recorded.get(n))
            raise InputError(
                f"{self.folder} was embedded with another checkpoint ({', '.join(differing[:3])} differ"
                f"{' from ' + str(self.encoder.folder) if self.encoder.folder else ''}); search it with its own model"
            )
        if self.encoder.dim != self.source.dim:
            raise InputError(f"{self.folder} holds {self.source.dim}-d vectors; this model gives {self.encoder.dim}-d")

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
            wide = min(wide * 4, self.source.rows)
            hits, seen = [], set()
            for hit in self.search_vectors(query, wide)[0]:
                if hit.id not in seen:
                    seen.add(hit.id)
                    hits.append(hit)
            if len(hits) >= k or wide >= self.source.rows:
                return [replace(hit, rank=rank) for rank, hit in enumerate(hits[:k], 1)]

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """search, for (Q, C) float query vectors already encoded (unit length)."""
        precision = self.source.precision
        if self.index is not None:  # the index picks candidates, their stored vectors rank them
            wide = min(k * max(self.rescore_multiplier, 1), self.source.rows)
            scores, rows = self._rescore(queries, self.index.candidates(queries, wide, self.expansion_search), k)
        elif precision in ("float32", "float16"):
            scores, rows = self._stream(queries, k, precision)
        else:
            wide = k * self.rescore_multiplier if self.rescore_multiplier else k
            scores, rows = self._stream(queries, wide, precision)
            if self.rescore_multiplier:
                scores, rows = self._rescore(queries, rows, k)
        return [self._hits(s, r) for s, r in zip(scores, rows)]

    def _stream(self, queries: np.ndarray, k: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
        """Every stored row scored against the queries, a chunk at a time: the k best of each."""
        if precision in ("binary", "ubinary"):  # Hamming distance h, as the cosine of signs 1 - 2h/C
            chunks = ((start, column_words(bits)) for start, bits in self.source.chunks(BITS_CHUNK_ROWS))
            return nearest_by_bits(quantize(queries, precision), chunks, self.source.dim, k)
        if precision in ("int8", "uint8"):  # the quantized query against the stored buckets
            queries = quantize(queries, precision, self.source.ranges).astype(np.float32)
        best = TopK(len(queries), k)
        for start, chunk in self.source.chunks(CHUNK_ROWS):
            if precision in ("int8", "uint8"):
                chunk = chunk.astype(np.float32)
            elif precision == "float16" or not self.source.normalized:  # unit float32 rows: as read
                chunk = normalized(chunk.astype(np.float32))
            best.add(queries @ chunk.T, start)
        return best.result()

    def _rescore(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The float queries against their candidates' stored vectors (dequantized, or their signs)."""
        unique = np.unique(rows[rows >= 0])  # -1: a place the index left empty
        vectors = self._rescoring_vectors(unique)  # one read of every candidate, whichever queries share it
        candidates = vectors[np.searchsorted(unique, np.maximum(rows, 0)).clip(max=len(unique) - 1)]  # (Q, wide, C)
        scores = np.einsum("qc,qwc->qw", queries, candidates).astype(np.float32)
        scores[rows < 0] = -np.inf
        scores, rows = top_k(scores, rows, k)
        if np.isinf(scores).any():  # fewer candidates than k: keep each query's real ones
            return [s[np.isfinite(s)] for s in scores], [r[np.isfinite(s)] for s, r in zip(scores, rows)]
        return scores, rows

    def _rescoring_vectors(self, rows: np.ndarray) -> np.ndarray:
        source = self.source
        return as_unit_floats(source.stored(rows), source.precision, source.dim, source.ranges)

    # ------------------------------------------------------------------ hits

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        hits = []
        for rank, (score, row) in enumerate(zip(scores, rows), 1):
            id_, text, span = self.source.labels_of(int(row))
            hits.append(Hit(rank, float(score), id_, text, int(row), span))
        return hits


def folder_model(source: VectorFolder) -> str:
    """The checkpoint a folder was embedded with: the folder it records while it is there, else the known
    checkpoint with the weights hash it records."""
    if source.model and Path(source.model).is_dir():
        return source.model
    for known in KNOWN_CHECKPOINTS.values():
        if known.pins["model.safetensors"].sha256 == source.model_sha256:
            return known.name
    if source.model:
        return source.model  # gone: resolving it names the folder
    raise InputError(f"{source.folder} does not say which checkpoint embedded it; pass --model")
