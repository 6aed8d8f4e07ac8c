"""The server's Prometheus metrics (prometheus_client), in a registry of their own per app.

GET /metrics serves them in Prometheus' text format:
    minilm_requests_total{endpoint, code}            requests answered, by HTTP status
    minilm_request_duration_seconds{endpoint}        latency histogram, request in to response out
    minilm_rejections_total{reason}                  every error answer: invalid (422), too_large (413),
                                                     timeout (408), not_found (404, 405), queue_full (429),
                                                     unavailable (503)
    minilm_batch_texts{kind}                         texts per encoder batch (embed) or per chunk (predict)
    minilm_batch_requests{kind}                      distinct requests per batch: above 1, clients shared a pass
    minilm_batch_tokens                              real tokens per embedding batch
    minilm_batch_duration_seconds{kind}              model time per batch
    minilm_queue_depth                               requests holding a place in the queue (headers in, answer not out)
    minilm_inputs_total, minilm_prompt_tokens_total  texts embedded or predicted, and their tokens
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from .batcher import BatchStats

POWERS_OF_TWO = tuple(float(2**k) for k in range(11))  # 1 .. 1024
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


disable_created_metrics()  # no *_created series: they double the page and no dashboard reads them


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("minilm_requests", "Requests answered", ["endpoint", "code"], registry=r)
        self.latency = Histogram(
            "minilm_request_duration_seconds", "Request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.rejections = Counter("minilm_rejections", "Requests refused before the model", ["reason"], registry=r)
        self.batch_texts = Histogram(
            "minilm_batch_texts", "Texts per encoder batch", ["kind"], buckets=POWERS_OF_TWO, registry=r
        )
        self.batch_requests = Histogram(
            "minilm_batch_requests", "Distinct requests per encoder batch", ["kind"], buckets=POWERS_OF_TWO, registry=r
        )
        self.batch_tokens = Histogram(
            "minilm_batch_tokens",
            "Real tokens per embedding batch",
            buckets=tuple(float(2**k) for k in range(4, 16)),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "minilm_batch_duration_seconds", "Model time per batch", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "minilm_queue_depth", "Requests holding a place in the queue: headers in, answer not yet out", registry=r
        )
        self.inputs = Counter("minilm_inputs", "Texts embedded or predicted", ["endpoint"], registry=r)
        self.prompt_tokens = Counter("minilm_prompt_tokens", "Tokens of the embedded texts", registry=r)

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def record_batch(self, stats: BatchStats) -> None:
        self.batch_texts.labels(stats.kind).observe(stats.texts)
        self.batch_requests.labels(stats.kind).observe(stats.requests)
        self.batch_seconds.labels(stats.kind).observe(stats.seconds)
        if stats.kind == "embed":
            self.batch_tokens.observe(stats.tokens)

    def text(self) -> bytes:
        return generate_latest(self.registry)
