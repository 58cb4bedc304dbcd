"""The docs as a user reads them: every Python block in README.md and docs/ runs as written
(the blocks of one page in order, in one namespace, in a fresh directory, against the
embedded broker), every TOML block parses, one headed ``# heimdall.toml`` is written there
for the blocks after it and passes ``load_config``, and every relative link resolves inside
the repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def blocks(page: Path) -> list[tuple[str, str, int]]:
    text = page.read_text()
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text)]


def _with_python(page: Path) -> bool:
    return any(lang == "python" for lang, _, _ in blocks(page))


@pytest.mark.parametrize("page", [p for p in PAGES if _with_python(p)],
                         ids=lambda p: p.name)
def test_every_python_block_runs_as_written(page: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from heimdall.config import load_config

    monkeypatch.chdir(tmp_path)
    # the default metrics port (9464) may be taken on a test machine: a free one
    monkeypatch.setenv("HEIMDALL_SERVER__METRICS", "127.0.0.1:0")
    namespace: dict[str, Any] = {"__name__": f"docs.{page.stem}"}
    try:
        for lang, code, line in blocks(page):
            if lang == "toml" and code.startswith("# heimdall.toml"):
                (tmp_path / "heimdall.toml").write_text(code)
                load_config(tmp_path / "heimdall.toml")
            elif lang == "python":
                try:
                    exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(
                        f"{page.relative_to(ROOT)}, the block at line {line}, failed: "
                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        _close_all(namespace)


def _close_all(namespace: dict[str, Any]) -> None:
    """What a page's blocks left open (a block that ends in a failure leaves things)."""
    import heimdall as hd

    for value in namespace.values():
        if isinstance(value, hd.Pipeline):
            value.close()
        elif isinstance(value, hd.GrpcServer):
            value.stop()
        elif isinstance(value, (hd.WindowStore, hd.RemoteStore)):
            value.close()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_toml_block_parses(page: Path) -> None:
    for lang, code, line in blocks(page):
        if lang == "toml":
            try:
                tomllib.loads(code)
            except tomllib.TOMLDecodeError as exc:
                raise AssertionError(f"{page.name}:{line}: {exc}") from exc


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    text = page.read_text()
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"
    assert "../shared" not in text, f"{page.name} points outside the repository"
