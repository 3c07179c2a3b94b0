"""``zumik batch retry|results`` and ``zumik batch download --merged``: Zumik's extensions
(``POST /batches/{id}/retry``, ``GET /batches/{id}/results``, ``GET /batches/{id}/merged``)
on top of the ``zumik batch`` client (``zumik.cli.batch``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from zumik.cli.batch import TERMINAL, ApiClient, _client, save_results, watch
from zumik.cli.batch import download as plain_download

RESULTS_PAGE = 1000


def retry(args: argparse.Namespace) -> int:
    client = _client(args)
    body: dict[str, Any] = {"lines": args.lines}
    if args.metadata:
        body["metadata"] = dict(m.split("=", 1) for m in args.metadata)
    batch = client._call("POST", f"/batches/{args.batch_id}/retry", json=body).json()
    total = (batch.get("request_counts") or {}).get("total", 0)
    print(f"batch {batch['id']} retries {total} lines of {args.batch_id}", file=sys.stderr)
    if not args.wait:
        print(batch["id"])
        return 0
    batch = watch(client, batch["id"], args.interval)
    save_results(client, batch, Path(args.out or f"{batch['id']}.jsonl"))
    return 0 if batch["status"] == "completed" else 1


def follow_results(
    client: ApiClient,
    batch_id: str,
    *,
    outcome: str,
    follow: bool,
    interval: float,
    out: TextIO = sys.stdout,
) -> int:
    """Print result lines page by page; with ``follow``, keep printing them as they arrive
    until the batch has ended and its last page is read (``tail -f``). Lines printed."""
    after: str | None = None
    printed = 0
    ended = client.retrieve(batch_id)["status"] in TERMINAL
    while True:
        params: dict[str, Any] = {"limit": RESULTS_PAGE, "outcome": outcome}
        if after:
            params["after"] = after
        page = client._call("GET", f"/batches/{batch_id}/results", params=params).json()
        for line in page["data"]:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
        printed += len(page["data"])
        out.flush()
        after = page["last_id"]
        if page["has_more"]:
            continue
        if ended or not follow:
            return printed
        time.sleep(interval)
        ended = client.retrieve(batch_id)["status"] in TERMINAL  # then one last page


def results(args: argparse.Namespace) -> int:
    follow_results(
        _client(args),
        args.batch_id,
        outcome=args.outcome,
        follow=args.follow,
        interval=args.interval,
    )
    return 0


def download(args: argparse.Namespace) -> int:
    """``download``, or with ``--merged`` one output and one error file for the whole chain."""
    if not args.merged:
        return plain_download(args)
    client = _client(args)
    out = Path(args.out or f"{args.batch_id}.merged.jsonl")
    errors = out.with_name(out.stem + ".errors" + out.suffix)
    for which, path in (("output", out), ("error", errors)):
        with (
            client._call(
                "GET", f"/batches/{args.batch_id}/merged", params={"file": which}, stream=True
            ) as response,
            open(path, "wb") as f,
        ):
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)
    print(f"results: {out}\nfailed lines: {errors}")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``retry`` and ``results``, and ``--merged`` on ``download``."""
    retry_p = sub.add_parser("retry", help="run a finished batch's failed/unfinished lines again")
    retry_p.add_argument("batch_id")
    retry_p.add_argument(
        "--lines", choices=("failed", "unfinished", "not_succeeded"), default="not_succeeded"
    )
    retry_p.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    retry_p.add_argument("--wait", action="store_true", help="follow it and download results")
    retry_p.add_argument("--out", help="results file with --wait (default: BATCH.jsonl)")
    retry_p.set_defaults(func=retry)
    results_p = sub.add_parser("results", help="print result lines, also while the batch runs")
    results_p.add_argument("batch_id")
    results_p.add_argument("--outcome", choices=("all", "succeeded", "failed"), default="all")
    results_p.add_argument(
        "--follow", "-f", action="store_true", help="print lines as they arrive until it ends"
    )
    results_p.set_defaults(func=results)
    download_p = sub.choices["download"]
    download_p.add_argument(
        "--merged",
        action="store_true",
        help="one output and one error file for the batch and all its retries",
    )
    download_p.set_defaults(func=download)
