"""minilm.serve: an HTTP server for embeddings and the multi-task heads (`python -m minilm.serve`).

    batcher.py   the queue and the one inference worker: many clients' texts share a batch
    bounded.py   a long text's first tokens, read only as far as they need (any text, exactly)
    metrics.py   the Prometheus metrics behind GET /metrics
    errors.py    the error answers, in OpenAI's shape under /v1/ and TEI's elsewhere
    guard.py     the middleware in front of the routes: admission, body limits and timeouts, answers in parts
    schemas.py   the request bodies (strict) and the response shapes, as pydantic models for /docs
    tokens.py    the tokens kept while a request waits (ids) and /tokenize's JSON
    service.py   the settings and the service the routes call: checks, tokenizing, queue places, the batcher
    app.py       the routes (OpenAI's /v1/embeddings, TEI's /embed, /predict, /tokenize, /health, /metrics)
    __main__.py  the command line: load the encoder and heads, warm up, listen, drain on SIGTERM

It needs the [serve] extra (FastAPI, uvicorn, prometheus-client). Nothing here is imported by the
rest of minilm; heads are imported only by the command line, which joins the two packages.
"""
