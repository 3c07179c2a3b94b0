"""Providers and model routes: which upstream serves a line's ``body.model``.

Sources, in order: ``[models."alias"]`` tables of the TOML file, then providers that take any
model name (the default provider from ``ZUMIK_UPSTREAM_URL``, or a TOML provider with
``default = true``), then the built-in ``zumik-echo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from zumik.settings import ConfigError, Settings, unknown_key

ECHO_MODEL = "zumik-echo"
ECHO_PROVIDER = "echo"
STRATEGIES = ("fallback", "cheapest", "spread")


@dataclass(frozen=True)
class ProviderConfig:
    """One OpenAI-compatible server (or the built-in echo provider)."""

    name: str
    base_url: str
    api_key: str | None = None
    max_concurrency: int = 64  # a ceiling (raise it with max_added_latency on)
    max_added_latency: float = 0.0  # latency increase a batch may cause to others; 0: off
    metrics_url: str | None = None  # its Prometheus /metrics (queue depth), optional
    priority: int | None = None  # sent as body.priority (servers scheduling by priority)
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 600.0
    max_attempts: int = 5
    retry_backoff: float = 0.5
    input_price: float | None = None
    output_price: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    takes_any_model: bool = False
    embedding_pack: int = 64  # embedding inputs packed into one request (1: no packing)
    embedding_pack_bytes: int = 1 << 20  # most bytes of input lines packed into one request

    @property
    def is_echo(self) -> bool:
        return self.name == ECHO_PROVIDER

    @property
    def price(self) -> float:
        """Rough cost per million tokens, for ``cheapest`` (unpriced sorts last)."""
        if self.input_price is None and self.output_price is None:
            return float("inf")
        return (self.input_price or 0.0) + (self.output_price or 0.0)


@dataclass(frozen=True)
class Target:
    """A provider and the model name sent to it."""

    provider: ProviderConfig
    model: str


@dataclass(frozen=True)
class Route:
    """How one model name is served: one or more targets and how to choose."""

    name: str
    strategy: str
    targets: tuple[Target, ...]


class Router:
    """Resolves model names to routes; built once from settings."""

    def __init__(
        self,
        providers: dict[str, ProviderConfig],
        routes: dict[str, Route],
        default: ProviderConfig | None,
    ) -> None:
        self.providers = providers
        self.routes = routes
        self.default = default
        self._passthrough: dict[str, Route] = {}  # model -> route to the default provider

    def resolve(self, model: str) -> Route | None:
        route = self.routes.get(model)
        if route is not None:
            return route
        if self.default is not None:
            route = self._passthrough.get(model)
            if route is None:
                route = Route(model, "fallback", (Target(self.default, model),))
                if len(self._passthrough) < 1024:
                    self._passthrough[model] = route
            return route
        return None

    def model_names(self) -> list[str]:
        return sorted(self.routes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        where = str(settings.config) if settings.config else "ZUMIK_CONFIG"
        providers: dict[str, ProviderConfig] = {}
        default: ProviderConfig | None = None
        echo = ProviderConfig(ECHO_PROVIDER, "builtin:echo", max_concurrency=10_000, max_attempts=1)
        providers[ECHO_PROVIDER] = echo
        if settings.upstream_url:
            _check_url(settings.upstream_url, "ZUMIK_UPSTREAM_URL")
            default = ProviderConfig(
                "default",
                settings.upstream_url.rstrip("/"),
                api_key=settings.upstream_api_key,
                max_concurrency=settings.concurrency,
                timeout=settings.request_timeout,
                max_attempts=settings.max_attempts,
                retry_backoff=settings.retry_backoff,
                takes_any_model=True,
                max_added_latency=settings.max_added_latency,
                metrics_url=settings.upstream_metrics_url,
                priority=settings.upstream_priority,
                embedding_pack=settings.embedding_pack,
                embedding_pack_bytes=settings.embedding_pack_bytes,
            )
            if default.metrics_url:
                _check_url(default.metrics_url, "ZUMIK_UPSTREAM_METRICS_URL")
            providers["default"] = default
        for name, table in settings.providers.items():
            provider = _provider(name, table, settings, where)
            providers[name] = provider
            if provider.takes_any_model:
                default = provider
        routes = {ECHO_MODEL: Route(ECHO_MODEL, "fallback", (Target(echo, ECHO_MODEL),))}
        for alias, table in settings.models.items():
            routes[alias] = _route(alias, table, providers, where)
        return cls(providers, routes, default)


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{where}: {url!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1"
        )


_PROVIDER_KEYS = {
    "base_url",
    "api_key",
    "api_key_env",
    "max_concurrency",
    "rpm",
    "tpm",
    "timeout",
    "max_attempts",
    "input_price",
    "output_price",
    "headers",
    "default",
    "max_added_latency",
    "metrics_url",
    "priority",
    "embedding_pack",
    "embedding_pack_bytes",
}


def _provider(name: str, table: dict[str, Any], settings: Settings, where: str) -> ProviderConfig:
    key = f"{where}: [providers.{name}]"
    unknown = set(table) - _PROVIDER_KEYS
    if unknown:
        raise unknown_key(key, sorted(unknown)[0], _PROVIDER_KEYS)
    if name == ECHO_PROVIDER:
        raise ConfigError(f"{key}: the name 'echo' is reserved for the built-in provider")
    base_url = table.get("base_url")
    if not isinstance(base_url, str):
        raise ConfigError(
            f'{key}: base_url is required, e.g. base_url = "http://127.0.0.1:8000/v1"'
        )
    _check_url(base_url, f"{key}.base_url")
    api_key = table.get("api_key")
    env_name = table.get("api_key_env")
    if env_name is not None:
        api_key = settings.provider_keys.get(str(env_name))  # (read by settings.py)
        if not api_key:
            raise ConfigError(
                f"{key}.api_key_env: the variable {env_name} is not set; export "
                'it or use api_key = "..."'
            )
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{key}.headers must be a table of strings")

    metrics_url = table.get("metrics_url")
    if metrics_url is not None:
        if not isinstance(metrics_url, str):
            raise ConfigError(f"{key}.metrics_url must be a URL string")
        _check_url(metrics_url, f"{key}.metrics_url")
    priority = table.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigError(
            f"{key}.priority must be an integer (lower runs sooner), not {priority!r}"
        )

    def number(
        field_name: str, default: float | None, integer: bool = False, zero_ok: bool = False
    ) -> Any:
        value = table.get(field_name, default)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (value == 0 and not zero_ok)
        ):
            raise ConfigError(f"{key}.{field_name} must be a positive number, not {value!r}")
        return int(value) if integer else float(value)

    return ProviderConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        api_key=api_key,
        max_concurrency=number("max_concurrency", settings.concurrency, integer=True),
        rpm=number("rpm", None),
        tpm=number("tpm", None),
        timeout=number("timeout", settings.request_timeout),
        max_attempts=number("max_attempts", settings.max_attempts, integer=True),
        input_price=number("input_price", None, zero_ok=True),
        output_price=number("output_price", None, zero_ok=True),
        retry_backoff=settings.retry_backoff,
        headers=dict(headers),
        takes_any_model=bool(table.get("default", False)),
        max_added_latency=number("max_added_latency", settings.max_added_latency, zero_ok=True),
        metrics_url=metrics_url,
        priority=priority,
        embedding_pack=number("embedding_pack", settings.embedding_pack, integer=True),
        embedding_pack_bytes=number(
            "embedding_pack_bytes", settings.embedding_pack_bytes, integer=True
        ),
    )


def _route(
    alias: str, table: dict[str, Any], providers: dict[str, ProviderConfig], where: str
) -> Route:
    key = f'{where}: [models."{alias}"]'

    def target(entry: dict[str, Any], at: str) -> Target:
        provider = entry.get("provider")
        if provider not in providers:
            raise ConfigError(
                f"{at}.provider: unknown provider {provider!r}; defined: "
                f"{sorted(p for p in providers if p != ECHO_PROVIDER)}"
            )
        model = entry.get("model", alias)
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{at}.model must be a non-empty string")
        return Target(providers[provider], model)

    if "candidates" in table:
        strategy = table.get("strategy", "fallback")
        if strategy not in STRATEGIES:
            raise ConfigError(f"{key}.strategy must be one of {', '.join(STRATEGIES)}")
        candidates = table["candidates"]
        if (
            not isinstance(candidates, list)
            or not candidates
            or not all(isinstance(c, dict) for c in candidates)
        ):
            raise ConfigError(
                f"{key}.candidates must be a non-empty list of {{ provider = ..., model = ... }}"
            )
        targets = tuple(target(c, f"{key}.candidates[{i}]") for i, c in enumerate(candidates))
        return Route(alias, strategy, targets)
    return Route(alias, "fallback", (target(table, key),))
