"""Stored vectors as unit float32, whatever precision a shard folder keeps: what search scores and
rescores with, and what an index is built from."""

from __future__ import annotations

import numpy as np

from ..corpus.quantize import dequantize


def as_unit_floats(stored: np.ndarray, precision: str, dim: int, ranges: np.ndarray | None) -> np.ndarray:
    """Stored vectors as unit float32: floats normalized, int8 dequantized, binary as their signs over sqrt(C)."""
    if precision in ("binary", "ubinary"):
        return unpacked_signs(stored, dim) / np.sqrt(dim)
    return normalized(dequantize(np.asarray(stored), precision, ranges))


def normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def unpacked_signs(packed: np.ndarray, dim: int) -> np.ndarray:
    """(n, B) packed bits (binary or ubinary) -> (n, C) float32 of +1 (bit set) and -1."""
    as_bytes = packed.astype(np.int16) + 128 if packed.dtype == np.int8 else packed
    bits = np.unpackbits(as_bytes.astype(np.uint8), axis=1)[:, :dim]
    return bits.astype(np.float32) * 2 - 1
