"""minilm.serve.metrics on its own: what one batch, one request and the queue put on the /metrics page,
read back with prometheus_client's own parser (the server's use of it is in test_server.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from minilm.serve.batcher import BatchStats
from minilm.serve.metrics import POWERS_OF_TWO, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page: (name, sorted labels) -> value."""
    page = metrics.text().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def test_a_batch_lands_in_its_histograms_by_kind():
    metrics = Metrics()
    metrics.record_batch(BatchStats("embed", texts=5, requests=2, tokens=40, seconds=0.02))
    metrics.record_batch(BatchStats("embed", texts=64, requests=9, tokens=700, seconds=0.3))
    metrics.record_batch(BatchStats("predict", texts=3, requests=1, tokens=0, seconds=1.5))
    page = samples(metrics)
    assert page[("minilm_batch_texts_count", (("kind", "embed"),))] == 2
    assert page[("minilm_batch_texts_sum", (("kind", "embed"),))] == 69
    assert page[("minilm_batch_texts_bucket", (("kind", "embed"), ("le", "8.0")))] == 1  # 5 <= 8 < 64
    assert page[("minilm_batch_texts_bucket", (("kind", "embed"), ("le", "64.0")))] == 2
    assert page[("minilm_batch_requests_sum", (("kind", "embed"),))] == 11
    assert page[("minilm_batch_tokens_sum", ())] == 740  # embedding batches only
    assert page[("minilm_batch_tokens_count", ())] == 2
    assert page[("minilm_batch_duration_seconds_sum", (("kind", "predict"),))] == 1.5
    assert page[("minilm_batch_texts_count", (("kind", "predict"),))] == 1
    buckets = sorted(
        float(dict(k[1])["le"]) for k in page if k[0] == "minilm_batch_texts_bucket" and ("kind", "embed") in k[1]
    )
    assert buckets == [*POWERS_OF_TWO, float("inf")]


def test_requests_rejections_and_inputs_are_counted_by_label():
    metrics = Metrics()
    for code in ("200", "200", "429"):
        metrics.requests.labels("/embed", code).inc()
    metrics.rejections.labels("queue_full").inc()
    metrics.latency.labels("/embed").observe(0.007)
    metrics.inputs.labels("/embed").inc(3)
    metrics.prompt_tokens.inc(21)
    page = samples(metrics)
    assert page[("minilm_requests_total", (("code", "200"), ("endpoint", "/embed")))] == 2
    assert page[("minilm_requests_total", (("code", "429"), ("endpoint", "/embed")))] == 1
    assert page[("minilm_rejections_total", (("reason", "queue_full"),))] == 1
    assert page[("minilm_request_duration_seconds_bucket", (("endpoint", "/embed"), ("le", "0.005")))] == 0
    assert page[("minilm_request_duration_seconds_bucket", (("endpoint", "/embed"), ("le", "0.01")))] == 1
    assert page[("minilm_inputs_total", (("endpoint", "/embed"),))] == 3
    assert page[("minilm_prompt_tokens_total", ())] == 21
    assert not any(name.endswith("_created") for name, _ in page)  # disabled: they would double the page


def test_the_queue_depth_is_read_when_the_page_is_and_each_app_has_its_own_registry():
    depth = [0]
    metrics, other = Metrics(), Metrics()
    metrics.track_queue(lambda: depth[0])
    depth[0] = 7
    assert samples(metrics)[("minilm_queue_depth", ())] == 7
    depth[0] = 2
    assert samples(metrics)[("minilm_queue_depth", ())] == 2
    metrics.rejections.labels("too_large").inc()
    assert ("minilm_rejections_total", (("reason", "too_large"),)) not in samples(other)
