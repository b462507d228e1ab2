"""The averaging rules and the SWA learning-rate schedule of ``torch.optim.swa_utils``, under the
same names so that one import changes.

The ``get_*_fn`` functions return PyTorch's own functions (so :class:`asymvalley.AveragedModel`
recognises ``get_swa_multi_avg_fn()`` and ``get_ema_multi_avg_fn(decay)`` and runs them fused);
``SWALR`` is PyTorch's scheduler (a subclass adding nothing but documentation).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.optim import swa_utils

AvgFn = Callable[[Tensor, Tensor, "Tensor | int"], Tensor]
MultiAvgFn = Callable[[list, list, "Tensor | int"], None]


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    r"""The multi-tensor EMA rule :math:`\bar w \leftarrow \text{decay}\,\bar w + (1-\text{decay})\,w` (PyTorch's).

    Args:
        decay: the EMA decay in (0, 1).

    Returns:
        ``fn(averaged_params, current_params, num_averaged)``, updating the first list in place;
        :class:`asymvalley.AveragedModel` runs it as one fused op.

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Linear(2, 2)
        >>> ema = asymvalley.AveragedModel(model, multi_avg_fn=asymvalley.get_ema_multi_avg_fn(0.9))
        >>> ema.update_parameters(model)
        >>> int(ema.n_averaged)
        1
    """
    return swa_utils.get_ema_multi_avg_fn(decay)


def get_swa_multi_avg_fn() -> MultiAvgFn:
    r"""The multi-tensor SWA rule :math:`\bar w \leftarrow \bar w + (w - \bar w)/(n + 1)` (PyTorch's, the default).

    Returns:
        ``fn(averaged_params, current_params, num_averaged)``; :class:`asymvalley.AveragedModel`
        runs it as one fused op.

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Linear(2, 2)
        >>> swa = asymvalley.AveragedModel(model, multi_avg_fn=asymvalley.get_swa_multi_avg_fn())
        >>> swa.update_parameters(model)
    """
    return swa_utils.get_swa_multi_avg_fn()


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    r"""The per-tensor EMA rule (PyTorch's); ``AveragedModel(avg_fn=...)`` runs it in PyTorch's loop.

    Prefer :func:`get_ema_multi_avg_fn`, the same rule, fused.

    Args:
        decay: the EMA decay in (0, 1).

    Returns:
        ``fn(averaged_param, current_param, num_averaged) -> new averaged_param``.

    Example::

        >>> import torch, asymvalley
        >>> fn = asymvalley.get_ema_avg_fn(0.5)
        >>> fn(torch.zeros(2), torch.ones(2), 1)
        tensor([0.5000, 0.5000])
    """
    return swa_utils.get_ema_avg_fn(decay)


def get_swa_avg_fn() -> AvgFn:
    r"""The per-tensor SWA rule (PyTorch's); ``AveragedModel(avg_fn=...)`` runs it in PyTorch's loop.

    Returns:
        ``fn(averaged_param, current_param, num_averaged) -> new averaged_param``.

    Example::

        >>> import torch, asymvalley
        >>> fn = asymvalley.get_swa_avg_fn()
        >>> fn(torch.zeros(2), torch.ones(2), torch.tensor(1))
        tensor([0.5000, 0.5000])
    """
    return swa_utils.get_swa_avg_fn()


class SWALR(swa_utils.SWALR):
    r"""PyTorch's ``SWALR``: anneals each group's lr to ``swa_lr`` over ``anneal_epochs`` steps.

    Args:
        optimizer: the optimizer (also :class:`asymvalley.SWA`).
        swa_lr: the final lr (a float, or one per group).
        anneal_epochs: the number of scheduler steps of the annealing.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        last_epoch: the index of the last epoch (``-1``: start fresh).

    Example::

        >>> import torch, asymvalley
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        >>> sched = asymvalley.SWALR(opt, swa_lr=0.1, anneal_epochs=2, anneal_strategy="linear")
        >>> for _ in range(3):
        ...     opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 6)
        0.1
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        swa_lr: float | list[float],
        anneal_epochs: int = 10,
        anneal_strategy: str = "cos",
        last_epoch: int = -1,
    ) -> None:
        super().__init__(optimizer, swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy,
                         last_epoch=last_epoch)
