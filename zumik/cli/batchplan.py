"""``zumik batch estimate FILE`` and the options of ``zumik batch run`` that go beyond OpenAI
(``--max-cost``, ``--max-tokens``, ``--priority``, ``--window``): Zumik's extensions (issue 25),
kept apart from the plain OpenAI client in ``zumik.cli.batch``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"


def add_run_options(run_p: argparse.ArgumentParser) -> None:
    """``zumik batch run``'s Zumik-only options (sent as extra top-level fields)."""
    run_p.add_argument("--max-cost", type=float, help="stop once it has cost USD (needs prices)")
    run_p.add_argument("--max-tokens", type=int, help="stop once it has used N tokens")
    run_p.add_argument("--priority", choices=("high", "normal", "low"))
    run_p.add_argument("--window", help="completion window, e.g. 24h (default) or 4h")


def create_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The create body's extra fields ``run`` was asked for (none: a plain OpenAI create)."""
    fields: dict[str, Any] = {}
    if getattr(args, "max_cost", None) is not None:
        fields["max_cost"] = args.max_cost
    if getattr(args, "max_tokens", None) is not None:
        fields["max_total_tokens"] = args.max_tokens
    if getattr(args, "priority", None):
        fields["priority"] = args.priority
    if getattr(args, "window", None):
        fields["completion_window"] = args.window
    return fields


def add_estimate_parser(sub: Any, estimate: Any) -> None:
    est = sub.add_parser(
        "estimate", help="lines, tokens, cost and time a batch of FILE would take (Zumik)"
    )
    est.add_argument("file", help="a JSONL file, or the id of one uploaded already (file-...)")
    est.add_argument("--endpoint", default=CHAT)
    est.add_argument("--no-tokenizer", action="store_true", help="the bytes/4 heuristic only")
    est.add_argument("--keep", action="store_true", help="keep the uploaded file (print its id)")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.set_defaults(func=estimate)


def run_estimate(client: Any, args: argparse.Namespace) -> int:
    """Upload FILE (unless it is a file id), estimate it, delete the upload unless --keep."""
    uploaded = None
    file_id = args.file
    if not (file_id.startswith("file-") and not Path(file_id).exists()):
        uploaded = client.upload(Path(args.file))
        file_id = uploaded["id"]
    try:
        body = {"endpoint": args.endpoint, "tokenizer": not args.no_tokenizer}
        answer = client._call("POST", f"/files/{file_id}/estimate", json=body).json()
    finally:
        if uploaded is not None and not args.keep:
            client._call("DELETE", f"/files/{file_id}")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(describe(answer))
    if uploaded is not None and args.keep:
        print(f"uploaded as {file_id}", file=sys.stderr)
    return 0


def describe(answer: dict[str, Any]) -> str:
    """An estimate in a few lines for people."""
    out = [
        f"lines:         {answer['lines']:,}",
        f"input tokens:  {answer['input_tokens']:,} ({answer['input_tokens_method']})",
    ]
    most = answer.get("max_output_tokens")
    out.append(f"output tokens: at most {most:,}" if most is not None else "output tokens: no max")
    cost = answer.get("cost")
    if cost:
        high = f"${cost['high']:.4f}" if cost.get("high") is not None else "?"
        out.append(f"cost:          ${cost['low']:.4f} to {high} {cost['currency']}")
    else:
        out.append("cost:          unknown (no prices configured)")
    eta = answer.get("eta_seconds")
    out.append(
        f"time:          {eta['low']:,} s to {eta['high']:,} s"
        if eta
        else "time:          unknown (this provider has not been measured yet)"
    )
    for model, row in (answer.get("models") or {}).items():
        out.append(
            f"  {model} via {row['provider']}: {row['lines']:,} lines, "
            f"{row['input_tokens']:,} input tokens"
        )
    return "\n".join(out)
