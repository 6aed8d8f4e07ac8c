"""The response types in schemas.py are what the routes answer: /openapi.json documents every route's
answer and errors, and real answers validate against those models."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter
from starlette.testclient import TestClient

from minilm import SentenceEncoder
from minilm.serve.app import create_app
from minilm.serve.schemas import Health, OpenAIEmbeddingResponse, OpenAIError, OpenAIModelList, TEIError, Token
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
