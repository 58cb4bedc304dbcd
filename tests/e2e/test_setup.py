"""The two set-up commands: `make demo` installs the runtime only, `make test` adds the
test tools (torch and the other model frameworks among them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _plan(target: str, venv: Path) -> str:
    """What `make TARGET` would run in a fresh clone (make -n: nothing is run)."""
    res = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return res.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_the_runtime_only(tmp_path: Path) -> None:
    demo = _plan("demo", tmp_path / "venv")
    assert "pip install --quiet -e ." in demo
    assert "[dev]" not in demo
    assert "[test]" not in demo
    test = _plan("test", tmp_path / "venv")
    assert "pip install --quiet -e '.[dev]'" in test
    assert "pytest" in test
