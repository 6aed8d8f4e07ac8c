"""python -m minilm.serve as a real process on 127.0.0.1 and a free port, called over HTTP.

References: `SentenceEncoder.encode` for every vector (the official openai client included), the
heads' `MultiTaskPredictor.predict` for /predict, the tokenizer for /tokenize.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # each server loads the encoder and the heads and warms up (about 5 s)

MODEL = "all-MiniLM-L6-v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m minilm.serve` subprocess; `url` once /health answers 200."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.terminated = False
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minilm.serve", "--port", str(self.port), *args],
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.proc.kill()
        raise AssertionError("the server did not become healthy in 120 s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def post(self, path: str, body, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=120, **kwargs)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def terminate(self) -> None:
        """SIGTERM, once: a second one stops the server without draining."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        self.terminate()
        code = self.proc.wait(timeout=60)
        if code != 0:
            print(self.output())
        self.log.close()
        return code


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0


def long_text(sentences: list[str]) -> str:
    return " ".join(sentences[:40])  # about 500 tokens


# ---------------------------------------------------------------------------- OpenAI and TEI shapes


def test_the_openai_client_gets_encodes_vectors_as_floats_and_as_base64(server, encoder, stsb_sentences):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    texts = stsb_sentences[:20]
    expected = encoder.encode(texts)
    _, n_tokens = encoder.tokenizer.encode(texts)
    # the client's default asks for base64 and decodes it itself; "float" is JSON numbers; an explicit
    # "base64" hands the caller the strings: little-endian float32 bytes
    for encoding_format in (None, "float", "base64"):
        extra = {"encoding_format": encoding_format} if encoding_format else {}
        response = client.embeddings.create(model=MODEL, input=texts, **extra)
        if encoding_format == "base64":
            got = np.array([np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in response.data])
        else:
            got = np.array([item.embedding for item in response.data], dtype=np.float32)
        assert [item.index for item in response.data] == list(range(20))
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(n_tokens)
        assert response.model == MODEL
    single = client.embeddings.create(model=f"sentence-transformers/{MODEL}", input=texts[0])  # the hub id works too
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=1e-6, rtol=0)
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_openai_dimensions_truncates_then_renormalizes_and_bad_values_are_refused(server, encoder, stsb_sentences):
    texts = stsb_sentences[:5]
    got = np.array(
        [
            d["embedding"]
            for d in server.post("/v1/embeddings", {"model": MODEL, "input": texts, "dimensions": 64}).json()["data"]
        ]
    )
    cut = encoder.encode(texts)[:, :64]
    np.testing.assert_allclose(got, cut / np.linalg.norm(cut, axis=1, keepdims=True), atol=1e-6, rtol=0)
    for bad in (0, 385, "64"):
        r = server.post("/v1/embeddings", {"model": MODEL, "input": texts, "dimensions": bad})
        assert r.status_code == 422 and r.json()["error"]["param"] == "dimensions", r.text


def test_long_texts_are_truncated_as_encode_does_and_reported_never_silently(server, encoder, stsb_sentences):
    text = long_text(stsb_sentences)
    texts = [stsb_sentences[0], text]
    expected = encoder.encode(texts)
    r = server.post("/v1/embeddings", {"model": MODEL, "input": texts})
    assert r.status_code == 200 and r.headers["x-truncated-inputs"] == "1"
    assert [d["truncated"] for d in r.json()["data"]] == [False, True]
    np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], expected, atol=1e-6, rtol=0)
    refused = server.post("/v1/embeddings", {"model": MODEL, "input": texts, "truncate": False})
    assert refused.status_code == 422 and "input 1 is over" in refused.json()["error"]["message"]
    # TEI: truncate defaults to false, so the long text is a 422 naming it; truncate=true embeds and reports it
    tei = server.post("/embed", {"inputs": texts})
    assert tei.status_code == 422 and tei.json()["error_type"] == "Validation" and "input 1" in tei.json()["error"]
    tei = server.post("/embed", {"inputs": texts, "truncate": True})
    assert tei.headers["x-truncated-inputs"] == "1"
    np.testing.assert_allclose(tei.json(), expected, atol=1e-6, rtol=0)


