"""The request bodies of the HTTP API (app.py) as pydantic models, strict: a field of the wrong type or
a field no route knows is a 422, and `validation_message` makes pydantic's list of errors one line."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

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
