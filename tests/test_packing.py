"""Embeddings lines packed into one upstream request: result lines shaped like unpacked ones,
usage shared exactly, one bad line failing alone, the mis-serving check, and the pure
splitting rules (largest remainder)."""

from __future__ import annotations

import json
import logging

import pytest
import requests
from conftest import create_batch, jsonl, output_lines, upload, wait_batch
from fake_provider import item_tokens, item_vector

from zumik.execution.packcheck import close
from zumik.execution.packsplit import distribute, line_weights

EMBEDDINGS = "/v1/embeddings"
TEXTS = [
    "the quick brown fox",
    "jumps",
    "over the lazy dog and far away",
    "a",
    "packing many lines into one request",
]


def line(custom_id: str, given, model: str = "m", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": EMBEDDINGS,
        "body": {"model": model, "input": given, **body},
    }


def corpus() -> list[dict]:
    lines = [line(f"t{i}", text) for i, text in enumerate(TEXTS * 4)]
    lines.append(line("list", ["two items", "in one line, kept together"]))
    lines.append(line("tokens", [5, 6, 7]))
    return lines


def control(provider, **knobs) -> None:
    requests.post(provider.url.replace("/v1", "/_control"), json=knobs, timeout=10)


def stats(provider) -> dict:
    return requests.get(provider.url.replace("/v1", "/_stats"), timeout=10).json()


def reset(provider) -> None:
    requests.post(provider.url.replace("/v1", "/_reset"), timeout=10)


def run(make_app, provider, lines: list[dict], **overrides) -> tuple[dict, dict, dict]:
    """The finished batch, its result lines by custom_id (output and error files)."""
    app = make_app(start=True, upstream_url=provider.url, retry_backoff=0.01, **overrides)
    client = app.test_client()
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    created = create_batch(client, file_id, endpoint=EMBEDDINGS)
    assert created.status_code == 200, created.get_json()
    batch = wait_batch(client, created.get_json()["id"], timeout=60)
    out = {x["custom_id"]: x for x in output_lines(client, batch["output_file_id"])}
    errors = (
        {x["custom_id"]: x for x in output_lines(client, batch["error_file_id"])}
        if batch["error_file_id"]
        else {}
    )
    app.extensions["zumik"].executor.stop()  # the next run's batch is the next app's
    return batch, out, errors


def items_of(given) -> list:
    return given if isinstance(given, list) and not isinstance(given[0], int) else [given]


def test_packed_lines_read_like_unpacked_ones(make_app, provider):
    """Same keys, indexes from 0, the same vectors and (the tokenizer counting) the same
    usage per line as one request per line; the batch total is what the provider reported."""
    control(provider, tokenize_embeddings=True)
    lines = corpus()
    alone, alone_out, _ = run(make_app, provider, lines, embedding_pack=1)
    assert stats(provider)["requests"] == len(lines)  # no check, no pack: one request a line
    reset(provider)
    packed, packed_out, _ = run(make_app, provider, lines)
    sent = stats(provider)
    # the check's three requests, one pack of the 21 text lines (22 inputs fit into 64), and
    # the token-id line alone (texts and token lists never share a request)
    assert sent["by_path"][EMBEDDINGS] == 5
    assert sent["by_path"]["/tokenize"] >= 22  # each text once, and the first once more
    assert packed["request_counts"] == {"total": len(lines), "completed": len(lines), "failed": 0}
    reported = sum(item_tokens(item) for x in lines for item in items_of(x["body"]["input"]))
    assert packed["usage"]["input_tokens"] == reported == alone["usage"]["input_tokens"]
    # (the check's own requests are not the batch's: its usage is the lines' alone)
    for x in lines:
        mine, theirs = packed_out[x["custom_id"]], alone_out[x["custom_id"]]
        assert mine.keys() == theirs.keys()
        body, expected = mine["response"]["body"], theirs["response"]["body"]
        assert list(body) == list(expected)  # the provider's fields, in its order
        assert body["usage"] == expected["usage"]  # exact: tokenizer counts
        assert [d["index"] for d in body["data"]] == list(range(len(expected["data"])))
        assert body["data"] == expected["data"]
        assert body["data"] == [
            {"object": "embedding", "index": i, "embedding": item_vector(item)}
            for i, item in enumerate(items_of(x["body"]["input"]))
        ]
        assert mine["response"]["status_code"] == 200 and mine["error"] is None


