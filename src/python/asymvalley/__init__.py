"""asymvalley for PyTorch: a faster drop-in for ``torch.optim.swa_utils``.

Importing the package loads the op library (``libasymvalley.so``), which registers
``torch.ops.asymvalley.{swa_update_, ema_update_, bias_toward_flat_}`` and the TorchScript class
``torch.classes.asymvalley.Averager``. Change one import::

    from asymvalley import AveragedModel, get_ema_multi_avg_fn   # was torch.optim.swa_utils

The library is the ``libasymvalley.so`` installed next to this file (``pip install .``);
``ASYMVALLEY_LIBRARY`` (a path to a .so) overrides it. ``_library.py`` says how it is found and checked.

The asymmetric-valley detector is ``asymvalley.valley`` (``probe``, ``hessian_directions``,
``surface``): the same Rust implementation as ``asymvalley probe``, through
``torch.ops.asymvalley.valley_probe``.
"""
from __future__ import annotations

import torch  # first: the op library resolves libtorch through the torch loaded here

from .avg_fns import (  # torch.optim.swa_utils' names, documented, so that one import changes
    SWALR,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
)
from ._library import LibraryError, library_path, load_library, loaded_library

__all__ = [
    "EMA",
    "AveragedModel",
    "SWA",
    "SWALR",
    "bias_toward_flat",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "LibraryError",
    "library_path",
    "load_library",
    "loaded_library",
    "update_bn",
]

load_library()

from .averaged_model import AveragedModel  # noqa: E402  (needs the ops registered)
from .bias import bias_toward_flat  # noqa: E402
from .bn import update_bn  # noqa: E402
from .swa import SWA  # noqa: E402
from .ema import EMA  # noqa: E402
from . import valley  # noqa: E402  (the detector: asymvalley.valley.probe / hessian_directions / surface)
