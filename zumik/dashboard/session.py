"""Dashboard sign-in: API key -> signed session cookie, CSRF tokens, slowing down wrong keys.

The cookie (Flask's signed session; HttpOnly, SameSite=Strict, path ``/dashboard``) holds the
key's SHA-256, never the key, so revoking the key ends its sessions at the next request. The
signing secret is made once under the data dir, created-if-absent so every worker and every
server sharing the data dir signs with the same one.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    Response,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import Forbidden

from zumik.api.context import Zumik, current
from zumik.api.receiving import body_cap
from zumik.dashboard import bp
from zumik.storage import fsutil
from zumik.storage.keys import hash_key

SECRET_FILE = ".dashboard-secret"
PUBLIC_ENDPOINTS = frozenset({"dashboard.signin", "dashboard.static"})
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"
THROTTLE_CAPACITY = 10_000  # client addresses remembered (oldest forgotten first)
THROTTLE_MEMORY = 900.0  # seconds after its last wrong key an address starts afresh
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def load_secret(data_dir: Path) -> bytes:
    """The session-signing secret: read it, or create it if absent (first writer wins).

    The new secret is written whole to a temp file and hard-linked into place; ``link`` fails
    if the name exists, so concurrent workers never see a partial secret or two different ones.
    """
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    tmp = fsutil.temp_path(data_dir, "secret-")
    try:
        fsutil.write_durably(tmp, secrets.token_hex(32).encode())
        fsutil.link_once(tmp, path)  # False: another worker's secret won; read that one
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


class SignInThrottle:
    """Slows down wrong keys per client address, in bounded memory.

    After ``free`` wrong keys an address waits 1 s before its next try, then 2, 4, ... up to
    ``max_delay``; a right key resets it. Each worker keeps its own table."""

    def __init__(
        self,
        free: int,
        max_delay: float,
        clock: Any = time.monotonic,
        capacity: int = THROTTLE_CAPACITY,
    ) -> None:
        self.free, self.max_delay, self.clock, self.capacity = free, max_delay, clock, capacity
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait before its next try (0 when it may try now)."""
        count, last = self._failures.get(address, (0, 0.0))
        now = self.clock()
        if count and now - last > THROTTLE_MEMORY:
            del self._failures[address]
            return 0.0
        if count < self.free:
            return 0.0
        delay = min(self.max_delay, 2.0 ** (count - self.free))
        return max(0.0, last + delay - now)

    def failed(self, address: str) -> None:
        count, _ = self._failures.pop(address, (0, 0.0))
        self._failures[address] = (count + 1, self.clock())
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def __len__(self) -> int:
        return len(self._failures)


def configure(app: Flask, zumik: Zumik) -> None:
    """Cookie settings, the shared secret and the per-worker throttle."""
    settings = zumik.settings
    app.secret_key = load_secret(settings.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="zumik_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/dashboard",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.dashboard_session_seconds),
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    zumik.extra["dashboard.throttle"] = SignInThrottle(
        settings.signin_free_attempts, settings.signin_max_delay
    )


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every form and script POST sends it."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def _check_csrf() -> None:
    origin = request.headers.get("Origin")
    if origin and origin != request.host_url.rstrip("/"):
        raise Forbidden("This form was sent from another site.")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype != "multipart/form-data":  # never parse uploads here
        sent = request.form.get(CSRF_FIELD)
    expected = session.get("csrf")
    if not (
        isinstance(sent, str)
        and isinstance(expected, str)
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden(
            "The form's security token is missing or stale. Reload the page and try again."
        )


def wants_json() -> bool:
    return request.path.startswith("/dashboard/api/")


@bp.before_request
def guard() -> ResponseReturnValue | None:
    """Every dashboard request: a signed-in session (except sign-in itself) and, for a POST,
    a valid CSRF token. Sets ``g.project`` as the API's auth does, and ``g.admin``. Caps the
    body as the API does (``body_cap``: the upload view has the caps of ``/v1/files``)."""
    request.max_content_length = body_cap(current().settings, request.endpoint, request.mimetype)
    if request.method == "POST":
        _check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    digest = session.get("key")
    keyring = current().keyring
    project = keyring.project_for_digest(digest) if isinstance(digest, str) else None
    if project is None or not isinstance(digest, str):
        session.pop("key", None)
        if wants_json():
            return jsonify(
                {
                    "error": {
                        "message": "Not signed in",
                        "type": "authentication_error",
                        "param": None,
                        "code": "signed_out",
                    }
                }
            ), 401
        return redirect(url_for("dashboard.signin"))
    g.project = project
    g.admin = keyring.is_admin(digest)
    return None


@bp.after_request
def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "csrf_field": CSRF_FIELD}


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> ResponseReturnValue:
    if request.method == "GET":
        if session.get("key") and current().keyring.project_for_digest(session["key"]):
            return redirect(url_for("dashboard.batches"))
        return render_template("signin.html")
    throttle: SignInThrottle = current().extra["dashboard.throttle"]
    address = request.remote_addr or "-"
    wait = throttle.wait(address)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        page = render_template(
            "signin.html",
            error=(f"Too many wrong keys from your address. Wait {seconds} s, then try again."),
        )
        return page, 429, {"Retry-After": str(seconds)}
    key = request.form.get("key", "").strip()
    digest = hash_key(key) if key else ""
    project = current().keyring.project_for_digest(digest) if key else None
    if project is None:
        throttle.failed(address)
        message = (
            "Enter your API key."
            if not key
            else "That key is not valid: no project has it (it may have been revoked). "
            "Keys look like zk_...; make one with: zumik keys create PROJECT"
        )
        return render_template("signin.html", error=message), 401
    throttle.succeeded(address)
    session.clear()
    session.permanent = True
    session["key"] = digest
    session["csrf"] = secrets.token_urlsafe(24)
    return redirect(url_for("dashboard.batches"))


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    session.clear()
    flash("Signed out.")
    return redirect(url_for("dashboard.signin"))