def test_tei_embed_normalize_and_a_single_string(server, encoder, stsb_sentences):
    texts = stsb_sentences[30:36]
    raw = server.post("/embed", {"inputs": texts, "normalize": False}).json()
    np.testing.assert_allclose(raw, encoder.encode(texts, normalize=False), atol=1e-5, rtol=1e-6)
    one = server.post("/embed", {"inputs": texts[0]}).json()
    assert len(one) == 1
    np.testing.assert_allclose(one[0], encoder.encode(texts[0]), atol=1e-6, rtol=0)
    r = server.post("/embed", {"inputs": texts, "truncation_direction": "Left"})
    assert r.status_code == 422 and "truncation_direction" in r.json()["error"]


def test_tokenize_gives_the_tokens_the_encoder_sees_with_offsets(server, encoder):
    text = "Who founded Apple in California?"
    tokens = server.post("/tokenize", {"inputs": text}).json()[0]
    encoding = encoder.tokenizer.encode([text])[0][0]
    assert [t["id"] for t in tokens] == encoding.ids
    assert [t["text"] for t in tokens] == encoding.tokens
    assert [text[t["start"] : t["stop"]] for t in tokens[1:-1]] == ["Who", "founded", "Apple", "in", "California", "?"]
    assert tokens[0]["special"] and tokens[0]["start"] is None and not tokens[1]["special"]
    bare = server.post("/tokenize", {"inputs": [text], "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in bare] == encoding.ids[1:-1]


def test_predict_equals_the_heads_on_the_same_texts(server, stsb_sentences):
    from pydantic import TypeAdapter

    from heads.predictor import MultiTaskPredictor
    from minilm.serve.schemas import Prediction

    texts = ["Who founded Apple in California?", "What a dull, lifeless film.", *stsb_sentences[:10]]
    expected = MultiTaskPredictor.from_folder().predict(texts, with_embedding=True, show_progress_bar=False)
    got = server.post("/predict", {"inputs": texts, "with_embedding": True}).json()
    TypeAdapter(list[Prediction]).validate_python(got, strict=True)  # the shape /docs shows
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["text"] == e["text"]
        for task in ("question_type", "sentiment"):
            assert g[task]["label"] == e[task]["label"] and abs(g[task]["score"] - e[task]["score"]) <= 2e-6
        assert [(x["text"], x["label"], x["start"], x["end"]) for x in g["entities"]] == [
            (x["text"], x["label"], x["start"], x["end"]) for x in e["entities"]
        ]
        np.testing.assert_allclose(g["embedding"], e["embedding"], atol=1e-6, rtol=0)
    assert "embedding" not in server.post("/predict", {"inputs": texts[0]}).json()[0]


# ---------------------------------------------------------------------------- load, batching, bad input


def test_64_concurrent_clients_each_get_their_own_vectors_in_order_and_share_batches(server, encoder, stsb_sentences):
    rng = random.Random(0)
    long = long_text(stsb_sentences[500:])
    requests = []
    for k in range(192):
        if k == 77:
            requests.append([stsb_sentences[k], long])  # over 256 tokens, among the others
        elif k % 3 == 0:
            requests.append(stsb_sentences[k])  # a single string
        else:
            requests.append(rng.sample(stsb_sentences, rng.randint(1, 12)))
    expected = {k: encoder.encode([r] if isinstance(r, str) else r) for k, r in enumerate(requests)}
    before = batch_histogram(server.metrics())
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client:

        def call(k: int) -> tuple[int, list]:
            body = {"model": MODEL, "input": requests[k]}
            r = client.post(f"{server.url}/v1/embeddings", json=body)
            assert r.status_code == 200, r.text
            return k, [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]

        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(len(requests))))
    for k, vectors in results:
        np.testing.assert_allclose(vectors, expected[k], atol=1e-6, rtol=0, err_msg=f"request {k}")
    after = batch_histogram(server.metrics())
    batches = after["count"] - before["count"]
    single = after["le_1"] - before["le_1"]  # batches that held one request's texts only
    assert batches > 0 and single < batches, (before, after)  # some batches held several clients' texts
    assert batches < len(requests)  # fewer encoder passes than requests


