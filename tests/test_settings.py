"""Settings from the environment and the TOML file; config errors name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

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
