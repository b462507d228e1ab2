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

It is a real :class:`torch.optim.Optimizer`: it shares the inner optimizer's ``param_groups`` list
and ``state``, so ``torch.optim.lr_scheduler`` schedulers (``StepLR(SWA(opt))``, ``SWALR``) attach
to it directly, and its step hooks, ``zero_grad`` and ``state_dict`` hooks work.

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
* the parameters are fixed at wrapping: ``add_param_group`` is refused, and parameters added to
  the inner optimizer afterwards make the next call raise (an average per group whose members
  change has no meaning);
* an optional end, ``total_steps`` (torchcontrib has none, and without it none is assumed): in auto
  mode the schedule must take at least one average by then (else averaging would start after the
  end), and a ``step()`` past it is refused, as ``OneCycleLR`` refuses one;
* thread-safe: ``step``, ``update_swa``, ``update_swa_group``, ``swap_swa_sgd``, ``write_biased``,
  ``state_dict`` and ``load_state_dict`` take a per-object re-entrant lock, so threads sharing one
  ``SWA`` run them one at a time (two first updates racing would average into a fresh zero buffer);
* bad input (``swa_freq`` 0, a negative or non-integer ``swa_start``, a negative, NaN or infinite
  ``swa_lr``, the start after the end, an optimizer without parameters, parameters added after
  wrapping, a malformed state dict) raises ``ValueError`` naming the argument and changes nothing.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ._swa_state import avg_dtype as _avg_dtype, checked_state, int_arg as _int_arg
from .bn import update_bn

__all__ = ["SWA"]


