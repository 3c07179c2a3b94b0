"""A litellm user's batch (its SDK batch functions, ``custom_llm_provider="openai"``, the
api_base pointed at Zumik): upload, create, poll, download both files, count failures the way
litellm's own batch helpers judge a line. Prints one JSON summary line.

Usage: python litellm_batch.py BASE_URL API_KEY MODEL WORKDIR ok|one_fails
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import litellm
from litellm.batches.batch_utils import (
    _batch_response_was_successful,
    calculate_batch_cost_and_usage,
)

TERMINAL = ("completed", "failed", "cancelled", "expired")


def main() -> None:
    base_url, key, model, workdir, scenario = sys.argv[1:6]
    auth = {"custom_llm_provider": "openai", "api_base": base_url, "api_key": key}
    texts = ["first", "#fail:400:99 second" if scenario == "one_fails" else "second", "third"]
    path = Path(workdir) / "litellm_requests.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"request-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": text}]},
                }
            )
            + "\n"
            for i, text in enumerate(texts)
        )
    )
    with open(path, "rb") as f:
        uploaded = litellm.create_file(file=f, purpose="batch", **auth)
    batch = litellm.create_batch(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id=uploaded.id, **auth
    )
    deadline = time.time() + 60
    while batch.status not in TERMINAL and time.time() < deadline:
        time.sleep(0.2)
        batch = litellm.retrieve_batch(batch_id=batch.id, **auth)

    def lines(file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        content = litellm.file_content(file_id=file_id, **auth).content
        return [json.loads(line) for line in content.splitlines()]

    output, errors = lines(batch.output_file_id), lines(batch.error_file_id)
    # what a litellm user sees as failed: unsuccessful output lines plus the error file's
    failed = [x["custom_id"] for x in output if not _batch_response_was_successful(x)]
    failed += [x["custom_id"] for x in errors]
    succeeded = [x["custom_id"] for x in output if _batch_response_was_successful(x)]
    _, usage, _ = asyncio.run(calculate_batch_cost_and_usage(output, "openai"))
    print(
        json.dumps(
            {
                "library": "litellm",
                "version": version("litellm"),
                "status": batch.status,
                "request_counts": batch.request_counts.model_dump(),
                "succeeded": succeeded,
                "failed": failed,
                "usage_total_tokens": usage.total_tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
