"""heimdall.toml: defaults, validation naming the offending key, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

import heimdall as hd
from heimdall.config import build_config, load_config

STREAM = {"name": "s", "topic": "t", "key": "id", "time": "ts", "fields": ["a"]}


def test_defaults_match_the_design() -> None:
    cfg = build_config({"streams": [STREAM]})
    assert cfg.source.url == "embedded"
    assert cfg.source.subscription_type == "key_shared"
    assert cfg.streams[0].dlq_topic == "t-heimdall-dlq"
    assert cfg.streams[0].time_from == "payload"
    assert cfg.streams[0].spec().window == hd.CountWindow(256)


@pytest.mark.parametrize(("data", "where"), [
    ({"streams": []}, "streams"),
    ({}, "streams"),
    ({"streams": [STREAM], "source": {"workers": 0}}, "source.workers"),
    ({"streams": [STREAM], "source": {"url2": "x"}}, "source.url2: unknown key"),
    ({"streams": [{**STREAM, "window": {"count": 3, "seconds": 1}}]}, "streams[0] ('s').window"),
    ({"streams": [{**STREAM, "format": "xml"}]}, "streams[0] ('s').format"),
    ({"streams": [{**STREAM, "dtype": "complex64"}]}, "dtype 'complex64'"),
    ({"streams": [STREAM, STREAM]}, "stream names repeat"),
    ({"streams": [{**STREAM, "time": None, "time_from": "payload"}]}, "time_from"),
])
def test_errors_name_the_key(data: dict, where: str) -> None:
    with pytest.raises(hd.ConfigError) as err:
        build_config(data)
    assert where in str(err.value)
    assert isinstance(err.value, ValueError)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "heimdall.toml"
    f.write_text('[source]\nurl = "pulsar://a:6650"\nworkers = 3\n\n[[streams]]\nname = "s"\n'
                 'topic = "t"\nfields = ["a"]\n')
    monkeypatch.setenv("HEIMDALL_SOURCE__URL", "pulsar://b:6650")
    cfg = load_config(f)
    assert cfg.source.url == "pulsar://b:6650"
    assert cfg.source.workers == 3  # the rest of the section still comes from the file


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(hd.ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[source\n")
    with pytest.raises(hd.ConfigError, match="not valid TOML"):
        load_config(bad)


def test_pipeline_refuses_what_is_not_a_config() -> None:
    with pytest.raises(hd.ConfigError, match="from_config"):
        hd.Pipeline({"streams": [STREAM]})  # type: ignore[arg-type]
