"""Prometheus metrics, correct across gunicorn workers with nothing but the filesystem.

Each executor counts in memory and writes a snapshot to ``<data_dir>/.metrics/<host>-<pid>.json``
every few seconds; ``GET /metrics`` (``zumik.api.health``, served by any worker) sums every
snapshot (gauges only from live processes) and adds what it sees in the store: active batches
by status (only their records are read) and files and bytes stored per project (a ``stat`` of
each blob, no reads). Finished batches are counted by the executors as they end, so a scrape
costs O(active work + stored files), never O(batch records).
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zumik.settings import Settings
from zumik.storage import fsutil
from zumik.storage.store import ProjectStore, iter_projects

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
HELP = {
    "zumik_lines_total": ("counter", "Batch lines finished, by provider, model and outcome."),
    "zumik_retries_total": ("counter", "Upstream attempts that were retried, by provider."),
    "zumik_upstream_latency_seconds": ("histogram", "Latency of one upstream attempt."),
    "zumik_inflight_requests": ("gauge", "Upstream requests in flight now, by provider."),
    "zumik_provider_up": ("gauge", "1 while a provider is up, 0 while down (per worker)."),
    "zumik_provider_wait_seconds_total": (
        "counter",
        "Line-seconds spent waiting for a provider that was down.",
    ),
    "zumik_provider_downs_total": ("counter", "Times a provider was marked down."),
    "zumik_line_errors_total": (
        "counter",
        "Lines failed with internal_error (an unexpected exception in Zumik).",
    ),
    "zumik_batches": ("gauge", "Active batches (not yet terminal) by status."),
    "zumik_batches_finished_total": ("counter", "Batches that ended, by final status."),
    "zumik_stored_files": ("gauge", "Files stored, by project."),
    "zumik_stored_bytes": ("gauge", "Bytes stored, by project."),
    "zumik_webhook_deliveries_total": ("counter", "Webhook delivery attempts, by outcome."),
}
HOST = fsutil.host_id()  # host name + boot id: a rebooted host's old snapshots are not live
MAX_SERIES = 1000  # counter series per metric name in one process

Labels = tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=4096)
def _key(name: str, labels: Labels) -> str:
    return json.dumps([name, list(labels)])


class Metrics:
    """One process's counters, histograms and gauges (thread-safe).

    Histograms count per bucket internally (one increment per observation) and are made
    cumulative, as Prometheus wants them, in ``snapshot``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, float] = defaultdict(float)
        self.histograms: dict[str, list[float]] = {}  # per bucket, then +Inf, sum, count
        self.gauges: dict[str, float] = {}
        self._series: dict[str, int] = defaultdict(int)  # counter series per name
        self.providers: dict[str, dict[str, Any]] = {}  # name -> ProviderHealth.snapshot()
        self.throughput: dict[str, dict[str, Any]] = {}  # name -> measured lines/s, tokens/s

    def inc(self, name: str, labels: Labels, value: float = 1.0) -> None:
        """Add to a counter (see ``counter`` for how many series one name may have)."""
        self.counter(name, labels).inc(value)

    def counter(self, name: str, labels: Labels) -> Counter:
        """One counter series, to add to without finding it again (the per-line paths keep
        theirs). Label values can come from users (model names routed straight to a default
        provider), so past ``MAX_SERIES`` series of one name new ones are folded into one
        series whose values are ``_other``: bounded memory and scrape size."""
        key = _key(name, labels)
        with self._lock:
            if key not in self.counters:
                if self._series[name] >= MAX_SERIES:
                    key = _key(name, tuple((label, "_other") for label, _ in labels))
                else:
                    self._series[name] += 1
                self.counters[key] += 0.0
        return Counter(self, key)

    def histogram(self, name: str, labels: Labels) -> Histogram:
        """One histogram series, to observe into without finding it again."""
        key = _key(name, labels)
        with self._lock:
            series = self.histograms.get(key)
            if series is None:
                series = self.histograms[key] = [0.0] * (len(BUCKETS) + 3)
        return Histogram(self._lock, series)

    def set_gauge(self, name: str, labels: Labels, value: float) -> None:
        with self._lock:
            self.gauges[_key(name, labels)] = value

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "host": HOST,
                "counters": dict(self.counters),
                "histograms": {k: _cumulative(v) for k, v in self.histograms.items()},
                "gauges": dict(self.gauges),
                "providers": dict(self.providers),
                "throughput": dict(self.throughput),
            }

    def set_providers(self, states: dict[str, dict[str, Any]]) -> None:
        """The per-provider state shown to operators (see ``provider_states``)."""
        with self._lock:
            self.providers = states

    def set_throughput(self, measured: dict[str, dict[str, Any]]) -> None:
        """What the executor measured of each provider (``execution.throughput``)."""
        with self._lock:
            self.throughput = measured

    def flush(self, data_dir: Path) -> None:
        """Write this process's snapshot for ``/metrics`` to read."""
        directory = data_dir / ".metrics"
        directory.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write(
            directory / f"{HOST}-{os.getpid()}.json", json.dumps(self.snapshot()).encode()
        )


class Counter:
    """A handle on one counter series of a ``Metrics``."""

    __slots__ = ("_metrics", "key")

    def __init__(self, metrics: Metrics, key: str) -> None:
        self._metrics = metrics
        self.key = key

    def inc(self, value: float = 1.0) -> None:
        with self._metrics._lock:
            self._metrics.counters[self.key] += value


