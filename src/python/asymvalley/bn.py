"""``update_bn``: re-estimate BatchNorm running statistics with the average's weights.

Two weightings of the per-batch statistics :math:`s_j` (mean, unbiased variance) of batches of
sizes :math:`b_j`:

- ``"sample"`` (default; the rule of the original SWA code's ``bn_update``): every sample counts
  once, :math:`\\hat s = \\sum_j b_j s_j / \\sum_j b_j`. It is reached online by setting each
  BatchNorm's momentum to :math:`b/(n+b)` before a batch of size :math:`b`, where :math:`n` is the
  number of samples seen so far (the first batch has momentum 1).
- ``"batch"`` (``torch.optim.swa_utils.update_bn``): every batch counts once,
  :math:`\\hat s = \\frac1k\\sum_j s_j` (momentum ``None``, a cumulative average).

A short last batch is what makes the two differ.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

_WEIGHTINGS = ("sample", "batch")


@torch.no_grad()
def update_bn(
    loader: Iterable[Any],
    model: nn.Module,
    weighting: str = "sample",
    batches: int | None = None,
    device: int | str | torch.device | None = None,
) -> None:
    r"""Recomputes every BatchNorm's running mean and variance over ``loader``.

    The statistics are reset first, the model runs in training mode, and the momenta and the
    training flag are restored afterwards (also when an exception is raised mid-way).

    Args:
        loader: an iterable of batches; a list/tuple batch uses its first element as the input
            (as ``torch.optim.swa_utils.update_bn`` does). The batch size is ``input.shape[0]``.
        model: the module whose BatchNorm statistics are re-estimated (e.g. ``swa.module``).
        weighting: ``"sample"`` (each sample counts once, default) or ``"batch"`` (each batch
            counts once, PyTorch's rule).
        batches: use only the first ``batches`` batches (a positive int); ``None`` for all.
        device: if given, each input is moved there first.

    Returns:
        None; ``model``'s BatchNorm buffers are updated in place.

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        >>> swa = asymvalley.AveragedModel(model)
        >>> swa.update_parameters(model)
        >>> loader = [torch.randn(16, 4) for _ in range(3)] + [torch.randn(2, 4)]  # a short last batch
        >>> asymvalley.update_bn(loader, swa.module)                     # sample-weighted
        >>> asymvalley.update_bn(loader, swa.module, batches=2)          # on the first 2 batches
        >>> asymvalley.update_bn(loader, swa.module, weighting="batch")  # torch's per-batch rule
    """
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting: got {weighting!r}, expected one of {_WEIGHTINGS}")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches: got {batches!r}, expected a positive int or None")
    momenta: dict[nn.modules.batchnorm._BatchNorm, float | None] = {}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    try:
        for module in momenta:
            module.reset_running_stats()
            module.momentum = None
        model.train()
        seen = 0
        data = loader if batches is None else itertools.islice(loader, batches)
        for batch in data:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                x = x.to(device)
            if weighting == "sample":
                b = int(x.shape[0])
                for module in momenta:
                    module.momentum = b / (seen + b)
                seen += b
            model(x)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)
