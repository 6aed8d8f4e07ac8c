"""Tier 2: real all-MiniLM-L6-v2 weights against sentence-transformers on the same files, fp32 on CPU.

Tolerances come from the encoder issue: sentence embeddings within 1e-6, token embeddings within
1e-5. For scale, sentence-transformers' own eager and SDPA attention paths differ by 1.8e-7.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_stsb

SENTENCE_TOL = 1e-6
TOKEN_TOL = 1e-5

EDGE_TEXTS = [
    "",
    " ",
    "\t\n  \r\n",
    "Crème brûlée à la façon de Zoë, naïve café",
    "北京是中国的首都。東京は日本の首都です。서울은 한국의 수도입니다.",
    "I love it 😀🔥👍🏽 — really! 🇫🇷",
    "control\x00chars\x07here\x1b[0m and\u200bzero\u200dwidth\ufeff",
    "Ünïcödé ÀÉÎÕÜ ǅ ﬁ ligatures ＦＵＬＬＷＩＤＴＨ",
    "token " * 400,  # far over 256 tokens: truncated
    "The quick brown fox. " * 60,
    "a",
    "word " * 253,  # exactly 255 tokens with [CLS] and [SEP]
]


@pytest.fixture(scope="module")
def reference_outputs(reference, stsb_sentences):
    """One sentence-transformers pass over all STS-B sentences: normalized sentence and per-token vectors."""
    outputs = reference.encode(stsb_sentences, batch_size=32, output_value=None, show_progress_bar=False)
    sentences = np.stack([o["sentence_embedding"].numpy() for o in outputs])
    tokens = [o["token_embeddings"][o["attention_mask"].bool()].numpy() for o in outputs]
    return sentences, tokens


@pytest.mark.slow
def test_stsb_sentence_embeddings_match_sentence_transformers(encoder, reference_outputs, stsb_sentences):
    ours = encoder.encode(stsb_sentences, batch_size=32, show_progress_bar=False)
    expected, _ = reference_outputs
    assert ours.shape == expected.shape == (len(stsb_sentences), 384)
    assert ours.dtype == np.float32
    max_delta = float(np.abs(ours - expected).max())
    print(f"STS-B sentence embeddings: {len(stsb_sentences)} sentences, max |delta| = {max_delta:.3e}")
    assert max_delta <= SENTENCE_TOL


@pytest.mark.slow
def test_stsb_token_embeddings_match_sentence_transformers(encoder, reference_outputs, stsb_sentences):
    ours = encoder.encode_tokens(stsb_sentences, batch_size=32, show_progress_bar=False)
    _, expected = reference_outputs
    assert [o.shape for o in ours] == [e.shape for e in expected]
    max_delta = max(float(np.abs(o - e).max()) for o, e in zip(ours, expected))
    print(f"STS-B token embeddings: max |delta| = {max_delta:.3e}")
    assert max_delta <= TOKEN_TOL


def test_edge_cases_match_sentence_transformers(encoder, reference):
    ours = encoder.encode(EDGE_TEXTS, show_progress_bar=False)
    expected = reference.encode(EDGE_TEXTS, show_progress_bar=False)
    assert float(np.abs(ours - expected).max()) <= SENTENCE_TOL
    # truncation is identical: the same ids, cut at 256
    for text in EDGE_TEXTS:
        expected_ids = reference.preprocess([text])["input_ids"][0].tolist()
        encodings, _ = encoder.tokenizer.encode([text])
        assert encodings[0].ids == expected_ids
    result = encoder.encode_detailed(EDGE_TEXTS, show_progress_bar=False)
    assert result.n_tokens[0] == result.n_tokens[1] == result.n_tokens[2] == 2  # empty and blank: [CLS] [SEP]
    assert result.n_tokens[EDGE_TEXTS.index("token " * 400)] == 402
    assert result.n_tokens[-1] == 255
    assert result.truncated == [n > 256 for n in result.n_tokens]
    assert sum(result.truncated) == 2


def test_mixed_1_and_255_token_batch_matches(encoder, reference):
    texts = ["a", "word " * 253, "b", "word " * 200 + "end", "hi"] * 4
    ours = encoder.encode(texts, batch_size=20, show_progress_bar=False)
    expected = reference.encode(texts, batch_size=20, show_progress_bar=False)
    assert float(np.abs(ours - expected).max()) <= SENTENCE_TOL


@pytest.mark.slow
def test_a_sentence_alone_equals_it_inside_a_mixed_batch(encoder, stsb_sentences):
    batch = [stsb_sentences[i] for i in range(0, 64 * 37, 37)]
    batch[5] = "token " * 300  # one long, truncated text among short ones
    alone = np.stack([encoder.encode(text) for text in batch[:8]])
    together = encoder.encode(batch, batch_size=64, show_progress_bar=False)
    assert together.shape == (64, 384)
    assert float(np.abs(alone - together[:8]).max()) <= 1e-6


def test_seed_demo_cosines(encoder):
    dog, sky, cat = encoder.encode(
        ["The dog ran across the grass.", "Why is the sky blue?", "The cat jumped into the weeds."]
    )
    assert round(float(dog @ cat), 6) == 0.376084
    assert round(float(dog @ sky), 6) == 0.069512
    assert round(float(sky @ cat), 6) == 0.021868


@pytest.mark.slow
def test_stsb_test_spearman_is_82_03(encoder):
    from scipy.stats import spearmanr

    scores, first, second = read_stsb("test")
    a = encoder.encode(first, show_progress_bar=False)
    b = encoder.encode(second, show_progress_bar=False)
    spearman = 100 * spearmanr((a * b).sum(axis=1), scores).statistic
    print(f"STS-B test Spearman x 100 = {spearman:.4f}")
    assert spearman == pytest.approx(82.03, abs=0.01)


def test_similarity_api_matches_sentence_transformers(encoder, reference):
    a = ["A man is playing a guitar.", "A woman slices an onion."]
    b = ["Someone plays music.", "Food is being prepared.", "The sky is blue."]
    expected = reference.similarity(reference.encode(a), reference.encode(b)).numpy()
    assert encoder.similarity(a, b).shape == (2, 3)
    assert float(np.abs(encoder.similarity(a, b) - expected).max()) <= 1e-6
    assert encoder.similarity(a[0], b[0]) == pytest.approx(float(expected[0, 0]), abs=1e-6)


def test_cls_and_max_pooling_from_token_states(encoder):
    texts = ["Pooling picks one vector per sentence.", "short"]
    tokens = encoder.encode_tokens(texts)
    cls = encoder.encode(texts, pooling="cls", normalize=False)
    mx = encoder.encode(texts, pooling="max", normalize=False)
    mean = encoder.encode(texts, pooling="mean", normalize=False)
    for i, states in enumerate(tokens):
        np.testing.assert_allclose(cls[i], states[0], atol=1e-6)
        np.testing.assert_allclose(mx[i], states.max(axis=0), atol=1e-6)
        np.testing.assert_allclose(mean[i], states.mean(axis=0), atol=1e-6)
    normalized = encoder.encode(texts, pooling="cls")
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)
