"""Reading a finished shard folder back: its manifest, every shard checked against it (`verify_shards`),
and the ids and vectors in input order (`load_shards`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..base.textio import (
    InputError,
)
from .folder import DamagedShards, shard_problem
from .manifest import MANIFEST, Manifest
from .quantize import STORED_DTYPE, dequantize


def read_manifest(out_dir: str | Path) -> Manifest:
    """The manifest of a shard folder: precision, dim, int8 ranges, shards, rows, skipped lines."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out_dir} is not a minilm shard folder: it has no {MANIFEST}")
    return Manifest.read(path)


def verify_shards(out_dir: str | Path) -> Manifest:
    """Check every listed shard against the manifest (sizes, sha256 of the vectors and the ids). Returns the manifest.

    Raises DamagedShards naming each shard that is missing or differs, and InputError for a folder
    that is not a shard folder.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    problems = [problem for shard in manifest.shards if (problem := shard_problem(out_dir, shard))]
    listed = {name for shard in manifest.shards for name in shard.files()}
    problems += [
        f"{p.name} is not listed in the manifest" for p in sorted(out_dir.glob("part-*")) if p.name not in listed
    ]
    if problems:
        raise DamagedShards(
            f"{out_dir}: {'; '.join(problems)}; rerun the command that embedded it to embed those shards again"
        )
    return manifest


def load_shards(
    out_dir: str | Path, dequantize_vectors: bool = True, allow_incomplete: bool = False
) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings) of a shard folder, in input order, each shard checked against the manifest's sha256.

    float32 comes back as stored; float16, int8 and uint8 come back as (N, dim) float32
    (`minilm.corpus.quantize.dequantize`) unless dequantize_vectors=False. binary and ubinary always come
    back packed, (N, dim / 8) int8 or uint8: compare them with `minilm.corpus.quantize.hamming_distance`
    or `binary_similarity` (quantize the queries with `quantize(q, precision)` first).

    A damaged or missing shard raises DamagedShards naming it; an unfinished run raises InputError
    unless allow_incomplete=True (then the finished shards come back).
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if not manifest.complete and not allow_incomplete:
        raise InputError(
            f"{out_dir} holds an unfinished run ({manifest.rows} rows so far); "
            "rerun the command that embedded it to finish it"
        )
    ids: list[str] = []
    parts = []
    problems = []
    for shard in manifest.shards:
        vectors = (out_dir / shard.file).read_bytes() if (out_dir / shard.file).is_file() else None
        if problem := shard_problem(out_dir, shard, vectors):
            problems.append(problem)
            continue
        parts.append(np.load(io.BytesIO(vectors)))
        ids += json.loads((out_dir / shard.ids).read_bytes())
    if problems:
        raise DamagedShards(
            f"{out_dir}: {'; '.join(problems)}; rerun the command that embedded it to embed those shards again"
        )
    precision = manifest.precision
    width = -(-manifest.dim // 8) if precision in ("binary", "ubinary") else manifest.dim
    stored = np.concatenate(parts) if parts else np.zeros((0, width), dtype=STORED_DTYPE[precision])
    if len(ids) != len(stored) or len(stored) != manifest.rows:
        raise DamagedShards(
            f"{out_dir}: {len(stored)} vectors and {len(ids)} ids where the manifest lists {manifest.rows} rows"
        )
    if dequantize_vectors and precision not in ("float32", "binary", "ubinary"):
        return ids, dequantize(stored, precision, manifest.ranges_array())
    return ids, stored
