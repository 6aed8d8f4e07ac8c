"""Stored vectors as unit float32, whatever precision a shard folder keeps: what search scores and
rescores with, and what an index is built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..corpus.manifest import Manifest, Shard
from ..corpus.quantize import dequantize


def as_unit_floats(stored: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Stored vectors as unit float32: floats normalized, int8 dequantized, binary as their signs over sqrt(C)."""
    if manifest.precision in ("binary", "ubinary"):
        return unpacked_signs(stored, manifest.dim) / np.sqrt(manifest.dim)
    return normalized(dequantize(stored, manifest.precision, manifest.ranges_array()))


def stored_float_rows(folder: Path, manifest: Manifest, shard: Shard) -> np.ndarray:
    """A whole shard's rows as unit float32 (as_unit_floats): what an index is built from."""
    return as_unit_floats(np.load(folder / shard.file), manifest)


def normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def unpacked_signs(packed: np.ndarray, dim: int) -> np.ndarray:
    """(n, B) packed bits (binary or ubinary) -> (n, C) float32 of +1 (bit set) and -1."""
    as_bytes = packed.astype(np.int16) + 128 if packed.dtype == np.int8 else packed
    bits = np.unpackbits(as_bytes.astype(np.uint8), axis=1)[:, :dim]
    return bits.astype(np.float32) * 2 - 1
