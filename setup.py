"""Build glue for pyproject.toml: builds the op library with cargo and puts it in the package.

`cargo build --release -p asymvalley-ops` is a no-op when `target/release` is up to date (as after
`make oplib`), so installing reuses the workspace build. The copied .so has no rpath (build.rs adds
none): it resolves libtorch through the torch that `import torch` loaded.
"""
import json
import os
import pathlib
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
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


class BinaryDistribution(Distribution):
    def has_ext_modules(self):  # a platform wheel: it carries a native library
        return True


class WheelPy3Platform(bdist_wheel):
    def get_tag(self):  # the .so needs libtorch, not a particular CPython ABI
        return "py3", "none", super().get_tag()[2]


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": WheelPy3Platform})
