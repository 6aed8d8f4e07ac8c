"""Smaller stored embeddings: float16, int8/uint8 with calibrated ranges, and packed sign bits.

The maths follows sentence-transformers' `quantize_embeddings` (sentence_transformers/util/
quantization.py), so stored vectors are interchangeable with it:

    int8 / uint8      each dimension d is cut into 256 equal buckets between ranges[0, d] (the
                      minimum seen in calibration) and ranges[1, d] (the maximum); values outside
                      are clipped. uint8 stores the bucket 0..255, int8 the bucket minus 128.
    binary / ubinary  one bit per dimension, 1 where the value is > 0, packed 8 to a byte
                      (np.packbits); ubinary stores the bytes as uint8, binary as the byte minus 128.

A 384-d vector takes 1,536 bytes in float32, 768 in float16, 384 in int8 and 48 in binary.
Shapes: N vectors, C dimensions, B = ceil(C / 8) packed bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

# How vectors are stored (--precision), not what the model computes in (that is minilm.model.precision's dtype).
StoredPrecision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]
STORED_PRECISIONS: tuple[StoredPrecision, ...] = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
STORED_DTYPE = {
    "float32": "float32",
    "float16": "float16",
    "int8": "int8",
    "uint8": "uint8",
    "binary": "int8",
    "ubinary": "uint8",
}
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)  # set bits of each byte value


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """(2, C) float32: the per-dimension minimum and maximum of (N, C) calibration embeddings."""
    if len(embeddings) < 2:
        raise ValueError(f"int8 ranges need at least 2 calibration embeddings, got {len(embeddings)}")
    return np.stack([embeddings.min(axis=0), embeddings.max(axis=0)]).astype(np.float32)


def _buckets(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = ranges[0].astype(np.float32)
    steps = (ranges[1].astype(np.float32) - starts) / 255
    return starts, np.where(steps == 0, 1, steps)  # a constant dimension: any step maps it to bucket 0


def quantize(embeddings: np.ndarray, precision: StoredPrecision, ranges: np.ndarray | None = None) -> np.ndarray:
    """(N, C) float embeddings in the stored form of `precision`: (N, C), or (N, B) bytes for the binary ones.

    int8 and uint8 need `ranges` from `calibration_ranges`, the same for every vector that will be
    compared, so a corpus is quantized with one set of ranges.
    """
    if precision in ("float32", "float16"):
        return embeddings.astype(precision)
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ValueError(f"{precision} needs calibration ranges (see calibration_ranges)")
        starts, steps = _buckets(ranges)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)  # (N, C) in 0..255
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)  # (N, B)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(STORED_PRECISIONS)}")


def dequantize(stored: np.ndarray, precision: StoredPrecision, ranges: np.ndarray | None = None) -> np.ndarray:
    """(N, C) float32 from the stored form: exact for float16; for int8/uint8 the middle of each bucket.

    The middle, not the bucket's lower edge (what sentence-transformers' `_dequantize_embeddings`
    returns), so the error is at most half a step instead of a whole one. Binary vectors have no
    magnitude to restore: compare them with `hamming_distance` or `binary_similarity` instead.
    """
    if precision in ("float32", "float16"):
        return stored.astype(np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ValueError(f'{precision} needs the ranges it was quantized with (the manifest\'s "ranges")')
        starts, steps = _buckets(ranges)
        buckets = stored.astype(np.float32) + (128 if precision == "int8" else 0)  # back to 0..255
        return (buckets + 0.5) * steps + starts
    raise ValueError(
        f"{precision} vectors cannot be dequantized; compare them with hamming_distance or binary_similarity"
    )


def _as_ubinary(packed: np.ndarray) -> np.ndarray:
    return (packed.astype(np.int16) + 128).astype(np.uint8) if packed.dtype == np.int8 else packed


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between packed vectors (binary or ubinary), over the last axis; broadcasts.

    Pairs: `hamming_distance(a, b)` with a, b (N, B) gives (N,). All against all:
    `hamming_distance(queries[:, None], corpus[None])` gives (Q, N).
    """
    return _POPCOUNT[np.bitwise_xor(_as_ubinary(a), _as_ubinary(b))].sum(axis=-1, dtype=np.int64)


def binary_similarity(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    """The dot product of the ±1 sign vectors that packed a and b encode: dim - 2 * Hamming distance.

    It ranks like the cosine of the sign vectors (which is this divided by dim).
    """
    return dim - 2 * hamming_distance(a, b)
