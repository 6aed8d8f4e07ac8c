"""Stored precisions (minilm.corpus.quantize, `--precision`): the maths against sentence-transformers'
`quantize_embeddings` and hand-computed cases, the round trip through a shard folder, and the
STS-B cost of each precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from minilm.corpus import CorpusSettings, embed_corpus, load_shards, read_manifest
from minilm.corpus.quantize import (
    STORED_PRECISIONS,
    binary_similarity,
    calibration_ranges,
    dequantize,
    hamming_distance,
    quantize,
)

from conftest import read_stsb, real_lines, write_lines


@pytest.fixture(scope="module")
def stsb_test(encoder) -> tuple[list[float], np.ndarray, np.ndarray]:
    """(gold scores, first sentences' embeddings, second sentences' embeddings) of STS-B test, float32."""
    gold, first, second = read_stsb("test")
    distinct = list(dict.fromkeys(first + second))
    row = {text: i for i, text in enumerate(distinct)}
    vectors = encoder.encode(distinct)
    return gold, vectors[[row[t] for t in first]], vectors[[row[t] for t in second]]


@pytest.mark.slow
def test_quantize_matches_sentence_transformers(stsb_test):
    from sentence_transformers.util.quantization import quantize_embeddings

    _, first, second = stsb_test
    calibration = np.concatenate([first, second])
    ranges = calibration_ranges(calibration)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        ours = quantize(first, precision, ranges)
        theirs = quantize_embeddings(first, precision, calibration_embeddings=calibration)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, precision
        assert np.array_equal(ours, theirs), precision


def test_hand_computed_cases():
    # ranges 0..255 give a step of 1: 3.7 is bucket 3, stored as 3 (uint8) or 3 - 128 (int8), read back as 3.5
    ranges = np.array([[0.0, -1.0], [255.0, 1.0]], dtype=np.float32)
    values = np.array([[3.7, 0.999], [-5.0, 2.0]], dtype=np.float32)  # the second row is clipped
    assert quantize(values, "uint8", ranges).tolist() == [[3, 254], [0, 255]]
    assert quantize(values, "int8", ranges).tolist() == [[3 - 128, 254 - 128], [-128, 127]]
    assert dequantize(quantize(values, "int8", ranges), "int8", ranges)[0, 0] == pytest.approx(3.5)
    # signs 1 0 1 1 0 0 0 0 and 0 0 0 1 0 0 0 1 differ in 3 bits; the ±1 vectors' dot product is 8 - 2 * 3
    a = np.array([[0.5, -1, 2, 0.1, -3, -0.2, 0, -1]], dtype=np.float32)
    b = np.array([[-0.5, -1, -2, 0.1, -3, -0.2, -1, 7]], dtype=np.float32)
    assert quantize(a, "ubinary").tolist() == [[0b10110000]] and quantize(a, "binary").tolist() == [[0b10110000 - 128]]
    assert hamming_distance(quantize(a, "ubinary"), quantize(b, "ubinary")).tolist() == [3]
    assert hamming_distance(quantize(a, "binary"), quantize(b, "binary")).tolist() == [3]
    assert binary_similarity(quantize(a, "binary"), quantize(b, "binary"), dim=8).tolist() == [8 - 2 * 3]
    with pytest.raises(ValueError, match="needs calibration ranges"):
        quantize(values, "int8")


@pytest.mark.slow
@pytest.mark.parametrize("precision", STORED_PRECISIONS)
def test_every_precision_round_trips_through_shards(tmp_path: Path, encoder, precision: str):
    lines = real_lines(300)
    manifest = embed_corpus(
        encoder,
        write_lines(tmp_path / "corpus.txt", lines),
        tmp_path / "out",
        CorpusSettings(shard_rows=100, precision=precision),
    )
    exact = np.concatenate(
        [encoder.encode(lines[i : i + 100]) for i in range(0, 300, 100)]
    )  # the same windows, so the same batches
    ranges = calibration_ranges(exact[:100]) if precision in ("int8", "uint8") else None  # the first shard calibrates
    if ranges is not None:
        assert np.array_equal(manifest.ranges_array(), ranges)
    ids, stored = load_shards(tmp_path / "out", dequantize_vectors=False)
    assert ids == [str(i) for i in range(1, 301)]
    assert np.array_equal(stored, quantize(exact, precision, ranges)) and stored.dtype.name == manifest.identity.dtype
    assert read_manifest(tmp_path / "out").precision == precision
    _, loaded = load_shards(tmp_path / "out")
    if precision in ("binary", "ubinary"):
        assert loaded.shape == (300, 48) and np.array_equal(loaded, stored)  # packed: 384 bits in 48 bytes
        return
    assert loaded.dtype == np.float32 and loaded.shape == (300, 384)
    if ranges is None:
        assert np.abs(loaded - exact).max() <= {"float32": 0.0, "float16": 5e-4}[precision]
        return
    # int8: the middle of each bucket, so within half a step of the value clipped to the first shard's ranges
    half_step = ((ranges[1] - ranges[0]) / 255 / 2).max()
    assert np.abs(loaded - np.clip(exact, ranges[0], ranges[1])).max() <= half_step * 1.001


@pytest.mark.slow
def test_stsb_cost_of_each_precision(stsb_test):
    """STS-B test Spearman × 100 for each stored precision, with ranges calibrated on the whole test set
    (as one shard of it would be). Measured: float32 82.0325, float16 82.0329, int8 82.0313, binary 80.8615;
    the rankings of the similarities agree with float32 to a Spearman of 1.0000 (int8) and 0.986 (binary)."""
    gold, first, second = stsb_test
    ranges = calibration_ranges(np.concatenate([first, second]))
    scores, sims = {}, {}
    for precision in STORED_PRECISIONS:
        a, b = quantize(first, precision, ranges), quantize(second, precision, ranges)
        if precision in ("binary", "ubinary"):
            sims[precision] = binary_similarity(a, b, dim=first.shape[1]).astype(np.float64)
        else:
            a, b = dequantize(a, precision, ranges), dequantize(b, precision, ranges)
            sims[precision] = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        scores[precision] = 100 * spearmanr(gold, sims[precision])[0]
    agreement = {p: spearmanr(sims["float32"], sims[p])[0] for p in STORED_PRECISIONS}
    print({p: (round(scores[p], 4), round(agreement[p], 5)) for p in STORED_PRECISIONS})
    assert scores["float32"] == pytest.approx(82.03, abs=0.01)
    assert abs(scores["float16"] - scores["float32"]) <= 0.01
    for precision in ("int8", "uint8"):
        assert abs(scores[precision] - scores["float32"]) <= 0.05 and agreement[precision] >= 0.999
    for precision in ("binary", "ubinary"):
        assert 0 < scores["float32"] - scores[precision] <= 1.5 and agreement[precision] >= 0.98
