"""``EMA``: a drop-in for ``ema_pytorch.EMA`` whose update is one fused ``ema_update_`` call.

Schedule (ema-pytorch's): with ``step`` counted before the increment, the first call copies the
model; later, every ``update_every`` steps, steps ``<= update_after_step`` copy and later steps
average ``avg <- decay * avg + (1 - decay) * param`` with the warm-up decay
``clamp(1 - (1 + e / inv_gamma) ** -power, min_value, beta)``, ``e = max(step_count - update_after_step - 1, 0)``
(``decay = 0`` when ``e == 0``). Integer tensors (``num_batches_tracked``) are neither copied nor averaged.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, List, Sequence, Tuple

import torch
from torch import nn


def _floating(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


class EMA(nn.Module):
    r"""Exponential moving average of a model's floating parameters and buffers.

    Args:
        model (nn.Module): the online model (not copied; ``ema_model`` is a deep copy of it).
        beta (float): the largest decay. Default: 0.9999.
        update_after_step (int): steps up to this one copy the model instead of averaging.
        update_every (int): act only on steps divisible by this.
        inv_gamma (float), power (float), min_value (float): the warm-up schedule (module doc).
        ignore_names (Sequence[str]): parameter/buffer names left untouched.
    """

    def __init__(self, model: nn.Module, beta: float = 0.9999, update_after_step: int = 100,
                 update_every: int = 10, inv_gamma: float = 1.0, power: float = 2 / 3,
                 min_value: float = 0.0, ignore_names: Sequence[str] = ()) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"EMA: beta={beta} must be in [0, 1]")
        if update_every < 1:
            raise ValueError(f"EMA: update_every={update_every} must be >= 1")
        if inv_gamma <= 0:
            raise ValueError(f"EMA: inv_gamma={inv_gamma} must be > 0")
        self.beta, self.update_after_step, self.update_every = beta, update_after_step, update_every
        self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
        self.ignore_names = set(ignore_names)
        self.online_model = [model]  # a list so that it is not registered as a submodule
        self.ema_model = copy.deepcopy(model).eval()
        self.ema_model.requires_grad_(False)
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("initted", torch.tensor(False))
        # ema_update_ copies when its counter is 0; we keep it at >= 1 so it always averages.
        self._count = torch.ones((), dtype=torch.int64)

    @property
    def model(self) -> nn.Module:
        return self.online_model[0]

    def _pairs(self) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        avg: List[torch.Tensor] = []
        src: List[torch.Tensor] = []
        for getter in ("named_parameters", "named_buffers"):
            mine = dict(getattr(self.ema_model, getter)())
            for name, t in getattr(self.model, getter)():
                if name in self.ignore_names or name not in mine or not _floating(t):
                    continue
                avg.append(mine[name].data)
                src.append(t.data)
        return avg, src

    def get_current_decay(self) -> float:
        """The decay of the next average, ema-pytorch's warm-up formula clamped to [min_value, beta]."""
        epoch = max(int(self.step.item()) - self.update_after_step - 1, 0)
        if epoch <= 0:
            return 0.0
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        return float(min(max(value, self.min_value), self.beta))

    @torch.no_grad()
    def copy_params_from_model_to_ema(self) -> None:
        avg, src = self._pairs()
        if avg:
            torch._foreach_copy_(avg, src)

    @torch.no_grad()
    def copy_params_from_ema_to_model(self) -> None:
        avg, src = self._pairs()
        if avg:
            torch._foreach_copy_(src, avg)

    @torch.no_grad()
    def update(self) -> None:
        """Advance one step: copy, average (fused ``ema_update_``) or skip, as the schedule says."""
        step = int(self.step.item())
        self.step += 1
        if not bool(self.initted.item()):
            self.copy_params_from_model_to_ema()
            self.initted.fill_(True)
            return
        if step % self.update_every != 0:
            return
        if step <= self.update_after_step:
            self.copy_params_from_model_to_ema()
            return
        avg, src = self._pairs()
        if avg:
            count = self._count.to(avg[0].device)
            torch.ops.asymvalley.ema_update_(avg, src, count, self.get_current_decay())

    @contextmanager
    def swap_in(self) -> Iterator[nn.Module]:
        """Put the averaged weights into the online model for the block, then restore its own."""
        avg, src = self._pairs()
        saved = [t.clone() for t in src]
        with torch.no_grad():
            for dst, a in zip(src, avg):
                dst.copy_(a)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for dst, keep in zip(src, saved):
                    dst.copy_(keep)

    def forward(self, *args, **kwargs):
        return self.ema_model(*args, **kwargs)
