"""Every check ``heimdall serve`` makes of a configuration before it connects to anything,
in one place: ``Pipeline`` runs it when built, and ``heimdall check`` runs it alone, so that a
configuration ``check`` passes never fails ``serve`` for a reason ``check`` could have seen.

What only a running system can tell (a broker that does not answer, a port taken by then) is
left to ``serve``, which says so by name.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from heimdall.config import HeimdallConfig
from heimdall.errors import ConfigError, HeimdallError


def preflight(config: HeimdallConfig) -> None:
    """Raise ``ConfigError`` listing every problem found: model import paths that do not
    import or are not models, TLS files that cannot be read, directories that cannot be
    written. Imports the configured models (as ``serve`` does)."""
    problems: list[str] = []
    for m in config.models:
        try:
            obj = import_path(m.path, f"models ({m.name!r}).path")
            feats = (import_path(m.features, f"models ({m.name!r}).features")
                     if m.features else None)
            from heimdall.models.adapters import adapt

            try:
                adapt(obj, features=feats, method=m.method)
            except HeimdallError as exc:
                raise ConfigError(f"models ({m.name!r}).path: {m.path!r}: {exc}") from None
        except HeimdallError as exc:
            problems.append(str(exc))
        if m.processes > 1 and config.store.shared_memory is None:
            problems.append(f"models ({m.name!r}).processes = {m.processes} needs the store in "
                            f"shared memory: set [store] shared_memory = \"NAME\"")
    srv = config.server
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(srv, key)
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"server.{key}: cannot read {path!r}"
                            + ("" if Path(path).exists() else " (no such file)"))
    if config.source.url == "embedded":
        problems += _writable(config.source.data_dir, "source.data_dir")
    ck = config.active_checkpoint
    if ck is not None:
        problems += _writable(ck.dir, "checkpoint.dir")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}"
                                                                      for p in problems))


def _writable(directory: str, key: str) -> list[str]:
    """[] when ``directory`` exists and is writable, or can be created where it would go."""
    p = Path(directory)
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        return [f"{key}: {directory!r} cannot be a directory: {str(p)!r} is a file"]
    if not os.access(p, os.W_OK | os.X_OK):
        return [f"{key}: {directory!r} cannot be written ({str(p)!r} is not writable)"]
    return []


def import_path(path: str, where: str) -> Any:
    """``"package.module:attr"`` to the object; ``ConfigError`` naming ``where`` if not."""
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {path!r}: {exc}") from None
    except Exception as exc:  # the module itself fails while it is imported
        raise ConfigError(f"{where}: importing {path!r} failed: {type(exc).__name__}: "
                          f"{exc}") from None
    return obj
