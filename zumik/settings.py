"""Settings: one frozen object built from ``ZUMIK_*`` variables and an optional TOML file.

Nothing else in Zumik reads ``os.environ``. Precedence: built-in defaults < the TOML file's
``[server]`` table < environment variables < keyword overrides (what tests pass).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration problem that must stop start-up; the message names the fix."""


@dataclass(frozen=True)
class Settings:
    """Every knob Zumik has. Field names match ``ZUMIK_<NAME>`` in upper case."""

    data_dir: Path = Path("data")
    config: Path | None = None
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> project (dev and tests)
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    concurrency: int = 32  # lines in flight per executor (a ceiling when the limiter is on)
    max_added_latency: float = 0.0  # latency a batch may add to others (0.1 = 10%); 0: off
    upstream_metrics_url: str | None = None  # the default provider's Prometheus /metrics
    upstream_priority: int | None = None  # sent as body.priority (vLLM priority scheduling)
    max_files: int = 200
    max_bytes: int = 256 * MIB
    max_records: int = 10_000  # batch and upload records and idempotency keys kept per project
    max_upload_bytes: int = 200 * MIB
    max_json_bytes: int = 1 * MIB
    max_active_batches: int = 16
    max_requests: int = 50_000
    max_line_bytes: int = 2 * MIB
    max_batch_errors: int = 100
    output_ttl: int = 86_400
    batch_ttl: int = 604_800
    idempotency_ttl: int = 86_400  # how long an Idempotency-Key replays its first answer
    lease_seconds: float = 30.0
    claim_mode: str = "flock"  # "flock" (one host) or "lease" (several hosts, shared filesystem)
    poll_interval: float = 0.25
    request_timeout: float = 600.0
    max_attempts: int = 5
    retry_backoff: float = 0.5  # first retry delay (doubles, with jitter) absent Retry-After
    shutdown_grace: float = 10.0  # seconds in-flight requests may finish on SIGTERM
    upstream_fsync_interval: float = 0.1
    provider_down_failures: int = 5  # provider-level failures in a row that mark it down
    provider_down_seconds: float = 2.0  # ... with no answer from it for at least this long
    provider_probe_max: float = 10.0  # the probe backoff's cap while a provider is down
    max_response_bytes: int = 64 * MIB  # most of one provider answer read (decompressed)
    completion_window: int = 86_400  # how many seconds the "24h" completion window lasts
    min_window: int = 3_600  # the shortest "<N>h" completion window a batch may ask for
    max_window: int = 604_800  # the longest (168h); both given as seconds or as "<N>h"
    estimate_seconds: float = 20.0  # tokenizer time one estimate may spend; heuristic after
    metrics_token: str | None = None  # bearer token for /metrics; unset: loopback clients only
    threads: int = 32  # gunicorn threads per worker (slow transfers each hold one)
    header_timeout: float = 10.0  # a request's line and headers must arrive within this
    client_timeout: float = 30.0  # longest wait for a client to send or take bytes
    client_min_rate: float = 1024.0  # bytes/s a transfer must average past client_timeout
    max_part_bytes: int = 64 * MIB  # one part of an Uploads API upload (OpenAI's limit)
    max_upload_parts: int = 1000  # parts one upload may hold
    upload_ttl: int = 3600  # a pending upload expires this long after it was created
    webhook_timeout: float = 10.0  # one webhook delivery attempt
    webhook_retry_window: float = 259_200.0  # retry a webhook for up to 72 h
    webhook_backoff: float = 5.0  # first webhook retry delay (doubles, with jitter)
    webhook_max_backoff: float = 3600.0  # longest delay between two webhook attempts
    webhook_rotation_grace: float = 86_400.0  # old secrets keep signing this long after rotate
    webhook_concurrency: int = 8  # webhook deliveries in flight per executor
    webhook_poll_interval: float = 1.0  # how often the outbox is scanned for due deliveries
    result_files: str = "split"  # "split" (OpenAI: output = successes) or "combined"
    max_embedding_inputs: int = 50_000  # embedding inputs in one batch file (OpenAI's limit)
    embedding_pack: int = 64  # embedding inputs per upstream request (1: one line at a time)
    embedding_pack_bytes: int = 1 * MIB  # most input-line bytes packed into one request
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The variables the providers' ``api_key_env`` name, read here at load time (so this module
    # stays the one reader of the environment): variable name -> value, absent when unset.
    provider_keys: dict[str, str] = field(default_factory=dict)
    max_json_depth: int = 100  # nesting of a JSON body or input line (decoders recurse)
    max_json_upload_bytes: int = 16 * MIB  # a JSON-body upload is decoded whole in memory
    dashboard_session_seconds: int = 43_200  # a dashboard sign-in lasts this long
    signin_free_attempts: int = 5  # wrong keys per client address before sign-in slows down
    signin_max_delay: int = 60  # the longest wait (s) imposed between wrong keys
    # The server process (`zumik serve`, and gunicorn with zumik.serve.gunicorn_conf):
    host: str = "127.0.0.1"  # where `zumik serve` listens
    port: int = 8080
    workers: int = 2  # gunicorn worker processes
    bind: str | None = None  # gunicorn's --bind when started directly; unset: host:port
    access_log: str | None = None  # gunicorn's access log ("-": stderr); unset: none

    def __post_init__(self) -> None:
        # Absolute from the start: a relative data dir would otherwise be read against the
        # working directory by some code and against the app's package by Flask's send_file.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (the object itself is frozen)."""
        return dataclasses.replace(self, **changes)


