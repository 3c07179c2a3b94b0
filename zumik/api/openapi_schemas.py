"""The schemas ``/openapi.json`` is built from: files, batches, uploads, their lists, errors and
the shared parameters (kept apart from the document's paths)."""

from __future__ import annotations

from typing import Any

from zumik.core.lines import SUPPORTED_ENDPOINTS
from zumik.core.records import EXTENSION_FIELDS, PUBLIC_FIELDS, Status
from zumik.storage.store import FILE_FIELDS
from zumik.storage.upload_records import UPLOAD_FIELDS

NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "An error in OpenAI's envelope")


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "Bad request",
        401: "Missing or invalid key",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Body too large",
        429: "Too many active batches",
        507: "Storage full",
    }
    out = {str(code): {**ERROR, "description": names[code]} for code in codes}
    out["401"] = {**ERROR, "description": names[401]}
    return out


FILE_SCHEMA = {
    "type": "object",
    "required": list(FILE_FIELDS),
    "properties": {
        "id": {"type": "string", "pattern": "^file-[0-9a-f]{24}$"},
        "object": {"const": "file"},
        "bytes": {"type": "integer", "minimum": 0},
        "created_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"enum": ["batch", "batch_output"]},
        "status": {"enum": ["uploaded", "processed", "error"]},
        "status_details": NULLABLE_STR,
        "expires_at": NULLABLE_INT,
    },
}

COUNTS = {
    "type": "object",
    "required": ["total", "completed", "failed"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("total", "completed", "failed")},
}
USAGE = {
    "type": "object",
    "required": [
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    ],
    "properties": {
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "input_tokens_details": {
            "type": "object",
            "properties": {"cached_tokens": {"type": "integer"}},
        },
        "output_tokens_details": {
            "type": "object",
            "properties": {"reasoning_tokens": {"type": "integer"}},
        },
    },
}
BATCH_ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "param": NULLABLE_STR,
        "line": NULLABLE_INT,
    },
}

BATCH_SCHEMA = {
    "type": "object",
    "required": [*PUBLIC_FIELDS, *EXTENSION_FIELDS],
    "properties": {
        "id": {"type": "string", "pattern": "^batch_[0-9a-f]{24}$"},
        "object": {"const": "batch"},
        "endpoint": {"enum": list(SUPPORTED_ENDPOINTS)},
        "model": NULLABLE_STR,
        "errors": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": BATCH_ERROR},
                    },
                },
            ]
        },
        "input_file_id": {"type": "string"},
        "completion_window": {"type": "string", "pattern": "^[1-9][0-9]*h$"},
        "status": {"enum": [s.value for s in Status]},
        "output_file_id": NULLABLE_STR,
        "error_file_id": NULLABLE_STR,
        "created_at": {"type": "integer"},
        **{
            name: NULLABLE_INT
            for name in (
                "in_progress_at",
                "expires_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        },
        "request_counts": COUNTS,
        "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "usage": USAGE,
        "cost": {
            "description": "Zumik extension: cost at the configured prices (per 1M "
            "tokens), null when no price is configured",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["input", "output", "total"],
                    "properties": {k: {"type": "number"} for k in ("input", "output", "total")},
                },
            ],
        },
        # Zumik's extensions (issue 25): budgets, priority, when a budget stopped the batch
        "max_cost": {"type": ["number", "null"]},
        "max_total_tokens": NULLABLE_INT,
        "priority": {"enum": ["high", "normal", "low"]},
        "budget_exceeded_at": NULLABLE_INT,
        "retry_of": {
            "description": "Zumik extension: the id of the batch this one retries "
            "(POST /v1/batches/{batch_id}/retry), null on every other batch",
            **NULLABLE_STR,
        },
    },
}


UPLOAD_SCHEMA = {
    "type": "object",
    "required": list(UPLOAD_FIELDS),
    "properties": {
        "id": {"type": "string", "pattern": "^upload_[0-9a-f]{24}$"},
        "object": {"const": "upload"},
        "bytes": {"type": "integer", "minimum": 1},
        "created_at": {"type": "integer"},
        "expires_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"enum": ["batch"]},
        "status": {"enum": ["pending", "completed", "cancelled", "expired"]},
        "file": {"oneOf": [{"type": "null"}, _ref("File")]},
    },
}
UPLOAD_PART_SCHEMA = {
    "type": "object",
    "required": ["id", "object", "created_at", "upload_id"],
    "properties": {
        "id": {"type": "string", "pattern": "^part_[0-9a-f]{24}$"},
        "object": {"const": "upload.part"},
        "created_at": {"type": "integer"},
        "upload_id": {"type": "string"},
    },
}


def _list(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": NULLABLE_STR,
            "last_id": NULLABLE_STR,
            "has_more": {"type": "boolean"},
        },
    }


FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
UPLOAD_ID = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retried create with the same key answers with the object "
    "the first request made",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}

WEBHOOK_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": text,
        "schema": {"type": "string"},
    }
    for name, text in (
        ("webhook-id", "the same on every retry of one delivery: deduplicate on it"),
        ("webhook-timestamp", "Unix seconds of this attempt"),
        (
            "webhook-signature",
            "space-separated v1,<base64 HMAC-SHA256 of "
            '"{webhook-id}.{webhook-timestamp}.{body}">, one per active '
            "secret; verify with the openai SDK's webhooks.unwrap",
        ),
    )
]


def _webhook(event_type: str, summary: str) -> dict[str, Any]:
    """A batch event as sent to endpoints registered with ``zumik webhooks add``."""
    return {
        "post": {
            "operationId": event_type.replace(".", "_"),
            "summary": summary,
            "parameters": WEBHOOK_HEADERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["id", "object", "type", "created_at", "data"],
                            "properties": {
                                "id": {"type": "string", "pattern": "^evt_"},
                                "object": {"const": "event"},
                                "type": {"const": event_type},
                                "created_at": {"type": "integer"},
                                "data": {
                                    "type": "object",
                                    "required": ["id"],
                                    "additionalProperties": False,
                                    "properties": {"id": {"type": "string", "pattern": "^batch_"}},
                                },
                            },
                        }
                    }
                },
            },
            "responses": {"200": {"description": "any 2xx: delivered; anything else is retried"}},
        }
    }
