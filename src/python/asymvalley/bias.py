"""``bias_toward_flat``: the explicit flat-side solution ``w̄ + β(w̄ − w)``.

An average ``w̄`` of SGD iterates lies inside an asymmetric valley, on the flat side of the last
iterate ``w``; moving further along ``w̄ − w`` by a factor ``β ≥ 0`` biases the solution toward
the flat side. The update is the op library's ``torch.ops.asymvalley.bias_toward_flat_`` (a C++
kernel whose arguments are validated by the Rust crate before anything is written), which
computes ``lerp(w, w̄, 1 + β)`` in the average's dtype.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .averaged_model import AveragedModel

StateDict = Mapping[str, Tensor]


def _average_tensors(average: AveragedModel | nn.Module | StateDict) -> dict[str, Tensor]:
    """The averaged tensors by model key: an ``AveragedModel``'s come from its ``state_dict``
    (so a half-precision model's average is its fp32 master), ``module.`` stripped."""
    if isinstance(average, AveragedModel):
        sd = average.state_dict()
        return {k[len("module."):]: v for k, v in sd.items() if k.startswith("module.")}
    if isinstance(average, nn.Module):
        return dict(average.state_dict())
    if isinstance(average, Mapping):
        return dict(average)
    raise TypeError(
        f"average: got {type(average).__name__}, expected an AveragedModel, an nn.Module or a state_dict"
    )


def _model_tensors(model: nn.Module | StateDict) -> Mapping[str, Tensor]:
    if isinstance(model, nn.Module):
        return model.state_dict()
    if isinstance(model, Mapping):
        return model
    raise TypeError(f"model: got {type(model).__name__}, expected an nn.Module or a state_dict")


@torch.no_grad()
def bias_toward_flat(
    average: AveragedModel | nn.Module | StateDict,
    model: nn.Module | StateDict,
    beta: float,
    *,
    into: nn.Module | None = None,
) -> dict[str, Tensor] | nn.Module:
    r"""The flat-side solution :math:`\bar w + \beta(\bar w - w)` of every floating tensor.

    Computed in the average's precision (an fp32 master for a bf16/fp16 ``AveragedModel``).
    Non-floating tensors (``num_batches_tracked``) are taken from the average unchanged.
    Everything is checked before anything is written: a refused call changes nothing.

    Args:
        average: the average :math:`\bar w`: an :class:`AveragedModel`, a module or a state_dict.
        model: the anchor :math:`w` (usually the last SGD iterate): a module or a state_dict
            holding every floating key of ``average`` with the same shape.
        beta: the bias factor, finite and :math:`\ge 0` (0 returns the average itself).
        into: if given, a module whose state_dict has the average's keys; the result is copied
            into it (cast to its dtypes) and it is returned. It may be ``model`` itself, or an
            :class:`AveragedModel` (then its fp32 masters are written too).

    Returns:
        A new state_dict (``dict`` of tensors, the average's dtypes and devices), or ``into``.

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> swa = asymvalley.AveragedModel(model)
        >>> for w in (1.0, 2.0, 3.0):                      # three iterates: w̄ = 2, the last w = 3
        ...     _ = model.weight.data.fill_(w); swa.update_parameters(model)
        >>> asymvalley.bias_toward_flat(swa, model, 0.5)   # w̄ + 0.5(w̄ - w) = 2 - 0.5
        {'weight': tensor([[1.5000]])}
        >>> _ = asymvalley.bias_toward_flat(swa, model, 0.5, into=model)  # written into the model
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta: got {beta!r}, expected a finite number >= 0")
    avg = _average_tensors(average)
    anchor = _model_tensors(model)
    names, out, avgs, anchors = [], [], [], []
    result: dict[str, Tensor] = {}
    for name, a in avg.items():
        a = a.detach()
        if not a.is_floating_point():
            result[name] = a.clone()
            continue
        if name not in anchor:
            raise KeyError(f"model: has no tensor {name!r}, which the average holds")
        w = anchor[name].detach()
        if w.shape != a.shape:
            raise ValueError(f"model: {name!r} has shape {tuple(w.shape)}, expected {tuple(a.shape)} (the average's)")
        names.append(name)
        avgs.append(a)
        anchors.append(w.to(a.device))
        out.append(torch.empty_like(a))
    if into is not None:
        target = _average_tensors(into) if isinstance(into, AveragedModel) else into.state_dict()
        for name, a in avg.items():
            if name not in target:
                raise KeyError(f"into: has no tensor {name!r}, which the average holds")
            if target[name].shape != a.shape:
                raise ValueError(
                    f"into: {name!r} has shape {tuple(target[name].shape)}, expected {tuple(a.shape)}"
                )
    if avgs:
        torch.ops.asymvalley.bias_toward_flat_(out, avgs, anchors, float(beta))
    result.update(zip(names, out))
    result = {name: result[name] for name in avg}  # the average's key order
    if into is None:
        return result
    if isinstance(into, AveragedModel):  # through its loader, so the fp32 masters follow too
        sd = into.state_dict()
        sd.update({"module." + name: value for name, value in result.items()})
        into.load_state_dict(sd)
        return into
    target = into.state_dict()
    for name, value in result.items():
        target[name].copy_(value)
    return into