def _first_average(swa_start: int, swa_freq: int) -> int:
    """The step count after which auto mode takes its first average: the least ``k > swa_start``
    with ``k % swa_freq == 0``."""
    return (swa_start // swa_freq + 1) * swa_freq


class SWA(torch.optim.Optimizer):
    r"""Stochastic weight averaging (or an EMA) riding on ``optimizer.step()``; see the module doc.

    Args:
        optimizer (torch.optim.Optimizer): the inner optimizer; its ``param_groups`` are shared.
        swa_start (int, optional): steps before auto-mode averaging starts (``None``: manual mode).
        swa_freq (int, optional): steps between auto-mode averages (``None``: manual mode).
        swa_lr (float, optional): the lr set on every group from step ``swa_start`` on (auto mode).
        mode (str): ``"swa"`` (running mean, default) or ``"ema"`` (``decay``).
        decay (float): the EMA decay in (0, 1), for ``mode="ema"``.
        total_steps (int, optional): the end of training in steps; see the module doc.

    Example::

        >>> import torch
        >>> from asymvalley import SWA
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1), swa_start=10, swa_freq=5, swa_lr=0.05)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30)   # schedulers take it directly
        >>> x, y = torch.randn(32, 4), torch.randn(32, 1)
        >>> for _ in range(30):
        ...     opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step(); sched.step()
        >>> opt.n_averaged
        [4]
        >>> opt.swap_swa_sgd()   # the model now holds the average; call again to swap back
    """

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
        # Everything is validated before anything is set, here or on the inner optimizer.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer: got {type(optimizer).__name__}, expected a torch.optim.Optimizer")
        if isinstance(optimizer, SWA):
            raise ValueError("optimizer: got an SWA; expected the inner optimizer (wrap it once)")
        groups = [list(g["params"]) for g in optimizer.param_groups]
        if sum(len(g) for g in groups) == 0:
            raise ValueError("optimizer: it has no parameters; expected at least one parameter to average")
        auto = swa_start is not None and swa_freq is not None
        if total_steps is not None:
            total_steps = _int_arg("total_steps", total_steps, 1)
        if auto:
            swa_start = _int_arg("swa_start", swa_start, 0)
            swa_freq = _int_arg("swa_freq", swa_freq, 1)
            first = _first_average(swa_start, swa_freq)
            if total_steps is not None and first > total_steps:
                raise ValueError(
                    f"swa_start: got {swa_start} (first average after step {first} with swa_freq "
                    f"{swa_freq}), expected the first average by total_steps = {total_steps} "
                    "(averaging would start after the end of training)"
                )
        if swa_lr is not None and not (
            isinstance(swa_lr, numbers.Real) and not isinstance(swa_lr, bool)
            and math.isfinite(swa_lr) and swa_lr >= 0
        ):
            raise ValueError(f"swa_lr: got {swa_lr!r}, expected a finite number >= 0")
        if mode not in ("swa", "ema"):
            raise ValueError(f"mode: got {mode!r}, expected 'swa' or 'ema'")
        if mode == "ema" and not (isinstance(decay, numbers.Real) and 0.0 < decay < 1.0):
            raise ValueError(f"decay: got {decay!r}, expected a number in the open interval (0, 1)")
        if not auto and swa_lr is not None:
            warnings.warn("SWA: manual mode (swa_start or swa_freq is None), so swa_lr is ignored", stacklevel=2)
        # Optimizer.__init__ would build param_groups of its own through add_param_group (which
        # this class refuses); set up what it sets up, with the inner optimizer's groups and state
        # shared, so schedulers writing group["lr"] reach the inner optimizer.
        torch._C._log_api_usage_once("python.optimizer")
        self.defaults = optimizer.defaults
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._patch_step_function()  # wraps SWA.step once, so step pre/post hooks run
        self._warned_capturable_if_run_uncaptured = True
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # the same list object
        self.state = optimizer.state
        self._auto = auto
        self.swa_start = swa_start if auto else None
        self.swa_freq = swa_freq if auto else None
        self.swa_lr = float(swa_lr) if (auto and swa_lr is not None) else None
        self.total_steps = total_steps
        self.mode = mode
        self.decay = float(decay)
        self._groups = groups
        self._avg: list[list[Tensor] | None] = [None for _ in groups]
        self._n = [torch.zeros((), dtype=torch.int64) for _ in groups]  # host counters
        self._steps = 0
        self._backup: list[list[Tensor]] | None = None
        self._lock = threading.RLock()  # one caller at a time (module doc)

    def __repr__(self) -> str:
        return f"SWA(mode={self.mode!r}, swa_start={self.swa_start}, swa_freq={self.swa_freq}, " \
               f"swa_lr={self.swa_lr}, optimizer={self.optimizer!r})"

    # -- torch.optim.Optimizer surface ---------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad`` (the parameters are the same).

        Args:
            set_to_none: set the gradients to ``None`` instead of zeroing them.
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused: the averaged parameters are fixed when the optimizer is wrapped.

        Args:
            param_group: the group that would be added.

        Raises:
            ValueError: always; nothing is added to this or the inner optimizer.
        """
        n = len(param_group.get("params", ())) if isinstance(param_group, dict) else "?"
        raise ValueError(
            f"param_group: got a group of {n} parameters, expected none: SWA averages the "
            "parameters it was given at wrapping; wrap an optimizer that already has every group"
        )

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
                f"{[len(ps) for ps in self._groups]}); expected the same parameters"
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
        """Averages the parameters of one param group (torchcontrib's ``update_swa_group``).

        Args:
            group: one of ``self.param_groups`` (the dict itself).
        """
        with self._lock:
            self._check_unchanged("update_swa_group")
            i = next((k for k, g in enumerate(self.optimizer.param_groups) if g is group), None)
            if i is None:
                raise ValueError("group: not one of this optimizer's param_groups")
            self._update_group(i)

    def update_swa(self) -> None:
        """Averages every parameter now (manual mode, or an extra update in auto mode)."""
        with self._lock:
            self._check_unchanged("update_swa")
            for i in range(len(self._groups)):
                self._update_group(i)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """The inner step; in auto mode the SWA learning rate before it and the average after.

        Args:
            closure: passed to the inner optimizer's ``step``.

        Returns:
            What the inner ``step`` returns (the closure's loss, if any).
        """
        with self._lock:
            self._check_unchanged("step")
            if self.total_steps is not None and self._steps >= self.total_steps:
                raise ValueError(
                    f"step: this would be step {self._steps + 1}, expected at most total_steps = {self.total_steps}"
                )
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
        """The number of updates per param group (host counters)."""
        return [int(n) for n in self._n]

    def averages(self) -> list[list[Tensor] | None]:
        """The averages, per param group.

        Returns:
            One list of tensors per group (fp32 for half-precision parameters), ``None`` for a
            group not updated yet.
        """
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
        with self._lock:
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
        """``with opt.averaged(): evaluate(model)``: the average is in the model inside the block.

        Yields:
            None; the model's own weights are back when the block ends (also on an exception).
        """
        self.swap_swa_sgd()
        try:
            yield
        finally:
            self.swap_swa_sgd()

    @torch.no_grad()
    def write_biased(self, beta: float) -> None:
        """Writes ``w̄ + β(w̄ − w)`` into the model, ``w`` its current weights (the last iterate).

        Args:
            beta: the bias factor (finite; 0 writes the average itself).
        """
        with self._lock:
            if not (isinstance(beta, (int, float)) and math.isfinite(beta)):
                raise ValueError(f"beta: got {beta}, expected a finite number")
            self._check_unchanged("write_biased")
            ps, avs = self._pairs("write_biased")
            torch.ops.asymvalley.bias_toward_flat_(ps, [a.to(p.dtype) for a, p in zip(avs, ps)], ps, float(beta))

    @staticmethod
    def bn_update(loader: Iterable[Any], model: nn.Module, device: torch.device | str | None = None) -> None:
        """One pass over ``loader`` re-estimating BatchNorm statistics, batches weighted by size.

        Before a batch of ``b`` samples after ``n`` every BatchNorm momentum is ``b/(n + b)``, so
        the result is the size-weighted mean of the batch statistics (torchcontrib's and the
        official code's ``bn_update``); this is :func:`asymvalley.update_bn` with
        ``weighting="sample"``.

        Args:
            loader: an iterable of batches (a list/tuple batch uses its first element).
            model: the module whose BatchNorm running statistics are recomputed.
            device: if given, each input is moved there first.

        Returns:
            None; the momenta and the train/eval mode are restored.

        Example::

            >>> import torch
            >>> from asymvalley import SWA
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
            >>> SWA.bn_update([torch.randn(16, 4), torch.randn(3, 4)], model)
            >>> int(model[1].num_batches_tracked)
            2
        """
        update_bn(loader, model, weighting="sample", device=device)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus the averaging state, keyed by position.

        Returns:
            ``{"optimizer": inner.state_dict(), "swa": {"mode", "steps", "n_averaged", "averages"}}``,
            tensors and plain values only (``torch.load(weights_only=True)`` reads it). The
            ``register_state_dict_pre_hook`` / ``post_hook`` hooks run as for any optimizer.
        """
        with self._lock:
            for pre_hook in self._optimizer_state_dict_pre_hooks.values():
                pre_hook(self)
            state = {
                "optimizer": self.optimizer.state_dict(),
                "swa": {
                    "mode": self.mode,
                    "steps": self._steps,
                    "n_averaged": [int(n) for n in self._n],
                    "averages": [None if a is None else [t.clone() for t in a] for a in self._avg],
                },
            }
            for post_hook in self._optimizer_state_dict_post_hooks.values():
                result = post_hook(self, state)
                if result is not None:
                    state = result
            return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s output; everything is checked before anything changes.

        Args:
            state_dict: what :meth:`state_dict` returned (possibly through ``torch.save``/``load``).

        Raises:
            ValueError: a malformed state (naming the part), or the parameters changed after wrapping.
        """
        with self._lock:
            self._check_unchanged("load_state_dict")
            for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
                result = pre_hook(self, state_dict)
                if result is not None:
                    state_dict = result
            new_avg, counts, steps = checked_state(state_dict, self.mode, self.total_steps, self._groups)
            self.optimizer.load_state_dict(state_dict["optimizer"])  # validates before it changes anything
            self._avg = new_avg
            self._n = [torch.tensor(n, dtype=torch.int64) for n in counts]
            self._steps = steps
            for post_hook in self._optimizer_load_state_dict_post_hooks.values():
                post_hook(self)
