"""The operator view (operator keys only): every project's active batches, each provider's
state as the executors' metrics snapshots report it, the executors themselves and the disk."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import abort, g, render_template

from zumik.api.context import current
from zumik.core import ids
from zumik.dashboard import bp, pages, present
from zumik.execution.routing import Router
from zumik.ops import metrics
from zumik.settings import Settings
from zumik.storage.store import ProjectStore, iter_projects

STALE_SNAPSHOT = 30.0  # seconds: an executor silent this long is shown as stale


@dataclass
class ProviderState:
    """One provider summed over the live executors (``up`` is None until one reports it)."""

    name: str
    base_url: str
    max_concurrency: int
    up: bool | None = None
    down_workers: int = 0
    in_flight: float = 0.0
    limit: float | None = None
    completed: float = 0.0
    failed: float = 0.0
    retries: float = 0.0
    throttled: float = 0.0  # 429 answers
    latency_count: float = 0.0
    latency_sum: float = 0.0
    latency_buckets: list[float] = field(default_factory=list)
    learned: float | None = None  # the delay-based limit (the largest an executor reports)
    baseline: float | None = None  # seconds per output token at no load
    recent: float | None = None  # the latest window's median of it
    yielding: int = 0  # executors giving way to the provider's other users
    probing: int = 0  # executors measuring the no-load baseline
    held: float = 0.0  # lines waiting for the provider to come back
    down_since: float | None = None

    @property
    def latency(self) -> str:
        if not self.latency_count:
            return ""
        mean = self.latency_sum / self.latency_count
        return f"{mean * 1000:,.0f} ms" if mean < 10 else f"{mean:,.1f} s"

    @property
    def per_token(self) -> str:
        """Baseline (and recent) time per output token, for the operator view."""
        if self.baseline is None:
            return ""
        text = f"{self.baseline * 1000:,.1f} ms"
        if self.recent is not None:
            text += f" (now {self.recent * 1000:,.1f} ms)"
        return text

    @property
    def p95(self) -> str:
        if not self.latency_count or not self.latency_buckets:
            return ""
        target = 0.95 * self.latency_count
        for bound, count in zip(metrics.BUCKETS, self.latency_buckets, strict=False):
            if count >= target:
                return f"≤ {bound * 1000:,.0f} ms" if bound < 10 else f"≤ {bound:g} s"
        return f"> {metrics.BUCKETS[-1]:g} s"


def _snapshots(data_dir: Path, now: float) -> list[dict[str, Any]]:
    out = []
    for path, snapshot in metrics.snapshots(data_dir):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        snapshot["_age"] = age
        snapshot["_alive"] = metrics.alive(snapshot) and age < STALE_SNAPSHOT * 10
        # a dead process of this host (a previous run, a restarted worker) is known gone at
        # once: its counters still count, but it is not listed as an executor
        snapshot["_dead_here"] = snapshot.get("host") == metrics.HOST and not metrics.alive(
            snapshot
        )
        out.append(snapshot)
    return out


def _series(mapping: dict[str, Any]) -> list[tuple[str, dict[str, str], Any]]:
    out = []
    for key, value in mapping.items():
        try:
            name, labels = json.loads(key)
            out.append((name, {k: v for k, v in labels}, value))
        except (ValueError, TypeError):
            continue
    return out


def provider_states(router: Router, snapshots: list[dict[str, Any]]) -> list[ProviderState]:
    states = {
        name: ProviderState(name, p.base_url, p.max_concurrency)
        for name, p in router.providers.items()
        if not p.is_echo
    }
    for snapshot in snapshots:
        live = snapshot["_alive"]
        for name, labels, value in _series(snapshot.get("counters", {})):
            state = states.get(labels.get("provider", ""))
            if state is None:
                continue
            if name == "zumik_lines_total":
                if labels.get("outcome") == "completed":
                    state.completed += value
                else:
                    state.failed += value
            elif name == "zumik_retries_total":
                state.retries += value
            elif name == "zumik_upstream_responses_total" and labels.get("status") == "429":
                state.throttled += value
        for name, labels, series in _series(snapshot.get("histograms", {})):
            state = states.get(labels.get("provider", ""))
            if state is not None and name == "zumik_upstream_latency_seconds":
                buckets = state.latency_buckets or [0.0] * (len(series) - 2)
                state.latency_buckets = [a + b for a, b in zip(buckets, series, strict=False)]
                state.latency_sum += series[-2]
                state.latency_count += series[-1]
        if not live:
            continue
        reported = snapshot.get("providers")
        if isinstance(reported, dict):  # each executor's own judgement (zumik.availability)
            for name, info in reported.items():
                state = states.get(name)
                if state is not None and isinstance(info, dict):
                    _merge_health(state, info)
        for name, labels, value in _series(snapshot.get("gauges", {})):
            state = states.get(labels.get("provider", ""))
            if state is None:
                continue
            if name == "zumik_inflight_requests":
                state.in_flight += value
    return sorted(states.values(), key=lambda s: s.name)


def _merge_health(state: ProviderState, info: dict[str, Any]) -> None:
    """Add one executor's view of a provider: down if any executor finds it down."""
    up = bool(info.get("up", True))
    state.up = up and state.up is not False
    state.down_workers += 0 if up else 1
    if not up and info.get("down_since"):
        state.down_since = min(state.down_since or info["down_since"], info["down_since"])
    state.limit = (state.limit or 0.0) + float(info.get("concurrency_limit") or 0)
    state.held += float(info.get("held") or 0)
    for field_name, key in (
        ("learned", "learned_limit"),
        ("baseline", "baseline_s_per_token"),
        ("recent", "recent_s_per_token"),
    ):
        value = info.get(key)
        if isinstance(value, int | float):
            current = getattr(state, field_name)
            setattr(state, field_name, value if current is None else max(current, value))
    state.yielding += 1 if info.get("yielding") else 0
    state.probing += 1 if info.get("probing") else 0
    state.throttled += float(info.get("rate_limited") or 0)


