"""``zumik batch run|status|list|cancel|download``: a client for any OpenAI-compatible batch
server (Zumik or OpenAI itself), with a live progress line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from zumik.cli import batchplan

TERMINAL = ("completed", "failed", "cancelled", "expired")
RETRIES = 3
# exit codes of `zumik batch run` (and of the other subcommands where they apply)
EXIT_OK, EXIT_LINES_FAILED, EXIT_ERROR, EXIT_NOT_COMPLETED = 0, 1, 2, 3
EXIT_CODES = """exit codes:
  0  the batch completed and every line succeeded
  1  the batch completed, but some lines failed (they are in the error file)
  2  the command could not run: a missing file, a bad option, an API error or no key
  3  the batch did not complete: it failed validation, was cancelled or expired
  130  interrupted (Ctrl-C), the batch left running

results go to --out (default FILE.results.jsonl), failed lines beside it: the --out name
without its last suffix (and without a trailing ".results"), plus ".errors.jsonl":
  --out r2.out -> r2.errors.jsonl; prompts.results.jsonl -> prompts.errors.jsonl"""


def fail(message: str) -> SystemExit:
    """One clear line on stderr and exit code 2 (raise what this returns)."""
    print(f"zumik: {message}", file=sys.stderr)
    return SystemExit(EXIT_ERROR)


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiClient:
    """The few Files and Batches calls the command needs, over ``requests``."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _call(
        self, method: str, path: str, *, files: Callable[[], Any] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One API call, retried on connection errors, 429 and 5xx (1, 2, 4 s apart).

        A POST carries one ``Idempotency-Key`` across its retries, so a retried upload or create
        never makes a second file or batch on a server that honours it (Zumik, OpenAI).
        ``files`` builds the multipart parts anew for each attempt.
        """
        headers = {"Idempotency-Key": f"zumik-cli-{uuid.uuid4()}"} if method == "POST" else {}
        for attempt in range(RETRIES + 1):
            try:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    timeout=self.timeout,
                    headers=headers,
                    files=files() if files else None,
                    **kwargs,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == RETRIES:
                    raise fail(f"{method} {path} failed: {exc}") from None
                time.sleep(2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < RETRIES:
                time.sleep(2**attempt)
                continue
            break
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise fail(f"{method} {path} failed: HTTP {response.status_code}: {message}")
        return response

    def upload(self, path: Path) -> dict[str, Any]:
        with ExitStack() as opened:

            def parts() -> dict[str, Any]:
                return {"file": (path.name, opened.enter_context(open(path, "rb")))}

            return self._call("POST", "/files", data={"purpose": "batch"}, files=parts).json()

    def create(
        self, file_id: str, metadata: dict[str, str] | None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **(extra or {}),
        }
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "/batches", json=body).json()

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch_id}").json()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/batches/{batch_id}/cancel").json()

    def list(self, limit: int) -> list[dict[str, Any]]:
        return self._call("GET", "/batches", params={"limit": limit}).json()["data"]

    def download(self, file_id: str, out: Path) -> int:
        size = 0
        with (
            self._call("GET", f"/files/{file_id}/content", stream=True) as response,
            open(out, "wb") as f,
        ):
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)
                size += len(chunk)
        return size


def progress_line(batch: dict[str, Any], started: float, now: float) -> str:
    """``status  done/total (failed)  rate/s  ETA`` for one batch."""
    counts = batch.get("request_counts") or {}
    total = counts.get("total") or 0
    done = (counts.get("completed") or 0) + (counts.get("failed") or 0)
    elapsed = max(now - started, 1e-9)
    rate = done / elapsed
    eta = f"{(total - done) / rate:,.0f}s" if rate > 0 and done < total else "-"
    width = 24
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "." * (width - filled)
    return (
        f"{batch['status']:<11} [{bar}] {done}/{total} "
        f"(completed {counts.get('completed', 0)}, failed {counts.get('failed', 0)}) "
        f"{rate:,.1f}/s ETA {eta}"
    )


def watch(client: ApiClient, batch_id: str, interval: float, stream=sys.stderr) -> dict[str, Any]:
    """Poll until the batch ends, drawing the progress line; Ctrl-C offers to cancel."""
    started = time.time()
    tty = stream.isatty()
    while True:
        try:
            batch = client.retrieve(batch_id)
            line = progress_line(batch, started, time.time())
            stream.write(("\r" + line + "\x1b[K") if tty else line + "\n")
            stream.flush()
            if batch["status"] in TERMINAL:
                if tty:
                    stream.write("\n")
                return batch
            time.sleep(interval)
        except KeyboardInterrupt:
            stream.write("\n")
            answer = input(f"Cancel batch {batch_id}? [y/N] ") if sys.stdin.isatty() else "n"
            if answer.strip().lower().startswith("y"):
                client.cancel(batch_id)
                stream.write("cancelling; waiting for what finished to be written\n")
            else:
                stream.write(f"left running: zumik batch status {batch_id}\n")
                raise SystemExit(130) from None


def save_results(client: ApiClient, batch: dict[str, Any], out: Path) -> None:
    if batch.get("output_file_id"):
        size = client.download(batch["output_file_id"], out)
        print(f"results: {out} ({size} bytes)")
    if batch.get("error_file_id"):
        errors = errors_path(out)
        client.download(batch["error_file_id"], errors)
        print(f"failed lines: {errors}")
    if batch.get("errors"):
        for error in batch["errors"].get("data", []):
            print(
                f"line {error.get('line')}: {error.get('code')}: {error.get('message')}",
                file=sys.stderr,
            )


def errors_path(out: Path) -> Path:
    """Where the failed lines go beside the results file ``out`` (the rule ``--help`` states):
    ``r2.out`` -> ``r2.errors.jsonl``, ``prompts.results.jsonl`` -> ``prompts.errors.jsonl``."""
    stem = out.stem if out.suffix else out.name
    stem = stem.removesuffix(".results") or stem
    return out.with_name(stem + ".errors.jsonl")


def with_model(path: Path, model: str, workdir: Path) -> Path:
    """A copy of ``path`` whose lines all ask for ``model`` (streamed, line by line)."""
    out = workdir / (path.stem + f".{model.replace('/', '_')}.jsonl")
    with open(path, "rb") as src, open(out, "wb") as dst:
        for number, raw in enumerate(src, 1):
            if raw.strip():
                try:
                    line = json.loads(raw)
                    line.setdefault("body", {})["model"] = model
                except (ValueError, AttributeError, TypeError):
                    raise fail(f"{path}: line {number} is not a JSON request object") from None
                dst.write(json.dumps(line).encode() + b"\n")
    return out


def run(args: argparse.Namespace) -> int:
    client = _client(args)
    path = Path(args.file)
    if not path.is_file():
        raise fail(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if args.model:
        path = with_model(path, args.model, Path(os.environ.get("TMPDIR", "/tmp")))
    uploaded = client.upload(path)
    batch = client.create(
        uploaded["id"],
        dict(m.split("=", 1) for m in args.metadata or []),
        batchplan.create_fields(args),
    )
    print(f"batch {batch['id']} over {uploaded['id']} ({uploaded['bytes']} bytes)", file=sys.stderr)
    batch = watch(client, batch["id"], args.interval)
    out = Path(args.out or Path(args.file).with_suffix(".results.jsonl"))
    save_results(client, batch, out)
    return exit_code(batch)


def exit_code(batch: dict[str, Any]) -> int:
    """0 all lines succeeded, 1 some failed, 3 the batch did not complete (see ``--help``)."""
    if batch["status"] != "completed":
        return EXIT_NOT_COMPLETED
    return EXIT_LINES_FAILED if (batch.get("request_counts") or {}).get("failed") else EXIT_OK


def _client(args: argparse.Namespace) -> ApiClient:
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8080/v1"
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise fail("no API key: pass --api-key or set OPENAI_API_KEY")
    return ApiClient(base_url, api_key)


def status(args: argparse.Namespace) -> int:
    client = _client(args)
    batch = (
        watch(client, args.batch_id, args.interval)
        if args.watch
        else client.retrieve(args.batch_id)
    )
    print(json.dumps(batch, indent=2))
    return 0


def list_batches(args: argparse.Namespace) -> int:
    for batch in _client(args).list(args.limit):
        counts = batch.get("request_counts") or {}
        print(
            f"{batch['id']}  {batch['status']:<11} {counts.get('completed', 0)}/"
            f"{counts.get('total', 0)} done, {counts.get('failed', 0)} failed"
        )
    return 0


def cancel(args: argparse.Namespace) -> int:
    print(_client(args).cancel(args.batch_id)["status"])
    return 0


def estimate(args: argparse.Namespace) -> int:
    return batchplan.run_estimate(_client(args), args)


def download(args: argparse.Namespace) -> int:
    client = _client(args)
    batch = client.retrieve(args.batch_id)
    if batch["status"] not in TERMINAL:
        raise fail(f"batch is {batch['status']}; wait for it to finish")
    save_results(client, batch, Path(args.out or f"{args.batch_id}.jsonl"))
    return 0


def add_parser(commands: Any) -> None:
    """Register ``zumik batch ...`` on the main parser's subcommands."""
    batch = commands.add_parser("batch", help="run and follow batches on any compatible server")
    batch.add_argument(
        "--base-url", help="API base, e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL)"
    )
    batch.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    batch.add_argument("--interval", type=float, default=1.0, help="poll every N seconds")
    sub = batch.add_subparsers(dest="batch_command", required=True)
    run_p = sub.add_parser(
        "run",
        help="upload FILE, run it as a batch, download the results",
        description="Upload FILE, run it as a batch with a live progress line, download the "
        "results.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_p.add_argument("file")
    run_p.add_argument("--model", help="send every line to this model")
    run_p.add_argument(
        "--out", help="results file (default: FILE.results.jsonl); failed lines go beside it"
    )
    run_p.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    batchplan.add_run_options(run_p)
    run_p.set_defaults(func=run)
    batchplan.add_estimate_parser(sub, estimate)
    status_p = sub.add_parser("status", help="show a batch")
    status_p.add_argument("batch_id")
    status_p.add_argument("--watch", action="store_true", help="follow it until it ends")
    status_p.set_defaults(func=status)
    list_p = sub.add_parser("list", help="recent batches")
    list_p.add_argument("--limit", type=int, default=20)
    list_p.set_defaults(func=list_batches)
    cancel_p = sub.add_parser("cancel", help="cancel a batch")
    cancel_p.add_argument("batch_id")
    cancel_p.set_defaults(func=cancel)
    download_p = sub.add_parser("download", help="download a finished batch's results")
    download_p.add_argument("batch_id")
    download_p.add_argument("--out")
    download_p.set_defaults(func=download)
    from zumik.cli import batch_results  # Zumik's extensions (retry, results, --merged)

    batch_results.add_commands(sub)
