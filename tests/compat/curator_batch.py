"""A bespokelabs-curator user's batch mode (``backend="openai"``, ``batch=True``, base_url at
Zumik): curator uploads, creates, polls and downloads itself and returns its dataset and
request statistics. Prints one JSON summary line.

Usage: python curator_batch.py BASE_URL API_KEY MODEL WORKDIR ok|one_fails
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version

from bespokelabs import curator


def main() -> None:
    base_url, key, model, _workdir, scenario = sys.argv[1:6]
    llm = curator.LLM(
        model_name=model,
        backend="openai",
        batch=True,
        backend_params={
            "base_url": base_url,
            "api_key": key,
            "completion_window": "24h",
            "batch_check_interval": 1,
            "require_all_responses": False,
            "max_retries": 1,
        },
    )
    prompts = ["first", "#fail:400:99 second" if scenario == "one_fails" else "second", "third"]
    result = llm(prompts)
    stats = result.request_stats
    rows = result.dataset.to_list()
    print(
        json.dumps(
            {
                "library": "bespokelabs-curator",
                "version": version("bespokelabs-curator"),
                "rows": [row["response"] for row in rows],
                "total": stats.total,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "tokens": result.token_usage.total,
            }
        )
    )


if __name__ == "__main__":
    main()
