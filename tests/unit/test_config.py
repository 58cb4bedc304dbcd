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
    # the dedup horizon is twice what can be unacknowledged at once
    assert cfg.source.dedup_window is None
    assert cfg.dedup_horizon == 2 * cfg.source.workers * cfg.source.receiver_queue_size
    assert not cfg.checkpoints_on
    assert build_config({"streams": [STREAM], "checkpoint": {}}).dedup_horizon == 2 * (
        cfg.source.workers * cfg.source.receiver_queue_size + 20_000)
    assert build_config({"streams": [STREAM], "source": {"dedup_window": 60_000},
                         "checkpoint": {"enabled": False}}).dedup_horizon == 60_000


@pytest.mark.parametrize(("data", "where"), [
    ({"streams": []}, "streams"),
    ({}, "streams"),
    ({"streams": [STREAM], "source": {"workers": 0}}, "source.workers"),
    ({"streams": [STREAM], "source": {"url2": "x"}}, "source.url2: unknown key"),
    ({"streams": [{**STREAM, "window": {"count": 3, "seconds": 1}}]}, "streams[0] ('s').window"),
    ({"streams": [{**STREAM, "format": "xml"}]}, "streams[0] ('s').format"),
    ({"streams": [{**STREAM, "dtype": "complex64"}]},
     "streams[0] ('s').dtype: Input should be 'float32'"),
    ({"streams": [STREAM, STREAM]}, "stream names repeat"),
    ({"streams": [{**STREAM, "time": None, "time_from": "payload"}]}, "time_from"),
    ({"streams": [STREAM], "source": {"workers": 64, "dedup_window": 1_000_000}},
     "source.dedup_window = 1000000 is below"),
    ({"streams": [STREAM], "source": {"dedup_window": 60_000}, "checkpoint": {}},
     "+ checkpoint.max_pending 20000 = 70000"),
])
def test_errors_name_the_key(data: dict, where: str) -> None:
    with pytest.raises(hd.ConfigError) as err:
        build_config(data)
    assert where in str(err.value)
    assert isinstance(err.value, ValueError)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "heimdall.toml"
    f.write_text('[source]\nurl = "pulsar://a:6650"\nworkers = 3\n\n[[streams]]\nname = "s"\n'
                 'topic = "t"\nkey = "id"\nfields = ["a"]\n')
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


@pytest.mark.parametrize(("section", "on"), [
    (None, False), ({}, True), ({"enabled": True}, True), ({"dir": "heimdall-state"}, True),
    ({"enabled": False}, False),
])
def test_a_checkpoint_section_turns_checkpoints_on_even_with_default_values(
        section: dict | None, on: bool, tmp_path: Path) -> None:
    data: dict = {"streams": [STREAM]}
    if section is not None:
        data["checkpoint"] = section
    assert build_config(data).checkpoints_on is on
    lines = [] if section is None else ["[checkpoint]"] + [
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}".replace("'", '"')
        for k, v in section.items()]
    f = tmp_path / "heimdall.toml"
    f.write_text("\n".join(lines)
                 + '\n\n[[streams]]\nname = "s"\ntopic = "t"\nkey = "id"\nfields = ["a"]\n')
    assert load_config(f).checkpoints_on is on
