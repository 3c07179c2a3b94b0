"""``GET /openapi.json``: an OpenAPI 3.1 document of every route (kept true by
``tests/test_openapi.py``, which checks it against the app's routes and, with schemathesis,
against real responses)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from zumik.core.batchfile import SUPPORTED_ENDPOINTS
from zumik.core.records import PUBLIC_FIELDS, Status
from zumik.storage.store import FILE_FIELDS
from zumik.storage.upload_records import UPLOAD_FIELDS

bp = Blueprint("openapi", __name__)

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
    "required": list(PUBLIC_FIELDS),
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
        "completion_window": {"const": "24h"},
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


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Zumik",
        "version": "0.1.0",
        "description": "OpenAI-compatible Files and Batch APIs for any "
        "OpenAI-compatible model server.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "webhooks": {
        "batch.completed": _webhook("batch.completed", "A batch completed"),
        "batch.failed": _webhook("batch.failed", "A batch failed validation"),
        "batch.cancelled": _webhook("batch.cancelled", "A batch was cancelled"),
        "batch.expired": _webhook("batch.expired", "A batch expired"),
    },
    "paths": {
        "/v1/files": {
            "post": {
                "operationId": "createFile",
                "summary": "Upload a batch input file (JSONL)",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "purpose": {"enum": ["batch"]},
                                    "expires_after[anchor]": {"const": "created_at"},
                                    "expires_after[seconds]": {
                                        "type": "integer",
                                        "minimum": 3600,
                                        "maximum": 2592000,
                                    },
                                },
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["content"],
                                "properties": {
                                    "content": {"type": "string"},
                                    "filename": {"type": "string"},
                                    "purpose": {"enum": ["batch"]},
                                },
                            }
                        },
                    },
                },
                "responses": {"200": _json(_ref("File")), **_errors(400, 409, 413, 507)},
            },
            "get": {
                "operationId": "listFiles",
                "summary": "List files",
                "parameters": [
                    {"name": "purpose", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_list("File")), **_errors(400)},
            },
        },
        "/v1/files/{file_id}": {
            "parameters": [FILE_ID],
            "get": {
                "operationId": "retrieveFile",
                "summary": "File metadata",
                "responses": {"200": _json(_ref("File")), **_errors(404)},
            },
            "delete": {
                "operationId": "deleteFile",
                "summary": "Delete a file",
                "responses": {"200": _json(_ref("FileDeleted")), **_errors(404, 409)},
            },
        },
        "/v1/files/{file_id}/content": {
            "parameters": [FILE_ID],
            "get": {
                "operationId": "fileContent",
                "summary": "The stored bytes",
                "responses": {
                    "200": {
                        "description": "Raw content (ranges supported)",
                        "content": {
                            "application/jsonl": {"schema": {"type": "string"}},
                            "application/octet-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "206": {
                        "description": "A byte range",
                        "content": {
                            "application/jsonl": {"schema": {"type": "string"}},
                            "application/octet-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "304": {"description": "Not modified"},
                    "416": {"description": "Range not satisfiable"},
                    **_errors(404),
                },
            },
        },
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "Create a batch",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["input_file_id", "endpoint"],
                                "additionalProperties": False,
                                "properties": {
                                    "input_file_id": {"type": "string"},
                                    "endpoint": {"enum": list(SUPPORTED_ENDPOINTS)},
                                    "completion_window": {"enum": ["24h"]},
                                    "metadata": {
                                        "type": ["object", "null"],
                                        "maxProperties": 16,
                                        "additionalProperties": {
                                            "type": "string",
                                            "maxLength": 512,
                                        },
                                    },
                                    "output_expires_after": {
                                        "type": "object",
                                        "required": ["anchor", "seconds"],
                                        "additionalProperties": False,
                                        "description": (
                                            "Lifetime of the output and error files, "
                                            "from their creation"
                                        ),
                                        "properties": {
                                            "anchor": {"const": "created_at"},
                                            "seconds": {
                                                "type": "integer",
                                                "minimum": 3600,
                                                "maximum": 2592000,
                                            },
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("Batch")), **_errors(400, 413, 429)},
            },
            "get": {
                "operationId": "listBatches",
                "summary": "List batches, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_list("Batch")), **_errors(400)},
            },
        },
        "/v1/batches/{batch_id}": {
            "parameters": [BATCH_ID],
            "get": {
                "operationId": "retrieveBatch",
                "summary": "A batch",
                "responses": {"200": _json(_ref("Batch")), **_errors(404)},
            },
        },
        "/v1/batches/{batch_id}/cancel": {
            "parameters": [BATCH_ID],
            "post": {
                "operationId": "cancelBatch",
                "summary": "Cancel a batch",
                "responses": {"200": _json(_ref("Batch")), **_errors(404, 413)},
            },
        },
        "/v1/uploads": {
            "post": {
                "operationId": "createUpload",
                "summary": "Start an upload of a file sent in parts (expires in an hour)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["bytes", "filename", "mime_type", "purpose"],
                                "properties": {
                                    "bytes": {"type": "integer", "minimum": 1},
                                    "filename": {"type": "string"},
                                    "mime_type": {"type": "string"},
                                    "purpose": {"enum": ["batch"]},
                                    "expires_after": {
                                        "type": "object",
                                        "required": ["anchor", "seconds"],
                                        "description": "Expiry of the File the upload makes",
                                        "properties": {
                                            "anchor": {"const": "created_at"},
                                            "seconds": {
                                                "type": "integer",
                                                "minimum": 3600,
                                                "maximum": 2592000,
                                            },
                                        },
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("Upload")), **_errors(400, 413, 507)},
            }
        },
        "/v1/uploads/{upload_id}/parts": {
            "parameters": [UPLOAD_ID],
            "post": {
                "operationId": "addUploadPart",
                "summary": "Add a part (any order, in parallel; at most ZUMIK_MAX_PART_BYTES)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {"data": {"type": "string", "format": "binary"}},
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("UploadPart")), **_errors(400, 404, 413, 507)},
            },
        },
        "/v1/uploads/{upload_id}/complete": {
            "parameters": [UPLOAD_ID],
            "post": {
                "operationId": "completeUpload",
                "summary": "Assemble the listed parts, in order, into a File",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["part_ids"],
                                "properties": {
                                    "part_ids": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {"type": "string"},
                                    },
                                    "md5": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("Upload")), **_errors(400, 404, 409, 413, 507)},
            },
        },
        "/v1/uploads/{upload_id}/cancel": {
            "parameters": [UPLOAD_ID],
            "post": {
                "operationId": "cancelUpload",
                "summary": "Cancel a pending upload and free its parts",
                "responses": {"200": _json(_ref("Upload")), **_errors(400, 404, 413)},
            },
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Model names and aliases",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["object", "data", "batch_endpoints"],
                            "properties": {
                                "batch_endpoints": {
                                    "type": "array",
                                    "items": {"enum": list(SUPPORTED_ENDPOINTS)},
                                    "description": "The batch endpoints Zumik serves",
                                }
                            },
                        }
                    ),
                    **_errors(),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "security": [],
                "summary": "Process up and data dir writable",
                "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "security": [],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"})},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "File": FILE_SCHEMA,
            "FileDeleted": {
                "type": "object",
                "required": ["id", "object", "deleted"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "file"},
                    "deleted": {"const": True},
                },
            },
            "Batch": BATCH_SCHEMA,
            "Upload": UPLOAD_SCHEMA,
            "UploadPart": UPLOAD_PART_SCHEMA,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "param", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": NULLABLE_STR,
                            "code": NULLABLE_STR,
                        },
                    }
                },
            },
        },
    },
}


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(DOCUMENT)