def project_summaries(settings: Settings, clock: Any) -> tuple[list[dict[str, Any]], int]:
    """Per project: its active batches (read from the ``active/`` markers) and what it stores."""
    now = clock()
    projects, stored = [], 0
    for name in sorted(iter_projects(settings.data_dir)):
        store = ProjectStore.open(settings, name, clock)
        active = [(r, present.progress(r, now)) for r in store.active_batches(with_progress=True)]
        usage = store.usage()
        stored += usage.bytes
        projects.append(
            {"name": name, "active": active, "files": usage.files, "bytes": usage.bytes}
        )
    return projects, stored


def disk(data_dir: Path) -> dict[str, Any]:
    """The data dir's filesystem as ``df`` shows it: ``free`` is what Zumik can still write
    (``f_bavail``), ``size`` is used + that (the root reserve left out), use% = used / size."""
    stats = os.statvfs(data_dir)
    free = stats.f_bavail * stats.f_frsize
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    size = used + free
    return {
        "path": str(data_dir),
        "total": stats.f_blocks * stats.f_frsize,
        "size": size,
        "used": used,
        "free": free,
        "used_pct": present.share(used, size),
    }


def _require_admin() -> None:
    if not g.get("admin"):
        abort(403, "The operator view needs an operator key (zumik keys create --admin).")


@bp.get("/operator/projects/<project>/batches/<batch_id>")
def operator_batch(project: str, batch_id: str) -> str:
    """Any project's batch, read-only, for the operator (linked from the active batches)."""
    _require_admin()
    zumik = current()
    if project not in set(iter_projects(zumik.settings.data_dir)) or not ids.is_batch_id(batch_id):
        abort(404, f"No batch {batch_id} in project {project}.")
    store = zumik.store(project)
    record = store.get_batch(batch_id)
    if record is None:
        abort(404, f"No batch {batch_id} in project {project}.")
    return pages.render_batch(store, record, readonly=True)


@bp.get("/operator")
def operator() -> str:
    _require_admin()
    zumik = current()
    now = zumik.clock()
    zumik.metrics.flush(zumik.settings.data_dir)  # this worker's numbers, fresh
    snapshots = _snapshots(zumik.settings.data_dir, now)
    projects, stored = project_summaries(zumik.settings, zumik.clock)
    executors = [
        {
            "name": f"{s.get('host')}-{s.get('pid')}",
            "age": s["_age"],
            "alive": s["_alive"],
            "stale": s["_age"] > STALE_SNAPSHOT,
        }
        for s in snapshots
        if not s["_dead_here"]
    ]
    return render_template(
        "operator.html",
        providers=provider_states(zumik.router, snapshots),
        projects=projects,
        stored=stored,
        executors=executors,
        disk=disk(zumik.settings.data_dir),
        pid=os.getpid(),
    )
