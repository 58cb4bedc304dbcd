"""Build hooks: generate the gRPC modules from proto/heimdall/v1/*.proto, build the native
core (the Rust crate in native/, as ``heimdall._core``, through setuptools-rust and cargo).

The generated code is never committed: ``pip install`` (editable or not) runs grpcio-tools'
protoc here, into ``heimdall/remote/_pb/`` (the source tree for an editable install, the
build directory otherwise). Everything else is in pyproject.toml.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustExtension

ROOT = Path(__file__).parent
PROTO_DIR = ROOT / "proto" / "heimdall" / "v1"


def generate(out: Path) -> list[str]:
    """Run protoc on every .proto into ``out``; returns the files written."""
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p) for p in PROTO_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    status = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                          f"--pyi_out={out}", f"--grpc_python_out={out}", *protos])
    if status != 0:
        raise SystemExit(f"protoc failed on {protos} (exit {status})")
    written = []
    for path in out.glob("*_pb2*.py*"):
        # protoc writes "import heimdall_pb2"; inside a package it must be relative
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", path.read_text(),
                      flags=re.M)
        path.write_text(text)
        written.append(str(path))
    init = out / "__init__.py"
    init.write_text('"""Generated from proto/heimdall/v1 by setup.py; do not edit."""\n')
    return [*written, str(init)]


class BuildPyWithProto(build_py):
    """build_py, then the gRPC modules."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            out = ROOT / "src" / "heimdall" / "remote" / "_pb"
        else:
            out = Path(self.build_lib) / "heimdall" / "remote" / "_pb"
        self._generated = generate(out)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *getattr(self, "_generated", [])]


core = RustExtension(
    "heimdall._core",
    path="native/Cargo.toml",
    binding=Binding.PyO3,
    features=["python"],
    debug=False,  # the core's speed is the point, also in an editable install
)

setup(cmdclass={"build_py": BuildPyWithProto}, rust_extensions=[core])
