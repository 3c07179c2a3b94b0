"""The tenant's pages: batches (list, detail, cancel), files (list, upload, delete, download)
and the JSON the pages poll. The writes go through the API's own views, so the dashboard and
the API can never disagree on a rule; the session's project stands in for the key."""

from __future__ import annotations

import itertools
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from zumik.api import batches as batches_api
from zumik.api import files as files_api
from zumik.api.context import current, project_store
from zumik.api.errors import ApiError, envelope, from_domain
from zumik.core import ids
from zumik.core.exceptions import ZumikError
from zumik.core.lines import SUPPORTED_ENDPOINTS
from zumik.dashboard import bp, present
from zumik.dashboard.listing import FILTERS, StatusIndex, batch_page
from zumik.storage.store import ProjectStore

PER_PAGE = 50
FILE_BATCHES_SCANNED = 1000  # a file's page looks for its batches among this many newest
MAX_POLLED = 100
MAX_FILES_SHOWN = 1000  # the files page lists the newest ones (the API pages through all)


def register_filters(app: Flask) -> None:
    app.jinja_env.filters.update(
        size=present.size,
        number=present.number,
        when=present.when,
        iso=present.iso,
        breakable=present.breakable,
    )


def _index() -> StatusIndex:
    extra = current().extra
    if "dashboard.index" not in extra:
        extra["dashboard.index"] = StatusIndex()
    return extra["dashboard.index"]


def _now() -> float:
    return current().clock()


@bp.app_template_global()
def ago(ts: float | None) -> str:
    return present.ago(ts, _now())


@bp.errorhandler(ZumikError)
def domain_error(error: ZumikError) -> Response | tuple[str, int]:
    return api_error(from_domain(error))


@bp.errorhandler(ApiError)
def api_error(error: ApiError) -> Response | tuple[str, int]:
    if request.path.startswith("/dashboard/api/"):
        return envelope(error)
    return render_template("error.html", status=error.status, message=error.message), error.status


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response | tuple[str, int]:
    status = error.code or 500
    if request.path.startswith("/dashboard/api/"):
        return envelope(ApiError(status, error.description or error.name))
    return render_template(
        "error.html", status=status, message=error.description or error.name
    ), status


# -- batches ----------------------------------------------------------------------------------
@bp.get("/")
def batches() -> str:
    wanted = request.args.get("status", "all")
    if wanted not in FILTERS:
        wanted = "all"
    page_arg = request.args.get("page", "1")
    page_no = int(page_arg) if page_arg.isdigit() else 1
    page = batch_page(project_store(), _index(), wanted, page_no, PER_PAGE)
    now = _now()
    rows = [(record, present.progress(record, now)) for record in page.records]
    return render_template("batches.html", page=page, rows=rows, wanted=wanted, filters=FILTERS)


@bp.get("/api/batches")
def poll_batches() -> Response:
    """Progress of the batches a page shows (``?ids=a,b``), and the newest batch id."""
    wanted = [i for i in request.args.get("ids", "").split(",") if ids.is_batch_id(i)]
    store = project_store()
    now = _now()
    rows: dict[str, Any] = {}
    for batch_id in wanted[:MAX_POLLED]:
        record = store.get_batch(batch_id)
        if record is not None:
            rows[batch_id] = present.progress(record, now)
    return jsonify({"batches": rows, "newest": next(store.batch_ids(), None)})


def _batch(batch_id: str) -> dict[str, Any]:
    record = project_store().get_batch(batch_id)
    if record is None:
        abort(404, f"No batch {batch_id} in project {g.project}.")
    return record


def _file_link(store: ProjectStore, file_id: str | None) -> dict[str, Any] | None:
    if not file_id:
        return None
    meta = store.get_file(file_id)
    return {"id": file_id, "meta": meta}


@bp.get("/batches/<batch_id>")
def batch(batch_id: str) -> str:
    return render_batch(project_store(), _batch(batch_id))


