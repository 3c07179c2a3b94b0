"""``GET /openapi.json``: an OpenAPI 3.1 document of every route (kept true by
``tests/test_openapi.py``, which checks it against the app's routes and, with schemathesis,
against real responses)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from zumik.api.openapi_extensions import (
    CREATE_EXTENSIONS,
    ESTIMATE_PATH,
    ESTIMATE_SCHEMA,
    WINDOW,
)
from zumik.api.openapi_results import RESULTS_PATHS
from zumik.api.openapi_schemas import (
    BATCH_ID,
    BATCH_SCHEMA,
    FILE_ID,
    FILE_SCHEMA,
    IDEMPOTENCY_KEY,
    NULLABLE_STR,
    UPLOAD_ID,
    UPLOAD_PART_SCHEMA,
    UPLOAD_SCHEMA,
    _errors,
    _json,
    _list,
    _ref,
    _webhook,
)
from zumik.core.lines import SUPPORTED_ENDPOINTS

bp = Blueprint("openapi", __name__)


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
        "/v1/files/{file_id}/estimate": ESTIMATE_PATH,
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
                                    "completion_window": WINDOW,
                                    **CREATE_EXTENSIONS,
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
            "BatchEstimate": ESTIMATE_SCHEMA,
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

DOCUMENT["paths"].update(RESULTS_PATHS)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(DOCUMENT)
