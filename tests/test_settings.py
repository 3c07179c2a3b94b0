"""Settings from the environment and the TOML file; config errors name the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zumik
from zumik.execution.routing import Router
from zumik.settings import ConfigError, load_settings, unknown_environment


def test_defaults_match_the_contract():
    s = load_settings({})
    assert s.data_dir == Path("data").absolute() and s.concurrency == 32  # ./data, made absolute
    assert (s.max_files, s.max_bytes) == (200, 256 * 1024 * 1024)
    assert (s.max_active_batches, s.max_requests, s.max_line_bytes) == (16, 50_000, 2 << 20)
    assert (s.output_ttl, s.batch_ttl, s.lease_seconds) == (86_400, 604_800, 30.0)


def test_environment_and_toml(tmp_path):
    config = tmp_path / "zumik.toml"
    config.write_text("[server]\nmax_files = 7\nconcurrency = 5\n")
    s = load_settings(
        {
            "ZUMIK_CONFIG": str(config),
            "ZUMIK_CONCURRENCY": "9",
            "ZUMIK_API_KEYS": "k1=p1, k2=p2",
            "ZUMIK_DATA_DIR": "/srv/z",
        }
    )
    assert s.max_files == 7 and s.concurrency == 9
    assert s.api_keys == {"k1": "p1", "k2": "p2"} and s.data_dir == Path("/srv/z")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ZUMIK_MAX_FILES": "lots"}, "positive number"),
        ({"ZUMIK_MAX_FILES": "0"}, "positive number"),
        ({"ZUMIK_API_KEYS": "justakey"}, "key=project"),
        ({"ZUMIK_CLAIM_MODE": "magic"}, "claim_mode"),
        ({"ZUMIK_CONFIG": "/nonexistent.toml"}, "does not exist"),
    ],
)
def test_bad_settings_name_the_problem(env, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(env)


def test_bad_toml_names_file_and_key(tmp_path):
    config = tmp_path / "z.toml"
    config.write_text("[server]\nmax_filez = 1\n")
    with pytest.raises(ConfigError, match=r"z\.toml.*max_filez"):
        load_settings({"ZUMIK_CONFIG": str(config)})
    config.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"ZUMIK_CONFIG": str(config)})


def test_route_config_errors(tmp_path, monkeypatch):
    config = tmp_path / "z.toml"
    cases = [
        ('[models."a"]\nprovider = "ghost"\n', "unknown provider 'ghost'"),
        ('[providers.p]\nbase_url = "ftp://x"\n', "not an http"),
        (
            '[providers.p]\nbase_url = "http://x/v1"\napi_key_env = "ZK_MISSING_VAR"\n',
            "ZK_MISSING_VAR is not set",
        ),
        ('[providers.p]\nbase_url = "http://x/v1"\nrpm = -1\n', "rpm must be a positive"),
        (
            '[providers.p]\nbase_url = "http://x/v1"\n[models."a"]\nstrategy = "best"\n'
            'candidates = [{provider = "p"}]\n',
            "strategy must be one of",
        ),
    ]
    monkeypatch.delenv("ZK_MISSING_VAR", raising=False)
    for text, words in cases:
        config.write_text(text)
        with pytest.raises(ConfigError, match=words) as info:
            Router.from_settings(load_settings({"ZUMIK_CONFIG": str(config)}))
        assert str(config) in str(info.value)


def test_an_unknown_key_suggests_the_closest_one_not_all(tmp_path):
    config = tmp_path / "z.toml"
    config.write_text("[server]\nmax_filez = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"ZUMIK_CONFIG": str(config)})
    assert "did you mean `max_files`?" in str(info.value) and "max_bytes" not in str(info.value)
    config.write_text('[providers.p]\nbase_url = "http://x/v1"\nmax_concurency = 4\n')
    with pytest.raises(ConfigError) as info:
        Router.from_settings(load_settings({"ZUMIK_CONFIG": str(config)}))
    message = str(info.value)
    assert "'max_concurency'" in message and "did you mean `max_concurrency`?" in message
    assert "rpm" not in message


def test_a_misspelled_environment_variable_is_reported():
    warnings = unknown_environment(
        {"ZUMIK_MAX_FILEZ": "3", "ZUMIK_PORT": "1", "ZUMIK_MAX_FILES": "3", "HOME": "/"}
    )
    assert warnings == [
        "ZUMIK_MAX_FILEZ is not a Zumik setting; ignored (did you mean `ZUMIK_MAX_FILES`?)"
    ]
    assert unknown_environment({"ZUMIK_UPSTREAM_FSYNC_INTERVAL": "0.5"}) == []


def test_settings_is_the_only_reader_of_the_environment():
    """Every server-side module gets its configuration from ``Settings``; only the client-side
    ``zumik batch`` command reads the OpenAI SDK's variables (OPENAI_BASE_URL, OPENAI_API_KEY,
    TMPDIR), as a client of any OpenAI server would."""
    package = Path(zumik.__file__).parent
    readers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"os\.environ\b|os\.getenv\b|environ\.get\(", path.read_text())
    )
    # cli/main.py passes the environment through to gunicorn (and to load_settings) unread
    assert readers == ["cli/batch.py", "cli/main.py", "settings.py"], readers
    for path in package.rglob("*.py"):
        if path.name != "settings.py":
            assert not re.search(r"environ(\.get\(|\[)\s*[\"']ZUMIK_", path.read_text()), path


def test_the_gunicorn_config_comes_from_settings(tmp_path):
    def conf(**env: str) -> dict:
        code = (
            "import json, zumik.serve.gunicorn_conf as c;"
            "print(json.dumps([c.workers, c.bind, c.accesslog, c.threads]))"
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ZUMIK_")}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**clean, "ZUMIK_DATA_DIR": str(tmp_path), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return {"code": done.returncode, "out": done.stdout.strip(), "err": done.stderr}

    assert json.loads(conf()["out"]) == [2, "127.0.0.1:8080", None, 32]
    chosen = conf(ZUMIK_WORKERS="3", ZUMIK_HOST="0.0.0.0", ZUMIK_PORT="9000", ZUMIK_THREADS="4")
    assert json.loads(chosen["out"]) == [3, "0.0.0.0:9000", None, 4]
    bound = conf(ZUMIK_BIND="unix:/tmp/z.sock", ZUMIK_ACCESS_LOG="-")
    assert json.loads(bound["out"]) == [2, "unix:/tmp/z.sock", "-", 32]
    refused = conf(ZUMIK_WORKERS="0")  # checked as every other number is, not int()-ed blindly
    assert refused["code"] != 0 and "ZUMIK_WORKERS" in refused["err"]


def test_a_providers_key_variable_is_read_by_settings(tmp_path):
    config = tmp_path / "zumik.toml"
    config.write_text('[providers.p]\nbase_url = "http://x/v1"\napi_key_env = "ZK_TEST_KEY"\n')
    settings = load_settings({"ZUMIK_CONFIG": str(config), "ZK_TEST_KEY": "sk-from-env"})
    assert settings.provider_keys == {"ZK_TEST_KEY": "sk-from-env"}
    assert Router.from_settings(settings).providers["p"].api_key == "sk-from-env"
