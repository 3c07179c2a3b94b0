"""The ``zumik`` command: ``serve``, ``keys create|list|revoke``,
``webhooks add|list|remove|rotate``, ``batch run|status|...``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zumik.cli import batch as batchcli
from zumik.cli import webhooks as webhookcli
from zumik.settings import ConfigError, load_settings
from zumik.storage.keys import create_key, list_keys, revoke_key


def _serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.data_dir:
        env["ZUMIK_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:  # fail here, with the message, rather than in every worker
        settings = load_settings(env)
        from zumik.execution.routing import Router

        Router.from_settings(settings)
    except ConfigError as exc:
        print(f"zumik: configuration error: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
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


def _first_key(settings, port: int) -> None:
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
        for entry in list_keys(data_dir):
            role = "admin" if entry.get("admin") else "project"
            print(
                f"{entry['id']}  {entry['project']:<24} {entry['hint']:<12} {role:<8} "
                f"created {entry['created_at']}"
            )
    else:
        count = revoke_key(data_dir, args.key)
        print(f"revoked {count} key(s)")
        return 0 if count else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zumik", description=__doc__)
    parser.add_argument("--data-dir", help="storage root (default: $ZUMIK_DATA_DIR or ./data)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (gunicorn + executors)")
    # (defaults: ZUMIK_HOST, ZUMIK_PORT, ZUMIK_WORKERS, read by settings.py)
    serve.add_argument("--host", help="default: $ZUMIK_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: $ZUMIK_PORT or 8080")
    serve.add_argument("--workers", type=int, help="default: $ZUMIK_WORKERS or 2")
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
