"""The response types in schemas.py are what the routes answer: /openapi.json documents every route's
answer and errors, and real answers validate against those models. The hot route's direct answer (a
well-formed body without FastAPI's machinery) is the one FastAPI's route gives."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter
from starlette.testclient import TestClient

from minilm import SentenceEncoder
from minilm.serve.app import create_app
from minilm.serve.schemas import (
    Health,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIError,
    OpenAIModelList,
    TEIError,
    Token,
    well_formed,
)
from minilm.serve.service import ServeSettings, Service


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    encoder = SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False)
    with TestClient(create_app(Service(encoder, ServeSettings(model_name="tiny")))) as client:
        yield client


def test_openapi_documents_every_routes_answer_and_errors(client):
    paths = client.get("/openapi.json").json()["paths"]
    documented = {
        ("/v1/embeddings", "post"): ("OpenAIEmbeddingResponse", "OpenAIError"),
        ("/v1/models", "get"): ("OpenAIModelList", None),
        ("/embed", "post"): ("array", "TEIError"),
        ("/predict", "post"): ("array", "TEIError"),
        ("/tokenize", "post"): ("array", "TEIError"),
        ("/health", "get"): ("Health", "TEIError"),
    }
    for (path, method), (answer, error) in documented.items():
        responses = paths[path][method]["responses"]
        schema = responses["200"]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").endswith(f"/{answer}") or schema.get("type") == answer, (path, schema)
        if error:
            assert responses["422" if method == "post" else "503"]["content"]["application/json"]["schema"][
                "$ref"
            ].endswith(f"/{error}"), path
    items = paths["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert items["$ref"].endswith("/Prediction")


def test_real_answers_validate_against_the_documented_types(client):
    for encoding_format in ("float", "base64"):
        answer = client.post(
            "/v1/embeddings", json={"input": ["One.", "Two."], "model": "tiny", "encoding_format": encoding_format}
        )
        OpenAIEmbeddingResponse.model_validate_json(answer.content, strict=True)
    OpenAIModelList.model_validate_json(client.get("/v1/models").content, strict=True)
    TypeAdapter(list[list[float]]).validate_json(client.post("/embed", json={"inputs": ["One."]}).content)
    TypeAdapter(list[list[Token]]).validate_json(client.post("/tokenize", json={"inputs": ["One."]}).content)
    Health.model_validate_json(client.get("/health").content, strict=True)
    OpenAIError.model_validate_json(client.post("/v1/embeddings", json={"input": 5, "model": "tiny"}).content)
    TEIError.model_validate_json(client.post("/embed", json={"inputs": 5}).content)


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ({"input": ["One.", "Two."], "model": "tiny"}, 200),
        ({"input": "One.", "model": "tiny", "encoding_format": "base64", "dimensions": 8, "user": "u"}, 200),
        ({"input": "One.", "model": "another"}, 404),  # the route's own error, answered by the direct path
        ({"input": "One.", "model": "tiny", "dimensions": 0}, 422),
    ],
)
def test_the_direct_answer_is_fastapis_routes_answer(client, body, answer):
    """Guard answers a well-formed /v1/embeddings body itself (app.py); FastAPI's route reads every other
    one. A "+json" content type, which only FastAPI's route reads, gives the reference answer."""
    content = json.dumps(body).encode()
    direct = client.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    routed = client.post("/v1/embeddings", content=content, headers={"content-type": "application/vnd.api+json"})
    assert direct.status_code == routed.status_code == answer, (direct.text, routed.text)
    assert direct.content == routed.content
    assert dict(direct.headers) == dict(routed.headers)


def test_well_formed_takes_only_what_fastapis_route_would_accept():
    ok = json.dumps({"input": "One.", "model": "tiny"}).encode()
    for content_type in (b"application/json", b"Application/JSON; charset=utf-8"):
        assert well_formed(OpenAIEmbeddingRequest, [(b"content-type", content_type)], ok).input == "One."
    json_type = [(b"content-type", b"application/json")]
    assert well_formed(OpenAIEmbeddingRequest, [], ok) is None  # no content type: FastAPI's route refuses it
    assert well_formed(OpenAIEmbeddingRequest, [(b"content-type", b"text/plain")], ok) is None
    for bad in (b"", b'{"input": "One.", "model": "tiny"', b'{"input": 5, "model": "tiny"}', b'"One."', b"\xff"):
        assert well_formed(OpenAIEmbeddingRequest, json_type, bad) is None
    extra = json.dumps({"input": "One.", "model": "tiny", "extra": 1}).encode()
    assert well_formed(OpenAIEmbeddingRequest, json_type, extra) is None
    assert well_formed(OpenAIEmbeddingRequest, json_type, b"[" * 100_000 + b"]" * 100_000) is None  # too deep
