"""The server never answers a NaN vector: orjson writes NaN as null, so a damaged model answered `null`
embeddings while /health said ok. Now a request whose vectors are not finite gets a JSON 500 that says
why, and a model that fails its warm-up that way never starts serving."""

from __future__ import annotations

import signal

import torch
from starlette.testclient import TestClient

from minilm import SentenceEncoder
from minilm.serve.app import create_app
from minilm.serve.service import ServeSettings, Service


def damage(encoder: SentenceEncoder) -> None:
    with torch.no_grad():
        encoder.model.encoder.layer[1].output.dense.weight[3, 5] = float("nan")


def test_a_request_with_non_finite_vectors_is_a_json_500(tiny_checkpoint):
    encoder = SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False)
    with TestClient(create_app(Service(encoder, ServeSettings(model_name="tiny")))) as client:
        assert client.post("/embed", json={"inputs": ["A sentence."]}).status_code == 200
        damage(encoder)  # the same model, damaged after its warm-up
        tei = client.post("/embed", json={"inputs": ["A sentence."]})
        openai = client.post("/v1/embeddings", json={"input": "A sentence.", "model": "tiny"})
        assert client.get("/health").status_code == 200  # one bad answer does not take the server down
    assert tei.status_code == 500 and tei.json()["error_type"] == "Backend"
    assert tei.json()["error"].startswith("the model gave NaN or infinite values for text 0")
    assert openai.status_code == 500 and openai.json()["error"]["type"] == "server_error"
    assert "NaN or infinite" in openai.json()["error"]["message"]


def test_a_model_that_fails_its_warm_up_does_not_serve_and_says_why(tiny_checkpoint, monkeypatch, capsys):
    import minilm.serve.__main__ as entry

    def load_damaged(args):
        encoder = SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False)
        damage(encoder)
        return encoder

    monkeypatch.setattr(entry, "load_encoder", load_damaged)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    try:
        status = entry.main(["--port", "0", "--no-heads"])
    finally:  # serve() hands the signals to uvicorn and the threads to its worker: give them back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the model failed its warm-up, so the server did not start: the model gave NaN")