_INT_FIELDS = {
    "concurrency",
    "max_files",
    "max_bytes",
    "max_records",
    "max_upload_bytes",
    "max_json_bytes",
    "max_active_batches",
    "max_requests",
    "max_line_bytes",
    "max_batch_errors",
    "output_ttl",
    "batch_ttl",
    "idempotency_ttl",
    "max_attempts",
    "threads",
    "provider_down_failures",
    "max_response_bytes",
    "completion_window",
    "min_window",
    "max_window",
    "max_part_bytes",
    "max_upload_parts",
    "upload_ttl",
    "webhook_concurrency",
    "max_embedding_inputs",
    "embedding_pack",
    "embedding_pack_bytes",
    "max_json_depth",
    "max_json_upload_bytes",
    "dashboard_session_seconds",
    "signin_free_attempts",
    "signin_max_delay",
    "port",
    "workers",
}
_OPTIONAL_INT_FIELDS = {"upstream_priority"}
_FLOAT_FIELDS = {
    "retry_backoff",
    "shutdown_grace",
    "lease_seconds",
    "poll_interval",
    "request_timeout",
    "upstream_fsync_interval",
    "header_timeout",
    "client_timeout",
    "client_min_rate",
    "provider_down_seconds",
    "provider_probe_max",
    "webhook_timeout",
    "webhook_retry_window",
    "webhook_backoff",
    "webhook_max_backoff",
    "webhook_rotation_grace",
    "webhook_poll_interval",
    "estimate_seconds",
}
_HOURS_FIELDS = {"min_window", "max_window"}  # also written "<N>h"
_STR_FIELDS = {
    "upstream_url",
    "upstream_api_key",
    "upstream_metrics_url",
    "claim_mode",
    "metrics_token",
    "result_files",
    "host",
    "bind",
    "access_log",
}


# ZUMIK_* variables read by the launchers (zumik serve, gunicorn_conf), not settings fields
LAUNCH_VARIABLES = frozenset(
    {"ZUMIK_HOST", "ZUMIK_PORT", "ZUMIK_WORKERS", "ZUMIK_BIND", "ZUMIK_ACCESS_LOG"}
)


def did_you_mean(name: str, known: set[str] | frozenset[str]) -> str:
    """`` (did you mean `x`?)`` for the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def unknown_key(where: str, key: str, known: set[str] | frozenset[str]) -> ConfigError:
    """The error for an unknown key in a config table: the closest known one, not all."""
    return ConfigError(f"{where} has unknown key {key!r}{did_you_mean(key, known)}")


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Warnings for ``ZUMIK_*`` variables no setting reads (a typo is otherwise silent)."""
    env = os.environ if environ is None else environ
    known = {f"ZUMIK_{f.name.upper()}" for f in dataclasses.fields(Settings)} - {
        "ZUMIK_PROVIDERS",
        "ZUMIK_MODELS",
    }
    known |= LAUNCH_VARIABLES
    return [
        f"{name} is not a Zumik setting; ignored{did_you_mean(name, known)}"
        for name in sorted(env)
        if name.startswith("ZUMIK_") and name not in known
    ]


def parse_api_keys(text: str) -> dict[str, str]:
    """Parse ``key=project,key=project`` into a mapping."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, project = item.partition("=")
        if not sep or not key or not project:
            raise ConfigError(f"ZUMIK_API_KEYS: {item!r} is not of the form key=project")
        keys[key] = project
    return keys


def _coerce(name: str, value: Any, source: str) -> Any:
    try:
        if name in _HOURS_FIELDS and isinstance(value, str) and value.endswith("h"):
            value = int(value[:-1]) * 3600
        if name in _INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if number < 1:
                raise ValueError
            return number
        if name in _FLOAT_FIELDS:
            real = float(value)
            if real <= 0:
                raise ValueError
            return real
        if name == "max_added_latency":
            real = float(value)
            if not 0 <= real <= 100:
                raise ValueError
            return real
        if name in _OPTIONAL_INT_FIELDS:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a positive number") from None
    if name == "data_dir":
        return Path(value)
    if name == "api_keys":
        return parse_api_keys(value) if isinstance(value, str) else dict(value)
    if name == "claim_mode" and value not in ("flock", "lease"):
        raise ConfigError(f"{source}: claim_mode must be 'flock' or 'lease', not {value!r}")
    if name == "result_files" and value not in ("split", "combined"):
        raise ConfigError(f"{source}: result_files must be 'split' or 'combined', not {value!r}")
    return str(value)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (default ``os.environ``) and the TOML file it names."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(Settings)} - {
        "config",
        "providers",
        "models",
        "provider_keys",
    }
    config_path = overrides.get("config") or env.get("ZUMIK_CONFIG")
    if config_path:
        values.update(_read_toml(Path(config_path), names))
    for name in names:
        raw = env.get(f"ZUMIK_{name.upper()}")
        if raw not in (None, ""):
            values[name] = _coerce(name, raw, f"ZUMIK_{name.upper()}")
    values.update(overrides)
    wanted = {
        str(table["api_key_env"])
        for table in (values.get("providers") or {}).values()
        if isinstance(table, dict) and table.get("api_key_env") is not None
    }
    values.setdefault("provider_keys", {name: env[name] for name in wanted if env.get(name)})
    return Settings(**values)


def _read_toml(path: Path, names: set[str]) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"ZUMIK_CONFIG: {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {"config": path}
    for key, value in document.get("server", {}).items():
        if key not in names:
            raise unknown_key(f"{path}: [server]", key, names)
        values[key] = _coerce(key, value, f"{path}: [server].{key}")
    for table in ("providers", "models"):
        section = document.get(table, {})
        if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
            raise ConfigError(f"{path}: [{table}] must hold tables, e.g. [{table}.name]")
        values[table] = section
    return values
