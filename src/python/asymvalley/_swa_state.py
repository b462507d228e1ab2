"""Checks for ``SWA``: its integer arguments and the state dicts it loads.

A refused argument or state raises ``ValueError`` naming what is wrong before anything changes.
"""
from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor


def avg_dtype(p: Tensor) -> torch.dtype:
    """The dtype of the average of ``p``: fp32 for half precision, else its own."""
    # Half-precision averages would stop moving once (w - w̄)/(n+1) drops below an ulp.
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


def int_arg(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, or a ValueError naming ``name``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        ok = True  # torchcontrib casts 10.0 to 10; a float that is an integer means no harm
    if not ok or value < low:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {low}")
    return int(value)


def checked_state(
    state_dict: Any, mode: str, total_steps: int | None, groups: list[list[Tensor]]
) -> tuple[list[list[Tensor] | None], list[int], int]:
    """The averages, counters and step count of ``state_dict``, or a ValueError naming what is wrong."""
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("swa"), dict) \
            or "optimizer" not in state_dict:
        raise ValueError("state_dict: expected a dict with 'optimizer' and 'swa' (SWA.state_dict())")
    swa = state_dict["swa"]
    missing = [k for k in ("mode", "steps", "n_averaged", "averages") if k not in swa]
    if missing:
        raise ValueError(f"state_dict: 'swa' lacks {missing}")
    if swa["mode"] != mode:
        raise ValueError(f"state_dict: mode {swa['mode']!r}, expected {mode!r}")
    steps, counts, avgs = swa["steps"], swa["n_averaged"], swa["averages"]
    if not isinstance(steps, int) or steps < 0 or (total_steps is not None and steps > total_steps):
        raise ValueError(f"state_dict: steps {steps!r}, expected an int in [0, total_steps={total_steps}]")
    if not isinstance(avgs, (list, tuple)) or not isinstance(counts, (list, tuple)) \
            or len(avgs) != len(groups) or len(counts) != len(groups):
        raise ValueError(f"state_dict: averages/n_averaged for {len(avgs)} groups, expected {len(groups)}")
    new_avg: list[list[Tensor] | None] = []
    for gi, (a, n, params) in enumerate(zip(avgs, counts, groups)):
        if not isinstance(n, int) or n < 0 or (n > 0) != (a is not None):
            raise ValueError(f"state_dict: group {gi} n_averaged {n!r} with averages "
                             f"{'None' if a is None else 'present'}, expected an int >= 0, > 0 iff present")
        if a is None:
            new_avg.append(None)
            continue
        if len(a) != len(params):
            raise ValueError(f"state_dict: group {gi} has {len(a)} averages, expected {len(params)}")
        out = []
        for pi, (t, p) in enumerate(zip(a, params)):
            if not isinstance(t, Tensor) or t.shape != p.shape or t.dtype != avg_dtype(p):
                got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"state_dict: group {gi} parameter {pi} average is {got}, "
                                 f"expected {tuple(p.shape)} {avg_dtype(p)}")
            out.append(t.detach().to(p.device, copy=True))
        new_avg.append(out)
    return new_avg, [int(n) for n in counts], steps

