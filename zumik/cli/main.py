"""The ``zumik`` command: ``serve``, ``keys create|list|revoke``,
``webhooks add|list|remove|rotate``, ``batch run|status|...``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from zumik.cli import batch as batchcli
from zumik.cli import webhooks as webhookcli
from zumik.settings import ConfigError, Settings, load_settings, unknown_environment
from zumik.storage.keys import KEYS_FILE, create_key, list_keys, revoke_key

DESCRIPTION = (
    "Zumik: OpenAI's Files, Batch and Uploads APIs for any OpenAI-compatible model server. "
    "Commands: serve, keys create|list|revoke, webhooks add|list|remove|rotate, "
    "batch run|estimate|status|list|cancel|download."
)


def _serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.data_dir:
        env["ZUMIK_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:  # fail here, with the message, rather than in every worker
        settings = load_settings(env)
        from zumik.execution.routing import Router

        router = Router.from_settings(settings)
    except ConfigError as exc:
        print(f"zumik: configuration error: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    for warning in unknown_environment(env):
        print(f"zumik: warning: {warning}", file=sys.stderr)
    _banner(settings, router, host, port, workers)
    _first_key(settings, port)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:zumik.serve.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--chdir",
        os.getcwd(),
        "zumik.serve.wsgi:app",
    ]
    os.execvpe(sys.executable, argv, env)
    return 0  # pragma: no cover


def _banner(settings: Settings, router: Any, host: str, port: int, workers: int) -> None:
    """What this start uses, first: where the data is, the URL, workers, providers, keys."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    providers = sorted(
        f"{p.name} ({p.base_url})" for p in router.providers.values() if not p.is_echo
    )
    lines = [
        f"data dir:  {settings.data_dir}",
        f"URL:       http://{host}:{port}/  (API under /v1, dashboard at /)",
        f"workers:   {workers} (one batch executor each)",
        "providers: " + (", ".join(providers) if providers else "none: zumik-echo answers"),
    ]
    keys = settings.data_dir / KEYS_FILE
    if list_keys(settings.data_dir):
        lines.append(f"keys:      {keys} (zumik keys list; zumik keys create PROJECT)")
    elif settings.api_keys:
        lines.append("keys:      from ZUMIK_API_KEYS")
    for line in lines:
        print(f"zumik: {line}", file=sys.stderr)
    sys.stderr.flush()


def _first_key(settings: Settings, port: int) -> None:
    """Out of the box there are no keys: make one for project ``default`` and show it once."""
    if settings.api_keys or list_keys(settings.data_dir):
        return
    key = create_key(settings.data_dir, "default")
    print(
        f"zumik: no API keys yet; created one for project 'default' (shown only now):\n"
        f"  {key}\n  try: curl -H 'Authorization: Bearer {key}' "
        f"http://127.0.0.1:{port}/v1/files",
        file=sys.stderr,
    )


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else load_settings().data_dir


def _keys(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.keys_command == "create":
        try:
            key = create_key(data_dir, args.project, admin=args.admin)
        except ValueError as exc:
            print(f"zumik: {exc}", file=sys.stderr)
            return 2
        print(key)
        role = "operator key (admin) of" if args.admin else "key for"
        print(f"# {role} project {args.project!r}; it is shown only this once", file=sys.stderr)
    elif args.keys_command == "list":
        entries = sorted(list_keys(data_dir), key=lambda e: (e.get("created_at") or 0, e["id"]))
        if entries:
            print(f"{'id':<12}  {'project':<24} {'hint':<12} {'role':<8} created (UTC)")
        for entry in entries:
            role = "admin" if entry.get("admin") else "project"
            print(
                f"{entry['id']}  {entry['project']:<24} {entry['hint']:<12} {role:<8} "
                f"{_when(entry.get('created_at'))}"
            )
    else:
        count = revoke_key(data_dir, args.key)
        print(f"revoked {count} key(s)")
        return 0 if count else 1
    return 0


def _when(stamp: float | None) -> str:
    """A Unix time as ``2026-12-02 03:48:05``, UTC."""
    if not isinstance(stamp, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zumik", description=DESCRIPTION)
    parser.add_argument("--data-dir", help="storage root (default: $ZUMIK_DATA_DIR or ./data)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server (gunicorn + executors)",
        description="Run Zumik under gunicorn with a batch executor in each worker. Settings "
        "come from ZUMIK_* variables and the TOML file at ZUMIK_CONFIG (see the README).",
    )
    # (defaults: ZUMIK_HOST, ZUMIK_PORT, ZUMIK_WORKERS, read by settings.py)
    serve.add_argument(
        "--host", help="address to listen on (default: $ZUMIK_HOST or 127.0.0.1; 0.0.0.0: all)"
    )
    serve.add_argument("--port", type=int, help="port (default: $ZUMIK_PORT or 8080)")
    serve.add_argument(
        "--workers",
        type=int,
        help="gunicorn worker processes, each with its own executor (default: $ZUMIK_WORKERS or 2)",
    )
    serve.set_defaults(func=_serve)
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key for a project")
    create.add_argument("project")
    create.add_argument(
        "--admin", action="store_true", help="also an operator key: the dashboard's operator view"
    )
    key_commands.add_parser("list", help="list keys (never the secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key (the key or its listed id)")
    revoke.add_argument("key")
    keys.set_defaults(func=_keys)
    webhookcli.add_parser(commands)
    batchcli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"zumik: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