def test_without_a_tokenizer_usage_is_shared_by_length_and_adds_up(make_app, provider):
    lines = corpus()
    batch, out, _ = run(make_app, provider, lines)
    reported = sum(item_tokens(item) for x in lines for item in items_of(x["body"]["input"]))
    shares = [out[x["custom_id"]]["response"]["body"]["usage"] for x in lines]
    assert sum(s["prompt_tokens"] for s in shares) == reported == batch["usage"]["input_tokens"]
    assert sum(s["total_tokens"] for s in shares) == reported
    assert all(isinstance(s["prompt_tokens"], int) and s["prompt_tokens"] >= 0 for s in shares)
    # the words-plus-BOS counts are not in proportion to length: some shares are off
    exact = [sum(item_tokens(i) for i in items_of(x["body"]["input"])) for x in lines]
    assert [s["prompt_tokens"] for s in shares] != exact


def test_options_split_packs_and_the_cap_is_kept(make_app, provider):
    lines = [line(f"a{i}", f"text {i}") for i in range(10)]
    lines += [line(f"b{i}", f"text {i}", dimensions=8) for i in range(10)]
    lines += [line(f"c{i}", f"text {i}", user="someone") for i in range(10)]
    batch, out, _ = run(make_app, provider, lines, embedding_pack=4)
    assert batch["request_counts"]["completed"] == 30
    # 3 option sets of 10 lines, 4 inputs a pack: 3 packs of 4, 4 and 2 each, after the check
    assert stats(provider)["by_path"] == {EMBEDDINGS: 3 + 9}
    assert all(len(x["response"]["body"]["data"]) == 1 for x in out.values())


def test_one_bad_line_in_a_pack_fails_alone_with_the_providers_error(make_app, provider):
    lines = [line(f"ok{i}", f"good text {i}") for i in range(6)]
    lines.insert(3, line("bad", "this one is #reject-ed by the provider"))
    batch, out, errors = run(make_app, provider, lines)
    assert batch["request_counts"] == {"total": 7, "completed": 6, "failed": 1}
    assert set(out) == {f"ok{i}" for i in range(6)} and set(errors) == {"bad"}
    bad = errors["bad"]["response"]
    assert bad["status_code"] == 400
    assert bad["body"]["error"]["message"].startswith("input[0] is rejected")  # alone: input[0]
    sent = stats(provider)
    # the check (3), the pack refused with a 400, then each of the 7 lines alone
    assert sent["by_path"] == {EMBEDDINGS: 3 + 1 + 7}
    for i in range(6):
        body = out[f"ok{i}"]["response"]["body"]
        assert body["data"][0]["embedding"] == item_vector(f"good text {i}")


def test_a_pack_answered_5xx_is_retried_whole(make_app, provider):
    lines = [line(f"r{i}", f"text {i}") for i in range(5)]
    lines.append(line("flaky", "#fail:500:2 then fine"))
    batch, out, _ = run(make_app, provider, lines)
    assert batch["request_counts"]["completed"] == 6
    assert stats(provider)["by_path"] == {EMBEDDINGS: 3 + 3}  # check, then the pack 3 times


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_provider_that_misserves_lists_is_detected_and_served_one_by_one(make_app, provider):
    control(provider, misserve_lists=True)
    lines = [line(f"t{i}", text) for i, text in enumerate(TEXTS * 2)]
    caplog = Records()  # Zumik's loggers do not propagate to pytest's handler once configured
    logger = logging.getLogger("zumik.packing")
    logger.addHandler(caplog)
    try:
        batch, out, _ = run(make_app, provider, lines)
    finally:
        logger.removeHandler(caplog)
    assert batch["request_counts"]["completed"] == len(lines)
    for x in lines:  # every vector is the one the text gets alone
        assert out[x["custom_id"]]["response"]["body"]["data"][0]["embedding"] == item_vector(
            x["body"]["input"]
        )
    # the check's three requests, then one request per line
    assert stats(provider)["by_path"] == {EMBEDDINGS: 3 + len(lines)}
    warnings = [r for r in caplog.records if "one at a time" in r.getMessage()]
    assert len(warnings) == 1 and "'m'" in warnings[0].getMessage()


