"""``SWA``: torchcontrib's optimizer wrapper, fused, resumable, and without its traps.

``SWA(optimizer, swa_start=None, swa_freq=None, swa_lr=None)`` keeps torchcontrib 0.0.2's API and
semantics:

* **auto mode** (``swa_start`` and ``swa_freq`` given): ``step()`` sets every group's lr to
  ``swa_lr`` once ``swa_start`` steps are done (if ``swa_lr`` is given), runs the inner step, counts
  it, and averages after the step that brings the count ``k`` to ``k > swa_start`` with
  ``k % swa_freq == 0``;
* **manual mode** (otherwise): ``update_swa()`` averages when the caller says so;
* the average is the running mean ``w̄ ← w̄ + (w − w̄)/(n + 1)`` (the first update copies);
* ``swap_swa_sgd()`` exchanges the model's weights and the average (calling it again exchanges
  them back); ``bn_update(loader, model)`` re-estimates BatchNorm with the sample-weighted
  momentum ``b/(n + b)`` before a batch of ``b`` samples after ``n``.

What differs, on purpose:

* one ``torch.ops.asymvalley.swa_update_`` (or ``ema_update_``) per parameter group over the whole
  list, with the counter on the host: no device synchronization per update;
* ``state_dict()`` keys the averages by the parameter's *position* in the param groups (torchcontrib
  keys them by ``id(tensor)``, which is meaningless in another process), holds only tensors, ints,
  floats and strings, so it survives ``torch.save`` / ``torch.load(weights_only=True)`` and resumes
  bitwise in a fresh process;
* ``zero_grad()`` works (torchcontrib's subclasses ``Optimizer`` without calling its
  ``__init__`` and fails with ``'SWA' object has no attribute 'defaults'`` on torch 2.x);
* ``mode="ema"`` with ``decay``; ``write_biased(beta)`` for the flat-side solution
  ``w̄ + β(w̄ − w)``; ``with opt.averaged():`` swaps the average in for a block;
* averages of bf16/fp16 parameters are kept in fp32; a swap keeps a copy of the model's own
  weights instead of writing them into the average, so swapping back is exact;
* bad input (``swa_freq`` 0, negative ``swa_start``, a negative or NaN ``swa_lr``, ``swa_start``
  after ``total_steps``, an optimizer without parameters, parameters added to the inner optimizer
  after wrapping) raises ``ValueError`` naming the argument and changes nothing.

Learning-rate schedulers attach to the inner optimizer (``SWA`` shares its ``param_groups``).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterator

import torch
from torch import Tensor, nn

__all__ = ["SWA"]


def _avg_dtype(p: Tensor) -> torch.dtype:
    # Half-precision averages would stop moving once (w - w̄)/(n+1) drops below an ulp.
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


class SWA:
    """Stochastic weight averaging (or an EMA) riding on ``optimizer.step()``; see the module doc."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        swa_start: int | None = None,
        swa_freq: int | None = None,
        swa_lr: float | None = None,
        *,
        mode: str = "swa",
        decay: float = 0.999,
        total_steps: int | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer: got {type(optimizer).__name__}, expected a torch.optim.Optimizer")
        groups = [list(g["params"]) for g in optimizer.param_groups]
        if sum(len(g) for g in groups) == 0:
            raise ValueError("optimizer: it has no parameters; expected at least one parameter to average")
        auto = swa_start is not None and swa_freq is not None
        if auto:
            if int(swa_start) != swa_start or swa_start < 0:
                raise ValueError(f"swa_start: got {swa_start}, expected an integer >= 0")
            if int(swa_freq) != swa_freq or swa_freq < 1:
                raise ValueError(f"swa_freq: got {swa_freq}, expected an integer >= 1")
            if total_steps is not None and swa_start > total_steps:
                raise ValueError(
                    f"swa_start: got {swa_start}, expected at most total_steps = {total_steps} "
                    "(averaging would start after the end of training)"
                )
        if swa_lr is not None and not (isinstance(swa_lr, (int, float)) and math.isfinite(swa_lr) and swa_lr >= 0):
            raise ValueError(f"swa_lr: got {swa_lr}, expected a finite number >= 0")
        if not auto and swa_lr is not None:
            warnings.warn("SWA: manual mode (swa_start or swa_freq is None), so swa_lr is ignored", stacklevel=2)
        if mode not in ("swa", "ema"):
            raise ValueError(f"mode: got {mode!r}, expected 'swa' or 'ema'")
        if mode == "ema" and not (0.0 < decay < 1.0):
            raise ValueError(f"decay: got {decay}, expected a number in the open interval (0, 1)")
        self.optimizer = optimizer
        self._auto = auto
        self.swa_start = int(swa_start) if auto else None
        self.swa_freq = int(swa_freq) if auto else None
        self.swa_lr = float(swa_lr) if (auto and swa_lr is not None) else None
        self.mode = mode
        self.decay = float(decay)
        self._groups = groups
        self._avg: list[list[Tensor] | None] = [None for _ in groups]
        self._n = [torch.zeros((), dtype=torch.int64) for _ in groups]  # host counters
        self._steps = 0
        self._backup: list[list[Tensor]] | None = None

    # -- torch.optim.Optimizer surface ---------------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group to the inner optimizer and tracks it (its average starts empty)."""
        self._check_unchanged("add_param_group")
        self.optimizer.add_param_group(param_group)
        self._groups.append(list(self.optimizer.param_groups[-1]["params"]))
        self._avg.append(None)
        self._n.append(torch.zeros((), dtype=torch.int64))

    # -- averaging -----------------------------------------------------------------------------
    def _check_unchanged(self, op: str) -> None:
        groups = self.optimizer.param_groups
        same = len(groups) == len(self._groups) and all(
            len(g["params"]) == len(ps) and all(a is b for a, b in zip(g["params"], ps))
            for g, ps in zip(groups, self._groups)
        )
        if not same:
            raise ValueError(
                f"{op}: the inner optimizer's parameters changed after wrapping "
                f"({[len(g['params']) for g in groups]} per group, wrapped "
                f"{[len(ps) for ps in self._groups]}); expected the same parameters "
                "(add groups through SWA.add_param_group)"
            )
        if self._backup is not None:
            raise ValueError(f"{op}: called while the average is swapped in; expected swap_swa_sgd() first")

    @torch.no_grad()
    def _update_group(self, i: int) -> None:
        params = self._groups[i]
        if self._avg[i] is None:
            self._avg[i] = [torch.zeros_like(p, dtype=_avg_dtype(p)) for p in params]
        if self.mode == "swa":
            torch.ops.asymvalley.swa_update_(self._avg[i], params, self._n[i])
        else:
            torch.ops.asymvalley.ema_update_(self._avg[i], params, self._n[i], self.decay)

    def update_swa_group(self, group: dict[str, Any]) -> None:
        """Averages the parameters of one param group (torchcontrib's ``update_swa_group``)."""
        self._check_unchanged("update_swa_group")
        i = next((k for k, g in enumerate(self.optimizer.param_groups) if g is group), None)
        if i is None:
            raise ValueError("group: not one of this optimizer's param_groups")
        self._update_group(i)

    def update_swa(self) -> None:
        """Averages every parameter now (manual mode, or an extra update in auto mode)."""
        self._check_unchanged("update_swa")
        for i in range(len(self._groups)):
            self._update_group(i)

    def step(self, closure=None):
        """The inner step; in auto mode the SWA learning rate before it and the average after."""
        self._check_unchanged("step")
        if self.swa_lr is not None and self._steps >= self.swa_start:
            for g in self.optimizer.param_groups:
                g["lr"] = self.swa_lr
        loss = self.optimizer.step(closure)
        self._steps += 1
        if self._auto and self._steps > self.swa_start and self._steps % self.swa_freq == 0:
            for i in range(len(self._groups)):
                self._update_group(i)
        return loss

    @property
    def n_averaged(self) -> list[int]:
        """Updates per param group (host counters)."""
        return [int(n) for n in self._n]

    def averages(self) -> list[list[Tensor] | None]:
        """The averages per group (fp32 for half-precision parameters), None before an update."""
        return [None if a is None else list(a) for a in self._avg]

    # -- using the average ---------------------------------------------------------------------
    def _pairs(self, op: str) -> tuple[list[Tensor], list[Tensor]]:
        ps, avs = [], []
        for params, avg in zip(self._groups, self._avg):
            if avg is None:
                continue
            ps.extend(params)
            avs.extend(avg)
        if not ps:
            raise ValueError(f"{op}: called before any update; expected at least one update_swa/auto update")
        return ps, avs

    @torch.no_grad()
    def swap_swa_sgd(self) -> None:
        """Puts the average into the model; called again, puts the model's own weights back."""
        if self._backup is not None:
            ps = [p for params, avg in zip(self._groups, self._avg) if avg is not None for p in params]
            torch._foreach_copy_(ps, self._backup)
            self._backup = None
            return
        self._check_unchanged("swap_swa_sgd")
        ps, avs = self._pairs("swap_swa_sgd")
        backup = [p.detach().clone() for p in ps]
        torch._foreach_copy_(ps, avs)
        self._backup = backup

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """``with opt.averaged(): evaluate(model)``: the average is in the model inside the block."""
        self.swap_swa_sgd()
        try:
            yield
        finally:
            self.swap_swa_sgd()

    @torch.no_grad()
    def write_biased(self, beta: float) -> None:
        """Writes ``w̄ + β(w̄ − w)`` into the model, ``w`` its current weights (the last iterate)."""
        if not (isinstance(beta, (int, float)) and math.isfinite(beta)):
            raise ValueError(f"beta: got {beta}, expected a finite number")
        self._check_unchanged("write_biased")
        ps, avs = self._pairs("write_biased")
        torch.ops.asymvalley.bias_toward_flat_(ps, [a.to(p.dtype) for a, p in zip(avs, ps)], ps, float(beta))

    @staticmethod
    @torch.no_grad()
    def bn_update(loader, model: nn.Module, device=None) -> None:
        """One pass over ``loader`` re-estimating BatchNorm statistics, batches weighted by size.

        The running mean and variance are reset to 0 and 1, and before a batch of ``b`` samples
        after ``n`` every BatchNorm momentum is ``b/(n + b)``, so the result is the size-weighted
        mean of the batch statistics (torchcontrib's and the official code's ``bn_update``).
        The momenta and the train/eval mode are restored.
        """
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        was_training = model.training
        momenta = [m.momentum for m in bns]
        model.train()
        for m in bns:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
        n = 0
        try:
            for batch in loader:
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                b = x.size(0)
                for m in bns:
                    m.momentum = b / float(n + b)
                model(x.to(device) if device is not None else x)
                n += b
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            model.train(was_training)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus the averaging state, keyed by position."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "swa": {
                "mode": self.mode,
                "steps": self._steps,
                "n_averaged": [int(n) for n in self._n],
                "averages": [None if a is None else [t.clone() for t in a] for a in self._avg],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s output; everything is checked before anything changes."""
        self._check_unchanged("load_state_dict")
        swa = state_dict["swa"]
        if swa["mode"] != self.mode:
            raise ValueError(f"state_dict: mode {swa['mode']!r}, expected {self.mode!r}")
        avgs = swa["averages"]
        if len(avgs) != len(self._groups) or len(swa["n_averaged"]) != len(self._groups):
            raise ValueError(f"state_dict: {len(avgs)} param groups, expected {len(self._groups)}")
        new_avg: list[list[Tensor] | None] = []
        for gi, (a, params) in enumerate(zip(avgs, self._groups)):
            if a is None:
                new_avg.append(None)
                continue
            if len(a) != len(params):
                raise ValueError(f"state_dict: group {gi} has {len(a)} averages, expected {len(params)}")
            out = []
            for pi, (t, p) in enumerate(zip(a, params)):
                if t.shape != p.shape or t.dtype != _avg_dtype(p):
                    raise ValueError(
                        f"state_dict: group {gi} parameter {pi} average is {tuple(t.shape)} {t.dtype}, "
                        f"expected {tuple(p.shape)} {_avg_dtype(p)}"
                    )
                out.append(t.detach().to(p.device, copy=True))
            new_avg.append(out)
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._avg = new_avg
        self._n = [torch.tensor(int(n), dtype=torch.int64) for n in swa["n_averaged"]]
        self._steps = int(swa["steps"])
