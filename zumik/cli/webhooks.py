"""``zumik webhooks add|list|remove|rotate``: the operator's side of webhook endpoints."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from zumik.settings import load_settings
from zumik.webhooks import outbox
from zumik.webhooks import registry as webhooks


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).absolute() if args.data_dir else load_settings().data_dir


def _events(values: list[str] | None) -> list[str] | None:
    """``--events a b`` and ``--events a,b`` alike."""
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def _add(args: argparse.Namespace, data_dir: Path) -> int:
    endpoint, secret = webhooks.add_endpoint(data_dir, args.project, args.url, _events(args.events))
    print(f"{endpoint.id}\n{secret}")
    print(
        f"# endpoint {endpoint.id} of project {endpoint.project!r} for "
        f"{', '.join(endpoint.events)}; its signing secret is shown only this once",
        file=sys.stderr,
    )
    return 0


def _describe(status: dict | None) -> str:
    if status is None:
        return "no delivery yet"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status["at"]))
    return (
        f"{when} {status['type']} {status['batch_id']} attempt {status['attempt']}: "
        f"{status['result']}"
    )


def _list(args: argparse.Namespace, data_dir: Path) -> int:
    now = time.time()
    for endpoint in sorted(
        webhooks.load_endpoints(data_dir).values(), key=lambda e: (e.project, e.created_at)
    ):
        if args.project and endpoint.project != args.project:
            continue
        pending = outbox.pending_count(data_dir, endpoint.project, endpoint.id)
        print(
            f"{endpoint.id}  {endpoint.project:<24} {endpoint.url}\n"
            f"    events {','.join(endpoint.events)}; "
            f"{len(endpoint.active_secrets(now))} active secret(s); {pending} pending\n"
            f"    last: {_describe(webhooks.read_status(data_dir, endpoint.id))}"
        )
    return 0


def _remove(args: argparse.Namespace, data_dir: Path) -> int:
    if webhooks.remove_endpoint(data_dir, args.endpoint_id):
        print(f"removed {args.endpoint_id}")
        return 0
    print(f"zumik: no webhook endpoint {args.endpoint_id!r}", file=sys.stderr)
    return 1


def _rotate(args: argparse.Namespace, data_dir: Path) -> int:
    grace = args.grace if args.grace is not None else load_settings().webhook_rotation_grace
    secret = webhooks.rotate_secret(data_dir, args.endpoint_id, grace)
    print(secret)
    print(
        f"# new signing secret for {args.endpoint_id} (shown only this once); the previous "
        f"one keeps signing for {grace:g} s",
        file=sys.stderr,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    action = {"add": _add, "list": _list, "remove": _remove, "rotate": _rotate}
    try:
        return action[args.webhooks_command](args, data_dir)
    except webhooks.WebhookConfigError as exc:
        print(f"zumik: {exc}", file=sys.stderr)
        return 2


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("webhooks", help="manage webhook endpoints (batch events)")
    sub = parser.add_subparsers(dest="webhooks_command", required=True)
    add = sub.add_parser("add", help="register an endpoint; prints its id and secret once")
    add.add_argument("project")
    add.add_argument("url", help="http:// or https:// URL that receives the events")
    add.add_argument(
        "--events",
        nargs="+",
        action="extend",
        metavar="TYPE",
        help=f"event types (default all): {', '.join(webhooks.EVENT_TYPES)}",
    )
    listing = sub.add_parser("list", help="endpoints, pending deliveries and the last result")
    listing.add_argument("project", nargs="?")
    remove = sub.add_parser("remove", help="remove an endpoint (pending deliveries dropped)")
    remove.add_argument("endpoint_id")
    rotate = sub.add_parser("rotate", help="new secret; the old one signs during the grace")
    rotate.add_argument("endpoint_id")
    rotate.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long the old secret keeps signing (default $ZUMIK_WEBHOOK_ROTATION_GRACE, 86400)",
    )
    parser.set_defaults(func=_run)