class Histogram:
    """A handle on one histogram series (per bucket, then +Inf, sum, count)."""

    __slots__ = ("_lock", "_series")

    def __init__(self, lock: threading.Lock, series: list[float]) -> None:
        self._lock = lock
        self._series = series

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(BUCKETS, value)  # the first bucket with value <= bound
        series = self._series
        with self._lock:
            series[index] += 1
            series[-2] += value
            series[-1] += 1


def _cumulative(series: list[float]) -> list[float]:
    """Per-bucket counts (then +Inf, sum, count) as Prometheus' cumulative ``le`` buckets."""
    out, running = [], 0.0
    for count in series[: len(BUCKETS)]:
        running += count
        out.append(running)
    return [*out, series[-2], series[-1]]


def alive(snapshot: dict[str, Any]) -> bool:
    """Whether the process that wrote ``snapshot`` runs: this host's is checked, this machine's
    from before a reboot is not, another host's is assumed to (``fsutil.owner_alive``)."""
    try:
        found = fsutil.owner_alive(str(snapshot.get("host")), int(snapshot["pid"]))
    except (KeyError, TypeError, ValueError):
        return False  # not a snapshot this code wrote
    return found is not False


def snapshots(data_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every process's last snapshot (``Metrics.flush``) with its path, in name order; an
    unreadable one is skipped (snapshots are written atomically: only damage makes one)."""
    directory = data_dir / ".metrics"
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        try:
            snapshot = fsutil.read_json(path)
        except ValueError:
            continue
        if isinstance(snapshot, dict):
            yield path, snapshot


def collect(data_dir: Path) -> dict[str, Any]:
    """Sum the snapshots of every process that wrote one."""
    counters: dict[str, float] = defaultdict(float)
    histograms: dict[str, list[float]] = {}
    gauges: dict[str, float] = defaultdict(float)
    for _, snapshot in snapshots(data_dir):
        for key, value in snapshot.get("counters", {}).items():
            counters[key] += value
        for key, series in snapshot.get("histograms", {}).items():
            total = histograms.setdefault(key, [0.0] * len(series))
            for i, value in enumerate(series):
                total[i] += value
        if alive(snapshot):
            for key, value in snapshot.get("gauges", {}).items():
                gauges[key] += value
    return {"counters": counters, "histograms": histograms, "gauges": gauges}


def provider_states(data_dir: Path) -> list[dict[str, Any]]:
    """Each live executor's view of each provider: ``ProviderHealth.snapshot()`` plus
    ``provider``, ``host`` and ``pid`` (workers judge provider health on their own)."""
    states = []
    for _, snapshot in snapshots(data_dir):
        if not alive(snapshot):
            continue
        for name, state in (snapshot.get("providers") or {}).items():
            states.append(
                {
                    "provider": name,
                    "host": snapshot.get("host"),
                    "pid": snapshot.get("pid"),
                    **state,
                }
            )
    return states


def measured_throughput(data_dir: Path) -> dict[str, dict[str, float]]:
    """Each provider's measured ``lines_per_second`` and ``tokens_per_second`` over every
    executor: summed over live processes (they send at once), else the best a process that
    has ended saw. A provider no executor has measured is absent. Values are bounded."""
    live: dict[str, dict[str, float]] = {}
    ended: dict[str, dict[str, float]] = {}
    for _, snapshot in snapshots(data_dir):
        measured = snapshot.get("throughput")
        if not isinstance(measured, dict):
            continue
        into = live if alive(snapshot) else ended
        for name, rates in list(measured.items())[:256]:
            if not isinstance(rates, dict):
                continue
            values = {k: _rate(rates.get(k)) for k in ("lines_per_second", "tokens_per_second")}
            if not all(values.values()):
                continue
            seen = into.setdefault(name, {"lines_per_second": 0.0, "tokens_per_second": 0.0})
            for key, value in values.items():
                seen[key] = seen[key] + value if into is live else max(seen[key], value)
    return {**ended, **live}


def _rate(value: Any) -> float:
    """A positive finite rate below 1e12, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if 0 < value < 1e12 else 0.0


def _labels(labels: list[list[str]], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(settings: Settings, clock) -> str:
    """The Prometheus text exposition of everything Zumik knows."""
    data = collect(settings.data_dir)
    store_gauges: dict[str, float] = defaultdict(float)
    for project in iter_projects(settings.data_dir):
        store = ProjectStore.open(settings, project, clock)
        files, stored = store.stored_blobs()
        store_gauges[_key("zumik_stored_files", (("project", project),))] = files
        store_gauges[_key("zumik_stored_bytes", (("project", project),))] = stored
        for record in store.active_batches():
            store_gauges[_key("zumik_batches", (("status", record["status"]),))] += 1
    series: dict[str, list[str]] = defaultdict(list)
    for source in (data["counters"], data["gauges"], store_gauges):
        for key, value in sorted(source.items()):
            name, labels = json.loads(key)
            series[name].append(f"{name}{_labels(labels)} {value:g}")
    for key, values in sorted(data["histograms"].items()):
        name, labels = json.loads(key)
        for bound, count in zip(BUCKETS, values, strict=False):
            le = 'le="' + str(bound) + '"'
            series[name].append(f"{name}_bucket{_labels(labels, le)} {count:g}")
        inf = 'le="+Inf"'
        series[name].append(f"{name}_bucket{_labels(labels, inf)} {values[-1]:g}")
        series[name].append(f"{name}_sum{_labels(labels)} {values[-2]:g}")
        series[name].append(f"{name}_count{_labels(labels)} {values[-1]:g}")
    out = []
    for name, (kind, text) in HELP.items():
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(series.get(name, []))
    return "\n".join(out) + "\n"
