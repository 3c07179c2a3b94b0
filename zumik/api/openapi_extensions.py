"""The parts of ``/openapi.json`` for Zumik's issue-25 extensions: the estimate route and the
create fields (budgets, priority, windows beyond ``24h``)."""

from __future__ import annotations

from typing import Any

from zumik.api.openapi_schemas import FILE_ID, _errors, _json, _ref
from zumik.core.lines import SUPPORTED_ENDPOINTS

WINDOW = {
    "type": "string",
    "pattern": "^[1-9][0-9]*h$",
    "description": "'24h', or whole hours from ZUMIK_MIN_WINDOW (1h) to ZUMIK_MAX_WINDOW "
    "(168h); expires_at follows",
}
CREATE_EXTENSIONS: dict[str, Any] = {
    "max_cost": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 1e9,
        "description": "Zumik extension: USD at the configured prices; once passed nothing "
        "more is sent and unsent lines fail with budget_exceeded (needs prices)",
    },
    "max_total_tokens": {
        "type": "integer",
        "minimum": 1,
        "maximum": 10**15,
        "description": "Zumik extension: the same budget in tokens (input + output)",
    },
    "priority": {
        "enum": ["high", "normal", "low"],
        "description": "Zumik extension: within a project's share, higher goes first",
    },
}
NUMBER_OR_NULL = {"type": ["number", "null"]}
INT_OR_NULL = {"type": ["integer", "null"]}
RANGE = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "required": ["low", "high"],
            "properties": {"low": {"type": "number"}, "high": NUMBER_OR_NULL},
        },
    ]
}
ESTIMATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "object",
        "lines",
        "input_tokens",
        "input_tokens_method",
        "max_output_tokens",
        "models",
        "cost",
        "eta_seconds",
    ],
    "properties": {
        "object": {"const": "batch.estimate"},
        "lines": {"type": "integer", "minimum": 1},
        "input_tokens": {"type": "integer", "minimum": 0},
        "input_tokens_method": {"enum": ["tokenizer", "heuristic"]},
        "tokenized_lines": {"type": "integer", "minimum": 0},
        "tokenizer_time_budget_reached": {"type": "boolean"},
        "max_output_tokens": INT_OR_NULL,
        "models": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["lines", "input_tokens", "provider"],
                "properties": {
                    "lines": {"type": "integer"},
                    "input_tokens": {"type": "integer"},
                    "max_output_tokens": INT_OR_NULL,
                    "provider": {"type": "string"},
                    "input_tokens_method": {"enum": ["tokenizer", "heuristic"]},
                },
            },
        },
        "cost": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["low", "high", "currency"],
                    "properties": {
                        "low": {"type": "number"},
                        "high": NUMBER_OR_NULL,
                        "currency": {"const": "USD"},
                    },
                },
            ]
        },
        "eta_seconds": RANGE,
    },
}
ESTIMATE_PATH: dict[str, Any] = {
    "parameters": [FILE_ID],
    "post": {
        "operationId": "estimateBatch",
        "summary": "Zumik extension: lines, tokens, cost and time a batch of this file would "
        "take (validated like a batch create)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["endpoint"],
                        "additionalProperties": False,
                        "properties": {
                            "endpoint": {"enum": list(SUPPORTED_ENDPOINTS)},
                            "input_file_id": {"type": "string"},
                            "completion_window": WINDOW,
                            "metadata": {"type": ["object", "null"]},
                            "output_expires_after": {"type": "object"},
                            "tokenizer": {
                                "type": "boolean",
                                "description": "false: the heuristic only (bytes / 4)",
                            },
                            **CREATE_EXTENSIONS,
                        },
                    }
                }
            },
        },
        "responses": {"200": _json(_ref("BatchEstimate")), **_errors(400, 404, 413)},
    },
}
