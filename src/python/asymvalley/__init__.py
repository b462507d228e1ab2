"""asymvalley for PyTorch: a faster drop-in for ``torch.optim.swa_utils``.

Importing the package loads the op library (``libasymvalley.so``), which registers
``torch.ops.asymvalley.{swa_update_, ema_update_, bias_toward_flat_}`` and the TorchScript class
``torch.classes.asymvalley.Averager``. Change one import::

    from asymvalley import AveragedModel, get_ema_multi_avg_fn   # was torch.optim.swa_utils

The library is found through ``ASYMVALLEY_LIBRARY`` (a path to the .so) or else at
``target/release/libasymvalley.so`` of the repository this package sits in (``make oplib``).
"""
from __future__ import annotations

import os
import pathlib

import torch
from torch.optim.swa_utils import (  # re-exported so that one import changes
    SWALR,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
    update_bn,
)

__all__ = [
    "AveragedModel",
    "SWA",
    "SWALR",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "library_path",
    "load_library",
    "update_bn",
]

_loaded: str | None = None


def library_path() -> pathlib.Path:
    """Where the op library is: ``$ASYMVALLEY_LIBRARY``, else the repository's release build."""
    env = os.environ.get("ASYMVALLEY_LIBRARY")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[3] / "target" / "release" / "libasymvalley.so"


def load_library() -> str:
    """Loads the op library once (loading the same path again is a no-op) and returns its path.

    Raises ``FileNotFoundError`` naming the path tried when the library has not been built.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    path = library_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"asymvalley: op library not found at {path}; build it with `make oplib` "
            "(cargo build --release --lib) or set ASYMVALLEY_LIBRARY to the .so"
        )
    resolved = str(path.resolve())
    torch.ops.load_library(resolved)
    _loaded = resolved
    return resolved


load_library()

from .averaged_model import AveragedModel  # noqa: E402  (needs the ops registered)
from .swa import SWA  # noqa: E402