def test_the_verdict_is_remembered_and_a_server_refusing_lists_gets_lines(make_app, provider):
    control(provider, refuse_lists=True)
    app = make_app(start=True, upstream_url=provider.url, retry_backoff=0.01)
    client = app.test_client()
    for round_ in range(2):  # the second batch asks nothing again: the verdict is kept
        reset(provider)
        lines = [line(f"t{i}", text) for i, text in enumerate(TEXTS)]
        file_id = upload(client, jsonl(lines)).get_json()["id"]
        created = create_batch(client, file_id, endpoint=EMBEDDINGS).get_json()
        batch = wait_batch(client, created["id"])
        assert batch["request_counts"]["completed"] == len(TEXTS)
        check = 3 if round_ == 0 else 0  # two texts alone, then the list it refuses
        assert stats(provider)["by_path"] == {EMBEDDINGS: check + len(TEXTS)}
        assert stats(provider)["statuses"].get("400", 0) == (1 if round_ == 0 else 0)


def test_embedding_pack_1_sends_each_line_alone(make_app, provider):
    lines = [line(f"t{i}", text) for i, text in enumerate(TEXTS)]
    batch, out, _ = run(make_app, provider, lines, embedding_pack=1)
    assert batch["request_counts"]["completed"] == len(lines)
    assert stats(provider)["by_path"] == {EMBEDDINGS: len(lines)}


def test_the_echo_model_packs_too(make_app):
    client = make_app(start=True).test_client()
    lines = [line(f"e{i}", f"text {i}", "zumik-echo") for i in range(5)]
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    batch = wait_batch(client, create_batch(client, file_id, endpoint=EMBEDDINGS).get_json()["id"])
    out = output_lines(client, batch["output_file_id"])
    assert len(out) == 5 and all(x["response"]["body"]["data"][0]["index"] == 0 for x in out)
    total = sum(x["response"]["body"]["usage"]["prompt_tokens"] for x in out)
    assert total == batch["usage"]["input_tokens"] > 0


@pytest.mark.parametrize(
    ("total", "weights", "shares"),
    [
        (10, [1, 1, 1], [4, 3, 3]),  # ties go to the earlier weight
        (7, [1, 2, 4], [1, 2, 4]),
        (5, [3, 1], [4, 1]),  # 3.75 and 1.25: the larger remainder takes the extra one
        (0, [5, 5], [0, 0]),
        (3, [0, 0, 0], [1, 1, 1]),  # no weights: equal shares
        (1, [], []),
    ],
)
def test_distribute_by_largest_remainder(total, weights, shares):
    assert distribute(total, weights) == shares
    assert sum(distribute(total, weights)) == (total if weights else 0)


def test_a_constant_per_item_gap_makes_tokenizer_shares_exact():
    """A tokenizer that leaves out the BOS each embedded item gets: the gap is the same per
    item, so adding it back gives exact shares."""
    lines_items = [["a b"], ["c"], ["d e f", "g"]]
    counts = [2, 1, 3, 1]  # the tokenizer's counts, without the BOS
    assert line_weights(lines_items, counts, reported=7 + 4) == [3, 2, 6]
    assert line_weights(lines_items, None, reported=11) == [3, 1, 6]  # by length: characters


def test_vectors_compare_with_a_relative_tolerance():
    assert close([0.1, 0.2], [0.1 + 5e-5, 0.2])
    assert not close([0.1, 0.2], [0.1 + 2e-4, 0.2])
    assert close([1000.0], [1000.05])  # relative to the largest component
    assert not close([0.1], [0.1, 0.2]) and not close(None, [0.1])
    assert not close([float("nan")], [0.1])


def test_fake_provider_vectors_do_not_depend_on_position(provider):
    one = requests.post(provider.url + "/embeddings", json={"model": "m", "input": "x"}).json()
    two = requests.post(
        provider.url + "/embeddings", json={"model": "m", "input": ["y", "x"]}
    ).json()
    assert one["data"][0]["embedding"] == two["data"][1]["embedding"]
    assert json.dumps(one["usage"]) == json.dumps({"prompt_tokens": 2, "total_tokens": 2})


def test_a_toml_provider_sets_its_own_pack_size(make_app, provider, tmp_path):
    from zumik.settings import load_settings

    config = tmp_path / "zumik.toml"
    config.write_text(
        f'[providers.local]\nbase_url = "{provider.url}"\nembedding_pack = 3\n'
        f'embedding_pack_bytes = 100000\n\n[models."e"]\nprovider = "local"\nmodel = "bge"\n'
    )
    settings = load_settings({"ZUMIK_CONFIG": str(config)})
    lines = [line(f"t{i}", f"text {i}", "e") for i in range(7)]
    batch, out, _ = run(
        make_app, provider, lines, providers=settings.providers, models=settings.models
    )
    assert batch["request_counts"]["completed"] == 7
    assert stats(provider)["by_path"] == {EMBEDDINGS: 3 + 3}  # the check, then 3 + 3 + 1
