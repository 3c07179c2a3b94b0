"""The OpenAPI paths of the retry and results extensions (``zumik.api.retry``,
``zumik.api.results``), merged into ``zumik.api.openapi.DOCUMENT``."""

from __future__ import annotations

from typing import Any

from zumik.api.openapi_extensions import WINDOW
from zumik.api.openapi_schemas import (
    BATCH_ID,
    IDEMPOTENCY_KEY,
    NULLABLE_STR,
    _errors,
    _json,
    _ref,
)

TOO_LONG = {"414": {**_errors(400)["400"], "description": "Request line too long"}}

RESULTS_PAGE = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "description": "Result lines exactly as in (or as they will be in) the output "
            "and error files",
            "items": {"type": "object", "required": ["id", "custom_id", "response", "error"]},
        },
        "first_id": NULLABLE_STR,
        "last_id": {
            "type": "string",
            "description": "Opaque cursor: pass it as 'after' for the next page",
        },
        "has_more": {"type": "boolean"},
    },
}

RESULTS_PATHS: dict[str, Any] = {
    "/v1/batches/{batch_id}/retry": {
        "parameters": [BATCH_ID],
        "post": {
            "operationId": "retryBatch",
            "summary": "Zumik extension: a new batch over the lines of a finished batch that "
            "did not succeed",
            "parameters": [IDEMPOTENCY_KEY],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "lines": {"enum": ["failed", "unfinished", "not_succeeded"]},
                                "completion_window": WINDOW,
                                "metadata": {
                                    "type": ["object", "null"],
                                    "maxProperties": 16,
                                    "additionalProperties": {"type": "string", "maxLength": 512},
                                },
                            },
                        }
                    }
                },
            },
            "responses": {"200": _json(_ref("Batch")), **_errors(400, 404, 409, 413, 429)},
        },
    },
    "/v1/batches/{batch_id}/results": {
        "parameters": [BATCH_ID],
        "get": {
            "operationId": "listBatchResults",
            "summary": "Zumik extension: the batch's result lines page by page, while it runs "
            "and after",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {
                    "name": "outcome",
                    "in": "query",
                    "schema": {"enum": ["succeeded", "failed", "all"]},
                },
            ],
            "responses": {"200": _json(RESULTS_PAGE), **_errors(400, 404), **TOO_LONG},
        },
    },
    "/v1/batches/{batch_id}/merged": {
        "parameters": [BATCH_ID],
        "get": {
            "operationId": "downloadMergedResults",
            "summary": "Zumik extension: one output (or error) file for a batch and all its "
            "retries, the latest result of each custom_id winning",
            "parameters": [
                {"name": "file", "in": "query", "schema": {"enum": ["output", "error"]}},
            ],
            "responses": {
                "200": {
                    "description": "JSONL result lines",
                    "content": {"application/jsonl": {"schema": {"type": "string"}}},
                },
                **_errors(400, 404),
                **TOO_LONG,
            },
        },
    },
}
