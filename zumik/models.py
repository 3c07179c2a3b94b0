"""Blueprint ``/v1/models``: the model names and aliases a batch line may use."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from zumik.context import current

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    router = current().router
    data = []
    for name in router.model_names():
        route = router.routes[name]
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "zumik",
                     "strategy": route.strategy,
                     "targets": [{"provider": t.provider.name, "model": t.model}
                                 for t in route.targets]})
    default = router.default
    return jsonify({"object": "list", "data": data,
                    "any_model_provider": default.name if default is not None else None})
