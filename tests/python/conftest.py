"""Puts src/python on sys.path and points the package at this checkout's release build."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYSRC = ROOT / "src" / "python"
LIBRARY = ROOT / "target" / "release" / "libasymvalley.so"

sys.path.insert(0, str(PYSRC))
os.environ.setdefault("ASYMVALLEY_LIBRARY", str(LIBRARY))
# Subprocesses started by the tests see the same package and library.
os.environ["PYTHONPATH"] = os.pathsep.join([str(PYSRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
