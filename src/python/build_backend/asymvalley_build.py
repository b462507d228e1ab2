"""In-tree PEP 517 backend for the `asymvalley` Python package: setuptools, plus one build step.

pyproject.toml names this module as its backend (`backend-path`), so the repository's top level needs
no setup.py. The backend is setuptools' own; the package build differs from a pure-Python one in two
ways, both through setuptools' `cmdclass` table in pyproject.toml:

- `BuildPyWithLibrary` runs `cargo build --release -p asymvalley-ops` (a no-op when `target/release` is
  up to date, as after `make oplib`) and copies the cdylib `libasymvalley.so` into the package. The
  copy has no rpath (build.rs adds none): it resolves libtorch through the torch that `import torch`
  loaded.
- `WheelPy3Platform` tags the wheel `py3-none-<platform>`: it carries a native library that needs
  libtorch, not a particular CPython ABI.
"""
import json
import os
import pathlib
import shutil
import subprocess

from setuptools.build_meta import *  # noqa: F401,F403  (the PEP 517 hooks themselves)
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parents[3]
LIBRARY = "libasymvalley.so"


def _cargo_env() -> dict:
    """tch finds libtorch through $LIBTORCH or the `libtorch` link that `make setup` creates."""
    env = dict(os.environ)
    if "LIBTORCH" not in env and not (ROOT / "libtorch").exists():
        try:
            import torch
        except ImportError as err:
            raise SystemExit(
                "asymvalley build: libtorch not found: set LIBTORCH to a torch 2.11 install "
                "(site-packages/torch) or run `make setup`, which links ./libtorch"
            ) from err
        env["LIBTORCH"] = os.path.dirname(torch.__file__)
    return env


def build_library() -> pathlib.Path:
    """Runs cargo and returns the cdylib it reports (honours CARGO_TARGET_DIR and friends)."""
    cmd = ["cargo", "build", "--release", "-p", "asymvalley-ops", "--message-format=json-render-diagnostics"]
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=_cargo_env(), check=True, stdout=subprocess.PIPE, text=True).stdout
    except FileNotFoundError as err:
        raise SystemExit("asymvalley build: cargo not found; install Rust (rustup) first") from err
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and "cdylib" in msg["target"]["kind"]:
            for name in msg["filenames"]:
                if name.endswith(LIBRARY):
                    return pathlib.Path(name)
    raise SystemExit(f"asymvalley build: cargo built no {LIBRARY} (command: {' '.join(cmd)})")


class BuildPyWithLibrary(build_py):
    def run(self):
        # build/ is reused between builds: start the package folder afresh, so that a module removed
        # from src/python does not live on in the next wheel.
        shutil.rmtree(pathlib.Path(self.build_lib) / "asymvalley", ignore_errors=True)
        super().run()
        target = pathlib.Path(self.build_lib) / "asymvalley" / LIBRARY
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_library(), target)


class WheelPy3Platform(bdist_wheel):
    def finalize_options(self):
        # A platform wheel: it carries a native library. Saying so before setuptools finalizes makes
        # both the wheel's root and the build folder platform-specific (platlib, not purelib).
        self.distribution.has_ext_modules = lambda: True
        super().finalize_options()

    def get_tag(self):
        return "py3", "none", super().get_tag()[2]
