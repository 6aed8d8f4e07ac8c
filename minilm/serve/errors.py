"""The server's errors, answered in the caller's dialect: OpenAI's {"error": {"message", "type", "param",
"code"}} under /v1/, TEI's {"error", "error_type"} elsewhere, each counted in minilm_rejections_total."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .metrics import Metrics


class ApiError(Exception):
    """An error answered to the client; `kind` picks the OpenAI type / TEI error_type."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}


ERROR_TYPES = {  # status -> (OpenAI "type", TEI "error_type")
    404: ("invalid_request_error", "Validation"),
    405: ("invalid_request_error", "Validation"),
    408: ("invalid_request_error", "Validation"),
    413: ("invalid_request_error", "Validation"),
    422: ("invalid_request_error", "Validation"),
    429: ("rate_limit_error", "Overloaded"),
    503: ("server_error", "Unhealthy"),
}


REJECTION_REASONS = {
    404: "not_found",
    405: "not_found",
    408: "timeout",
    413: "too_large",
    422: "invalid",
    429: "queue_full",
    503: "unavailable",
}


def error_response(path: str, error: ApiError, metrics: Metrics | None = None) -> JSONResponse:
    """The error in the caller's dialect; counted in minilm_rejections_total when `metrics` is given."""
    if metrics is not None and error.status in REJECTION_REASONS:
        metrics.rejections.labels(REJECTION_REASONS[error.status]).inc()
    openai_type, tei_type = ERROR_TYPES.get(error.status, ("server_error", "Backend"))
    if path.startswith("/v1/"):
        detail = {"message": error.message, "type": openai_type, "param": error.param, "code": error.code}
        body: dict = {"error": detail}
    else:
        body = {"error": error.message, "error_type": tei_type}
    return JSONResponse(body, status_code=error.status, headers=error.headers)
