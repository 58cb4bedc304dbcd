"""``heimdall check`` runs every check ``serve`` makes before it connects, so what check
passes serve never crashes on; the file is strict about types and names; serve prints no
traceback for a configuration problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heimdall.cli import main

GOOD_STREAM = """
[[streams]]
name = "sensors"
topic = "persistent://public/default/sensors"
key = "machine_id"
fields = ["temp"]
"""


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    f = tmp_path / "heimdall.toml"
    f.write_text(text)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["check", "-c", str(f)])
    finally:
        monkeypatch.undo()
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out + out.err


@pytest.mark.parametrize(("text", "says"), [
    ('[source]\nurl = "pulsar//broker"\n' + GOOD_STREAM, "source.url: String should match"),
    ('[source]\nurl = "http://broker:8080"\n' + GOOD_STREAM, "source.url"),
    ('[server]\ngrpc = "50051"\n' + GOOD_STREAM, "server.grpc"),
    (GOOD_STREAM.replace('key = "machine_id"\n', ""), "key is required"),
    (GOOD_STREAM + 'window = { count = "256" }\n', "window.count: Input should be a valid "
                                                   "integer (received '256')"),
    (GOOD_STREAM + 'dtype = "float"\n', "dtype: Input should be 'float32'"),
    (GOOD_STREAM + 'allowed_lateness_s = "5"\n', "allowed_lateness_s"),
    ('[store]\nmax_keys = 1e5\n' + GOOD_STREAM, "store.max_keys"),
    ('[store]\nevict = "no"\n' + GOOD_STREAM, "store.evict"),
    (GOOD_STREAM + '[[models]]\nname = "m"\nstream = "sensors"\npath = "nosuchmod:fn"\n',
     "models ('m').path: cannot import 'nosuchmod:fn'"),
    (GOOD_STREAM + '[[models]]\nname = "m"\nstream = "sensors"\npath = "math:pi"\n',
     "models ('m')"),
    (GOOD_STREAM + '[[models]]\nname = "m"\nstream = "sensors"\npath = "math:sqrt"\n'
     'processes = 2\n', "needs the store in shared memory"),
    ('[server]\ngrpc = "127.0.0.1:0"\ntls_cert = "/nope.pem"\ntls_key = "/nope.key"\n'
     + GOOD_STREAM, "server.tls_cert: cannot read '/nope.pem'"),
    ('[checkpoint]\ndir = "heimdall.toml/state"\n' + GOOD_STREAM,
     "checkpoint.dir: 'heimdall.toml/state' cannot be a directory"),
])
def test_check_refuses_what_serve_would_fail_on(tmp_path: Path, text: str, says: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(tmp_path, text, capsys)
    assert code == 1
    assert says in out, out


def test_an_environment_override_that_is_wrong_names_its_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEIMDALL_STORE__MAX_KEYS", "lots")
    code, out = _check(tmp_path, GOOD_STREAM, capsys)
    assert code == 1
    assert "store.max_keys (from the environment: HEIMDALL_STORE__MAX_KEYS)" in out
    monkeypatch.setenv("HEIMDALL_STORE__MAX_KEYS", "5000")  # a string from env is fine
    code, out = _check(tmp_path, GOOD_STREAM, capsys)
    assert code == 0, out


def test_a_stream_keyed_by_the_message_key_needs_no_key_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = GOOD_STREAM.replace('key = "machine_id"\n', 'key_from = "message_key"\n')
    code, out = _check(tmp_path, text, capsys)
    assert code == 0, out


def test_serve_prints_no_traceback_for_a_config_problem(tmp_path: Path) -> None:
    for text in ('[source]\nurl = "pulsar//broker"\n' + GOOD_STREAM,
                 GOOD_STREAM + '[[models]]\nname = "m"\nstream = "sensors"\n'
                               'path = "nosuchmod:fn"\n'):
        (tmp_path / "heimdall.toml").write_text(text)
        res = subprocess.run([sys.executable, "-m", "heimdall.cli", "serve"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1
        assert "Traceback" not in res.stderr
        assert "heimdall: error:" in res.stderr


def test_serve_refuses_damaged_checkpoints_unless_told_to_start_empty(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "ckpt-000000000007.hdc").write_bytes(b"not a checkpoint at all")
    (tmp_path / "heimdall.toml").write_text(
        f'[source]\ndata_dir = "{tmp_path / "data"}"\n[server]\nmetrics = ""\n'
        f'[checkpoint]\ndir = "{state}"\n' + GOOD_STREAM)
    cmd = [sys.executable, "-m", "heimdall.cli", "serve"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "ckpt-000000000007.hdc" in res.stderr
    assert "--start-empty" in res.stderr
    with subprocess.Popen([*cmd, "--start-empty"], cwd=tmp_path, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "serving; SIGINT or SIGTERM stops" in line:
                    break
            proc.terminate()
            assert proc.wait(60) == 0
        finally:
            proc.kill()


@pytest.mark.parametrize("argv", [
    ["get", "127.0.0.1:1", "s", "k", "--rows", "0"],
    ["get", "127.0.0.1:1", "s", "k", "--rows", "-3"],
    ["get", "127.0.0.1:1", "s", "k", "--timeout", "0"],
    ["top", "127.0.0.1:1", "-n", "0"],
    ["top", "127.0.0.1:1", "--interval", "-1"],
    ["demo", "--machines", "0"],
    ["demo", "--rate", "nan"],
    ["demo", "--duration", "inf"],
])
def test_command_line_numbers_out_of_range_are_usage_errors(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "expected a" in err
    assert "Traceback" not in err