def batch_histogram(text: str) -> dict[str, float]:
    """minilm_batch_requests{kind="embed"}: how many batches, and how many held a single request."""
    count = float(re.search(r'^minilm_batch_requests_count\{kind="embed"\} (\S+)$', text, re.M).group(1))
    le_1 = float(re.search(r'^minilm_batch_requests_bucket\{kind="embed",le="1\.0"\} (\S+)$', text, re.M).group(1))
    return {"count": count, "le_1": le_1}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "all-MiniLM-L6-v2", "input": ["a", ', "not valid JSON"),
        ({"model": MODEL, "input": 5}, "input: must be a string or a list of strings, got a number"),
        ({"model": MODEL, "input": [None]}, "input: item 0 is null, expected a string"),
        ({"model": MODEL, "input": []}, "input: is an empty list"),
        ({"model": MODEL, "input": [[101, 2023]]}, "token-id input is not supported"),
        ({"input": "a"}, "model: is required"),
        ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "a", "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"model": MODEL, "input": "\ud800"}, "not valid Unicode"),
        ({"model": "text-embedding-3-small", "input": "a"}, "is not served here"),
    ],
)
def test_malformed_bodies_get_one_line_openai_errors_and_the_server_stays_up(server, body, expected):
    if isinstance(body, bytes):
        r = httpx.post(f"{server.url}/v1/embeddings", content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(
            f"{server.url}/v1/embeddings", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert r.status_code in (404, 422), r.text
    error = r.json()["error"]
    assert expected in error["message"] and "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "expected"),
    [
        ("GET", "/v1/nope", None, 404, "there is no route /v1/nope"),
        ("GET", "/embed", None, 405, "GET is not allowed on /embed; use POST"),
        ("POST", "/embed", b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", 422, "could not be read as JSON"),
        ("POST", "/v1/embeddings", b'{"model": "\xff\xfe", "input": "a"}', 422, "could not be read as JSON"),
        ("POST", "/embed", b'"just a string"', 422, "the body must be a JSON object"),
    ],
)
def test_routing_and_parsing_errors_come_in_the_callers_shape_too(server, method, path, content, status, expected):
    r = httpx.request(method, f"{server.url}{path}", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert expected in (error["message"] if path.startswith("/v1/") else error), r.text
    assert httpx.head(f"{server.url}/health").status_code == 200


def test_bodies_and_requests_over_the_limits_get_413_and_the_server_stays_up(server, encoder):
    big = b'{"model": "all-MiniLM-L6-v2", "input": ["' + b"a" * (20 * 2**20) + b'"]}'  # 20 MB
    r = httpx.post(f"{server.url}/v1/embeddings", content=big, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]["message"]
    huge = "a " * (8 * 2**20 - 100)  # 16 MB of one-letter words: read only as far as the model needs
    r = server.post("/embed", {"inputs": [huge], "truncate": True})
    assert r.status_code == 200 and r.headers["x-truncated-inputs"] == "0"
    np.testing.assert_allclose(r.json(), encoder.encode(["a " * 1000]), atol=1e-6, rtol=0)
    r = server.post("/embed", {"inputs": ["a"] * 2049})
    assert r.status_code == 413 and "--max-request-inputs" in r.json()["error"], r.text
    r = server.post("/embed", {"inputs": ["a short text"] * 2048})  # at the limit: split over batches, answered
    assert r.status_code == 200 and len(r.json()) == 2048
    assert httpx.get(f"{server.url}/health").status_code == 200
    page = server.metrics()
    assert re.search(r'^minilm_rejections_total\{reason="too_large"\} [1-9]', page, re.M)
    assert re.search(r'^minilm_rejections_total\{reason="invalid"\} [1-9]', page, re.M)
    assert re.search(r"^minilm_request_duration_seconds_bucket\{endpoint=\"/embed\"", page, re.M)
    assert re.search(r"^minilm_queue_depth 0\.0$", page, re.M)


# ---------------------------------------------------------------------------- overload and shutdown


def test_a_tiny_queue_answers_429_with_retry_after_and_serves_afterwards(encoder, stsb_sentences):
    server = Server("--max-queue", "2", "--no-heads")
    try:
        texts = [long_text(stsb_sentences[40 * k :]) for k in range(16)]

        def call(k: int) -> httpx.Response:
            return server.post("/embed", {"inputs": texts, "truncate": True})

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(call, range(24)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) >= 2, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1" and refused.json()["error_type"] == "Overloaded"
        ok = next(r for r in responses if r.status_code == 200)
        np.testing.assert_allclose(ok.json(), encoder.encode(texts), atol=1e-6, rtol=0)
        assert server.post("/embed", {"inputs": "still serving"}).status_code == 200
        assert server.post("/predict", {"inputs": "a"}).status_code == 404  # --no-heads
        # /tokenize takes a place in the queue too (it got 200 while embeddings got 429): hold both places
        # with two requests whose bodies have not arrived (a place is taken at the headers), then ask it
        head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        for holder in holders:
            holder.sendall(head.encode() + b'{"in')
        deadline = time.monotonic() + 60
        while not re.search(r"^minilm_queue_depth 2\.0$", server.metrics(), re.M):
            assert time.monotonic() < deadline, server.metrics()
            time.sleep(0.05)
        r = server.post("/tokenize", {"inputs": "a"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        for holder in holders:  # they go away: their places are given back
            holder.close()
    finally:
        assert server.stop() == 0


def test_sigterm_during_load_answers_every_request_in_flight_then_exits_0(encoder, stsb_sentences):
    server = Server("--no-heads")
    texts = [long_text(stsb_sentences[40 * k :]) for k in range(16)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(server.post, "/embed", {"inputs": texts, "truncate": True}) for _ in range(8)]
        deadline = time.monotonic() + 60
        while not re.search(r"^minilm_queue_depth 8\.0$", server.metrics(), re.M):  # all eight admitted
            assert time.monotonic() < deadline, server.metrics()
            time.sleep(0.05)
        server.terminate()
        responses = [f.result() for f in futures]
    assert server.stop() == 0
    assert [r.status_code for r in responses] == [200] * 8
    np.testing.assert_allclose(responses[-1].json(), encoder.encode(texts), atol=1e-6, rtol=0)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=2)


def test_a_second_sigterm_stops_at_once_with_143_and_abandoned_clients_are_dropped(encoder, stsb_sentences):
    server = Server("--no-heads")
    texts = [long_text(stsb_sentences[40 * k :]) for k in range(32)]
    # 24 requests whose clients give up after 0.2 s: their work is dropped, not computed for nobody
    body = {"inputs": texts, "truncate": True}
    with ThreadPoolExecutor(24) as pool:
        give_up = [pool.submit(httpx.post, f"{server.url}/embed", json=body, timeout=0.2) for _ in range(24)]
        for f in give_up:
            with pytest.raises(httpx.TimeoutException):
                f.result()
    started = time.monotonic()
    r = server.post("/embed", {"inputs": "after the crowd left"})
    assert r.status_code == 200 and time.monotonic() - started < 20  # not behind 24 x 32 abandoned long texts
    assert re.search(r"^minilm_queue_depth 0\.0$", server.metrics(), re.M)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(server.post, "/embed", {"inputs": texts * 4, "truncate": True}) for _ in range(4)]
        time.sleep(1.0)
        server.terminate()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 143
        outcomes = []
        for f in futures:  # dropped ones are connection errors, never a 500
            try:
                outcomes.append(f.result().status_code)
            except httpx.TransportError:
                outcomes.append("dropped")
    assert "dropped" in outcomes and set(outcomes) <= {200, "dropped"}, outcomes
    assert "again: stopping without draining" in server.output() and "Traceback" not in server.output()
    server.log.close()


def test_a_port_in_use_is_one_error_line_and_exit_2_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "minilm.serve", "--port", str(port)], cwd=ROOT, capture_output=True, text=True
        )
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}"), proc.stderr


