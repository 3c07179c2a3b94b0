"""Blueprint ``/v1/models``: the model names and aliases a batch line may use, and the batch
endpoints Zumik serves (every line goes to its provider's path of the same name; whether a
given provider serves a path is the provider's business: an unserved one answers 404, which
lands in the error file)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from zumik.api.context import current
from zumik.core.lines import SUPPORTED_ENDPOINTS

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    router = current().router
    data = []
    for name in router.model_names():
        route = router.routes[name]
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "zumik",
                "strategy": route.strategy,
                "endpoints": list(SUPPORTED_ENDPOINTS),
                "targets": [{"provider": t.provider.name, "model": t.model} for t in route.targets],
            }
        )
    default = router.default
    return jsonify(
        {
            "object": "list",
            "data": data,
            "batch_endpoints": list(SUPPORTED_ENDPOINTS),
            "any_model_provider": default.name if default is not None else None,
        }
    )
