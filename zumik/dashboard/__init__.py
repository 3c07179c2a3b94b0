"""The web dashboard at ``/dashboard``: batches, files and an operator view in a browser.

rq-dashboard's shape: one blueprint, Jinja templates, JSON endpoints the pages poll for live
progress, a small hand-written script and style sheet shipped in the package (no front-end
build, nothing fetched from elsewhere). Signing in turns an API key into a signed session
cookie (``zumik.dashboard.session``); every page then reads the store like the API does.
"""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, url_for
from flask.typing import ResponseReturnValue

from zumik.api.context import Zumik

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)

from zumik.dashboard import (  # noqa: E402,F401  (routes join bp)
    operator,
    pages,
    plan,
    results_pages,
    session,
)


def init_app(app: Flask, zumik: Zumik) -> None:
    """Register the dashboard, its session cookie and ``/`` as a way in."""
    session.configure(app, zumik)
    pages.register_filters(app)
    app.register_blueprint(bp)

    @app.get("/", endpoint="dashboard_root")
    def root() -> ResponseReturnValue:
        return redirect(url_for("dashboard.batches"))