def test_a_bad_model_is_one_error_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minilm.serve", "--model", str(tmp_path / "absent"), "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr


def test_prompts_the_server_default_and_tei_prompt_name(tmp_path, checkpoint_dir, stsb_sentences):
    """An e5-style checkpoint (prompts "query: " and "passage: "), served with --prompt-name query:
    OpenAI requests get the query prompt, TEI's prompt_name picks another, an unknown one is a 422."""
    from minilm import SentenceEncoder

    from test_model_families import FAMILIES, write_family

    folder = write_family(tmp_path / "e5", checkpoint_dir, FAMILIES["e5-small-v2"] | {"layers": 2})
    encoder = SentenceEncoder.from_pretrained(str(folder), verify=False)
    texts = stsb_sentences[:20]
    s = Server("--model", str(folder), "--no-verify", "--no-heads", "--prompt-name", "query")
    try:
        openai = s.post("/v1/embeddings", {"input": texts, "model": str(folder)})
        assert openai.status_code == 200, openai.text
        got = np.array([item["embedding"] for item in openai.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, encoder.encode(texts, prompt_name="query"), atol=1e-6, rtol=0)
        tei = s.post("/embed", {"inputs": texts, "prompt_name": "passage"})
        assert tei.status_code == 200, tei.text
        np.testing.assert_allclose(
            np.array(tei.json()), encoder.encode(texts, prompt_name="passage"), atol=1e-6, rtol=0
        )
        unknown = s.post("/embed", {"inputs": texts, "prompt_name": "search"})
        assert unknown.status_code == 422
        assert "prompt_name 'search' is not one of this checkpoint's prompts" in unknown.json()["error"]
        # /tokenize shows what the model reads: the prompt's tokens first, marked, offsets into the text
        text = "A dog runs."
        tokens = s.post("/tokenize", {"inputs": text}).json()[0]
        assert [(t["text"], t["prompt"], t["start"]) for t in tokens[1:4]] == [
            ("query", True, None),
            (":", True, None),
            ("a", False, 0),
        ]
        assert [text[t["start"] : t["stop"]] for t in tokens[3:-1]] == ["A", "dog", "runs", "."]
        assert [t["id"] for t in tokens] == encoder.tokenizer.encode(["query: " + text])[0][0].ids
        passage = s.post("/tokenize", {"inputs": text, "prompt_name": "passage"}).json()[0]
        assert [t["text"] for t in passage if t["prompt"]] == ["passage", ":"]
        # a text that fits alone but not after the prompt: /tokenize's header and /embed's 422 agree
        fits_alone = " ".join(["word"] * (encoder.max_seq_length - 2))
        assert s.post("/tokenize", {"inputs": [text, fits_alone]}).headers["x-truncated-inputs"] == "1"
        refused = s.post("/embed", {"inputs": [text, fits_alone]})
        assert refused.status_code == 422 and "input 1 is over" in refused.json()["error"]
    finally:
        assert s.stop() == 0


def test_search_and_rerank_are_off_without_index_and_reranker(server):
    for path, body, option in (
        ("/search", {"query": "a"}, "--index"),
        ("/rerank", {"query": "a", "texts": ["b"]}, "--reranker"),
    ):
        answer = server.post(path, body)
        assert answer.status_code == 404 and f"started without {option}" in answer.json()["error"], answer.text
