"""Property test: any unicode text embeds without crashing, to a finite unit vector."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=4))
def test_random_unicode_embeds_to_finite_unit_vectors(encoder, batch):
    result = encoder.encode_detailed(batch, show_progress_bar=False)
    assert result.embeddings.shape == (len(batch), 384)
    assert np.isfinite(result.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert all(n >= 2 for n in result.n_tokens)  # at least [CLS] and [SEP]
    assert result.truncated == [n > encoder.max_seq_length for n in result.n_tokens]