def render_batch(store: ProjectStore, record: dict[str, Any], readonly: bool = False) -> str:
    """A batch's page; ``readonly`` (the operator viewing another project's batch): no cancel,
    no downloads (those act in the signed-in project)."""
    now = _now()
    failures: list[dict[str, str]] = []
    more = False
    error_file = record.get("error_file_id")
    if error_file and store.get_file(error_file):
        failures, more = present.failed_lines(store.file_data_path(error_file))
    errors = (record.get("errors") or {}).get("data") or []
    downloads = [
        (label, _file_link(store, record.get(key)))
        for label, key in (
            ("Input", "input_file_id"),
            ("Output", "output_file_id"),
            ("Errors", "error_file_id"),
        )
    ]
    return render_template(
        "batch.html",
        record=record,
        row=present.progress(record, now),
        timeline=present.timeline(record, now),
        errors=errors,
        failures=failures,
        more_failures=more,
        downloads=downloads,
        usage=record.get("usage") or {},
        cost=record.get("cost"),
        readonly=readonly,
        project=store.project,
    )


@bp.post("/batches/<batch_id>/cancel")
def cancel(batch_id: str) -> ResponseReturnValue:
    _batch(batch_id)
    record = batches_api.cancel_batch(batch_id).get_json()
    if record["status"] == "cancelling":
        # (the page's poll removes it once the batch no longer reads "cancelling")
        flash("Cancelling: lines in flight are stopped; finished lines are kept.", "cancelling")
    else:
        flash(f"The batch is {record['status']}; there is nothing to cancel.", "error")
    return redirect(url_for("dashboard.batch", batch_id=batch_id))


# -- files ------------------------------------------------------------------------------------
@bp.get("/files")
def files() -> str:
    store = project_store()
    newest = itertools.islice(store.iter_file_ids(), MAX_FILES_SHOWN)
    metas = [m for m in (store.get_file(i) for i in newest) if m is not None]
    settings = current().settings
    used = store.usage()  # the quota's own figures: pending uploads and held slots included
    taken = used.files + used.reserved_files
    quota = {
        "files": taken,
        "held": used.reserved_files,
        "max_files": settings.max_files,
        "files_pct": present.share(taken, settings.max_files),
        "bytes": used.bytes,
        "max_bytes": settings.max_bytes,
        "bytes_pct": present.share(used.bytes, settings.max_bytes),
    }
    return render_template(
        "files.html",
        files=metas,
        quota=quota,
        max_upload=settings.max_upload_bytes,
        endpoints=SUPPORTED_ENDPOINTS,
    )


@bp.post("/api/files")
def upload() -> tuple[Response, int]:
    """The upload the files page sends (drag and drop or the chooser), through the API's view."""
    response, status = files_api.create_file()  # (body caps: the guard, body_cap)
    return response, status


@bp.post("/files/<file_id>/batch")
def create_batch(file_id: str) -> ResponseReturnValue:
    """ "Create a batch from this file", through the API's own create."""
    body = {"input_file_id": file_id, "endpoint": request.form.get("endpoint", "")}
    try:
        response, _ = batches_api.create_from(body)
    except (ApiError, ZumikError) as error:
        flash(error.message, "error")
        return redirect(url_for("dashboard.files"))
    batch_id = response.get_json()["id"]
    flash(f"Created batch {batch_id}.")
    return redirect(url_for("dashboard.batch", batch_id=batch_id))


@bp.get("/files/<file_id>/batches")
def file_batches(file_id: str) -> str:
    """The batches over one input file (among the newest ``FILE_BATCHES_SCANNED``)."""
    store = project_store()
    meta = store.get_file(file_id) if ids.is_file_id(file_id) else None
    if meta is None:
        abort(404, f"No file {file_id} in project {g.project}.")
    now = _now()
    rows = []
    for batch_id in itertools.islice(store.batch_ids(), FILE_BATCHES_SCANNED):
        record = store.get_batch(batch_id)
        if record is not None and record.get("input_file_id") == file_id:
            rows.append((record, present.progress(record, now)))
    return render_template("file_batches.html", file=meta, rows=rows, scanned=FILE_BATCHES_SCANNED)


@bp.post("/files/<file_id>/delete")
def delete_file(file_id: str) -> ResponseReturnValue:
    meta = project_store().get_file(file_id)
    try:
        files_api.delete_file(file_id)
        flash(f"Deleted {meta['filename'] if meta else file_id}.")
    except (ApiError, ZumikError) as error:
        flash(error.message, "error")
    return redirect(url_for("dashboard.files"))


@bp.get("/files/<file_id>/content")
def download(file_id: str) -> Response:
    return files_api.file_content(file_id)
