"""The HTTP API's types (app.py's routes), as pydantic models, so /docs and /openapi.json show them.

Requests are strict: a field of the wrong type or a field no route knows is a 422, and
`validation_message` makes pydantic's list of errors one line. Responses are documented, not
validated: the routes write them with orjson (numpy vectors straight to JSON), in these shapes.
`well_formed` reads a body as its model without FastAPI, for the hot route (app.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "an object" if isinstance(value, dict) else type(value).__name__


def text_or_texts(value: Any) -> Any:
    """A string or a non-empty list of strings; anything else is a one-line reason."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, got {json_type(value)}")
    if not value:
        raise ValueError("is an empty list; send at least one text")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = " (token-id input is not supported; send text)" if isinstance(item, (int, list)) else ""
            raise ValueError(f"item {i} is {json_type(item)}, expected a string{hint}")
    return value


Texts = Annotated[Union[str, list[str]], BeforeValidator(text_or_texts)]
Strict = ConfigDict(extra="forbid", strict=True)


class OpenAIEmbeddingRequest(BaseModel):
    model_config = Strict
    input: Texts = Field(description="a text or a list of texts (at most --max-request-inputs)")
    model: str = Field(description="the served model's name, as GET /v1/models lists it")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes")
    dimensions: Optional[int] = Field(  # noqa: UP045 (pydantic reads it at run time; Python 3.9 has no X | None)
        None, description="keep the first N dimensions, then L2-normalize again (the model is not Matryoshka-trained)"
    )
    user: Optional[str] = Field(None, description="accepted and ignored")  # noqa: UP045
    truncate: bool = Field(True, description="minilm extension: false refuses texts over max_seq_length")


class EmbedRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    normalize: bool = True
    truncate: bool = Field(False, description="false (TEI's default): a text over max_seq_length is a 422")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="only Right: keep the first tokens")
    prompt_name: str | None = Field(None, description="one of the checkpoint's prompts, put before every input")


class PredictRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    with_embedding: bool = Field(False, description="add each text's sentence embedding, from the same pass")


class TokenizeRequest(BaseModel):
    model_config = Strict
    inputs: Texts
    add_special_tokens: bool = True
    prompt_name: str | None = Field(
        None, description="one of the checkpoint's prompts (as /embed); default: the server's"
    )


class SearchRequest(BaseModel):
    model_config = Strict
    query: str = Field(description="the text to search the --index folder for")
    k: int = Field(10, ge=1, le=1000, description="hits to return")


def texts_list(value: Any) -> Any:
    """A non-empty list of strings (TEI's /rerank texts)."""
    if not isinstance(value, list):
        raise ValueError(f"must be a list of strings, got {json_type(value)}")
    return text_or_texts(value)


class RerankRequest(BaseModel):
    model_config = Strict
    query: str
    texts: Annotated[list[str], BeforeValidator(texts_list)] = Field(description="the texts to rank")
    raw_scores: bool = Field(False, description="the model's logits instead of their sigmoid")
    return_text: bool = Field(False, description="add each text to its rank")
    truncate: bool = Field(True, description="pairs over the model's length are cut, as TEI does with truncate")
    truncation_direction: Literal["Right", "right"] = Field("Right", description="only Right")


def validation_message(error: RequestValidationError) -> str:
    """FastAPI's list of pydantic errors -> one line: where, and what is wrong."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if where == "body" and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object (and the content-type application/json)"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "is required"
    return f"{where}: {message}"


def as_list(texts: str | list[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else texts


Body = TypeVar("Body", bound=BaseModel)


def well_formed(model: type[Body], headers: list[tuple[bytes, bytes]], body: bytes) -> Body | None:
    """The body as `model`, when it is sent as application/json and FastAPI would accept it: the same
    json.loads and the same pydantic model as FastAPI's route. None for anything else (another content
    type, bad JSON, a wrong field), and the route then reads it through FastAPI, which answers the error
    as before: the errors keep one source, and a well-formed body skips FastAPI's machinery."""
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        return None
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, RecursionError):  # bad JSON or UTF-8, a wrong field (pydantic's ValidationError too)
        return None


# ---------------------------------------------------------------------------- responses (documented shapes)


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str] = Field(  # noqa: UP007 (pydantic reads it at run time; 3.9 has no X | Y)
        description="floats, or base64 of little-endian float32 bytes"
    )
    truncated: bool = Field(description="minilm extension: the text was cut to max_seq_length tokens")


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(description="tokens embedded, [CLS]/[SEP] and the prompt included, after truncation")
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class Label(BaseModel):
    label: str
    score: float


class Entity(BaseModel):
    text: str
    label: str = Field(description="PER, LOC, ORG or MISC (CoNLL-2003)")
    start: int = Field(description="character offset of the entity in the text")
    end: int = Field(description="character offset just past it")
    score: float


class Prediction(BaseModel):
    text: str
    question_type: Label = Field(description="TREC coarse class: ABBR, DESC, ENTY, HUM, LOC or NUM")
    sentiment: Label = Field(description="SST-2: positive or negative")
    entities: list[Entity]
    embedding: Optional[list[float]] = Field(None, description="with_embedding: the sentence embedding")  # noqa: UP045


class Token(BaseModel):
    id: int
    text: str
    special: bool = Field(description="[CLS] or [SEP]")
    prompt: bool = Field(description="a token of the prompt put before the text")
    start: Optional[int] = Field(description="character offset in the text; null for special and prompt tokens")  # noqa: UP045
    stop: Optional[int] = None  # noqa: UP045


class SearchHit(BaseModel):
    rank: int
    score: float = Field(description="cosine to the query")
    id: str = Field(description="the row's id in the folder (its line number, or --id-field)")
    text: Optional[str] = Field(description="the row's text; null for a folder written before texts were kept")  # noqa: UP045
    span: Optional[list[int]] = Field(None, description="with --window: [start, end) of the window in its document")  # noqa: UP045


class Rank(BaseModel):
    index: int = Field(description="the text's place in the request")
    score: float
    text: Optional[str] = Field(None, description="with return_text")  # noqa: UP045


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    dtype: str = Field(description="the compute precision: float32, bfloat16, float16 or int8")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None  # noqa: UP045
    code: Optional[str] = None  # noqa: UP045


class OpenAIError(BaseModel):
    """Errors under /v1/, as OpenAI answers them."""

    error: OpenAIErrorDetail


class TEIError(BaseModel):
    """Errors elsewhere, as TEI answers them."""

    error: str
    error_type: str


ERROR_STATUSES = {
    404: "the route is off: the server was started without its --index or --reranker",
    408: "the body did not arrive within --body-timeout",
    413: "a body, a request or a /predict text over the limits",
    422: "a malformed body (one line says what is wrong)",
    429: "the queue is full (Retry-After says when to try again)",
    503: "warming up or shutting down",
}


def documented(answer: Any, errors: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for FastAPI: its 200 answer and the errors it may give, for /docs."""
    responses: dict[int | str, dict[str, Any]] = {200: {"model": answer}}
    for status in statuses:
        responses[status] = {"model": errors, "description": ERROR_STATUSES[status]}
    return responses
