"""``EMA``: a drop-in for ``ema_pytorch.EMA`` whose update is one fused ``ema_update_`` call.

Schedule (ema-pytorch's): with ``step`` counted before the increment, the first call copies the
model; later, every ``update_every`` steps, steps ``<= update_after_step`` copy and later steps
average ``avg <- decay * avg + (1 - decay) * param`` with the warm-up decay
``clamp(1 - (1 + e / inv_gamma) ** -power, min_value, beta)``, ``e = step_count - update_after_step - 1``
(``decay = 0``, a copy, when ``e <= 0``). Integer tensors (``num_batches_tracked``) are neither
copied nor averaged, as in ema-pytorch, unless ``copy_integer_tensors=True`` (timm's behaviour).

Half-precision models
---------------------
A bf16/fp16 tensor cannot hold an EMA: ``(1 - decay) * (param - avg)`` is far below its resolution
at usual decays and rounds away, so a bf16 average stalls (ema-pytorch on a bf16 model does). For
every averaged bf16/fp16 tensor this class keeps an **fp32 master** (a non-persistent buffer) and
averages into it; ``ema_model`` keeps the model's dtype (so it runs on the model's inputs) and holds
the master rounded to that dtype after every update. ``state_dict()`` returns the fp32 masters under
the usual ``ema_model.*`` keys, so a resume continues bit for bit; ``load_state_dict`` takes fp32 or
half values (the masters are set from them).

timm ``ModelEmaV3``
-------------------
timm's class computes the same warm-up with other names and another step convention. Its
``update(model, step=k)`` uses ``e = max(0, k - update_after_step - 1)``, decay 0 (a copy) when
``e <= 0``, else ``1 - (1 + e / warmup_gamma) ** -warmup_power`` clamped to ``[min_decay, decay]``
with ``use_warmup=True``, or ``decay`` itself with ``use_warmup=False``. timm's ``train.py`` counts
``k`` from 1 (it increments ``num_updates`` before the call). Our ``k``-th :meth:`EMA.update` uses
``e = k - update_after_step - 1`` and copies on the first call and while ``e <= 0``: the same
schedule. So::

    timm.utils.ModelEmaV3(model, decay=d, min_decay=m, update_after_step=a, use_warmup=True,
                          warmup_gamma=g, warmup_power=p)          # ema.update(model, step=k), k = 1, 2, ...
    asymvalley.EMA(model, beta=d, min_value=m, update_after_step=a, update_every=1,
                   inv_gamma=g, power=p, copy_integer_tensors=True)  # ema.update()

- ``use_warmup=False``: pass ``min_value=d`` (with ``beta=d``): the clamp then gives ``d`` exactly
  for every ``e >= 1``, as timm's constant decay.
- ``step`` counted from 0 (``k - 1``): pass ``update_after_step=a + 1``.
- ``step=None`` (timm's default call): a constant ``decay`` from the first call on, averaging into
  the copy made at construction. Map it as ``use_warmup=False`` with ``update_after_step=0`` and
  call :meth:`EMA.update` once right after construction (that copy is timm's ``deepcopy``); timm's
  ``k``-th update is then our ``(k + 1)``-th.
- ``exclude_buffers=True`` (buffers copied, not averaged): pass the floating buffer names as
  ``param_or_buffer_names_no_ema`` (``[n for n, b in model.named_buffers() if b.is_floating_point()]``).
- Integer buffers: timm copies them on every update; ``copy_integer_tensors=True`` does the same.

Equal to float rounding (timm lerps with ``_foreach_lerp_``, we run ``ema_update_``); tested against
timm itself in ``tests/python/test_timm_mapping.py``. What does not map:

- ``stochastic_rounding`` (timm's default for a bfloat16 EMA): random rounding of a bf16 average.
  We keep an fp32 average instead, which is what timm gives with ``dtype=torch.float32``.
- ``dtype=`` other than the fp32 average of a half model (an fp64 EMA of an fp32 model): no
  counterpart; the average has the model's dtype.
- ``update(model)`` taking the model as an argument: ours averages the model given at construction.
- Non-persistent buffers: timm walks ``state_dict()`` and leaves them alone; we average every
  floating buffer (``named_buffers()``); list them in ``ignore_names`` to get timm's result.
- The state_dict: timm's keys are ``module.*``, ours ``ema_model.*`` plus ``step`` and ``initted``.

The average on another device (``device=``)
-------------------------------------------
``EMA(model, device="cpu")`` keeps ``ema_model`` and the masters on the CPU while the model trains
on a GPU (timm's ``device="cpu"``: GPU memory saved, the update done by the host). timm copies each
tensor with a blocking ``.to("cpu")`` (a device synchronization per tensor). Here every update
copies the model's tensors into **pinned** host buffers with ``non_blocking=True`` and records a
CUDA event; the host-side average of those buffers runs at the start of the *next* update (or of
any read: ``ema_model``, ``forward``, ``swap_in``, ``state_dict``, the copies), after waiting on
that event. So ``update()`` never waits for the current step's kernels: it waits at most for the
copy queued one update earlier, which has normally finished. Other device pairs (average on a GPU
of a CPU model, or on another GPU) copy into buffers on the average's device and average at once.
The schedule (``step``, the decay) is kept on the host, so ``update()`` reads nothing from a device.

Threads
-------
One ``EMA`` may be shared by several threads: :meth:`EMA.update`, the copies, ``swap_in`` (for the
whole block), ``state_dict`` and ``load_state_dict`` take a per-object re-entrant lock, so they run
one at a time and no update is lost. The lock is not pickled; a copy gets its own.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn


_HALF = (torch.float16, torch.bfloat16)


def _floating(t: Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


class EMA(nn.Module):
    r"""Exponential moving average of a model's floating parameters and buffers (ema-pytorch's API).

    The average is ``ema_model``, a deep copy of ``model`` updated by :meth:`update`:
    :math:`\bar w \leftarrow \delta \bar w + (1 - \delta) w` with the warm-up decay
    :math:`\delta = \mathrm{clamp}(1 - (1 + e/\gamma^{-1})^{-p}, \text{min\_value}, \beta)`
    (see the module doc for the schedule and for timm's ``ModelEmaV3`` mapping).

    Args:
        model (nn.Module): the online model (not copied; ``ema_model`` is a deep copy of it).
        beta (float): the largest decay. Default: 0.9999.
        update_after_step (int): steps up to this one copy the model instead of averaging.
        update_every (int): act only on steps divisible by this.
        inv_gamma (float): the warm-up's :math:`\gamma^{-1}` (> 0).
        power (float): the warm-up's exponent :math:`p`.
        min_value (float): the smallest decay once averaging starts.
        param_or_buffer_names_no_ema (Iterable[str]): names copied from the model on every update
            instead of averaged.
        ignore_names (Iterable[str]): names left out of the average (still copied on copy steps,
            as in ema-pytorch).
        copy_integer_tensors (bool): copy integer buffers (``num_batches_tracked``) from the model on
            every update, as timm does; ema-pytorch leaves them alone (the default).
        device (torch.device | str, optional): where the average lives (default: the model's);
            ``"cpu"`` for a CUDA model offloads it with pinned, non-blocking copies (module doc).

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Linear(4, 2)
        >>> ema = asymvalley.EMA(model, beta=0.99, update_after_step=0, update_every=1)
        >>> for _ in range(3):
        ...     ema.update()
        >>> ema(torch.randn(1, 4)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        model: nn.Module,
        beta: float = 0.9999,
        update_after_step: int = 100,
        update_every: int = 10,
        inv_gamma: float = 1.0,
        power: float = 2 / 3,
        min_value: float = 0.0,
        param_or_buffer_names_no_ema: Iterable[str] = (),
        ignore_names: Iterable[str] = (),
        copy_integer_tensors: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self._lock = threading.RLock()  # one caller at a time (module doc, "Threads")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"EMA: beta={beta} must be in [0, 1]")
        if update_every < 1:
            raise ValueError(f"EMA: update_every={update_every} must be >= 1")
        if update_after_step < 0:
            raise ValueError(f"EMA: update_after_step={update_after_step} must be >= 0")
        if inv_gamma <= 0:
            raise ValueError(f"EMA: inv_gamma={inv_gamma} must be > 0")
        self.beta, self.update_after_step, self.update_every = beta, update_after_step, update_every
        self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
        self.param_or_buffer_names_no_ema = set(param_or_buffer_names_no_ema)
        self.ignore_names = set(ignore_names)
        self.copy_integer_tensors = bool(copy_integer_tensors)
        self.online_model = [model]  # a list so that it is not registered as a submodule
        self.device = None if device is None else torch.device(device)
        self.ema_model = copy.deepcopy(model).eval()
        if self.device is not None:
            self.ema_model.to(self.device)
        self.ema_model.requires_grad_(False)
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("initted", torch.tensor(False))
        # The schedule on the host: update() never reads `step` / `initted` back from a device.
        self._steps, self._initted = 0, False
        # Source buffers on the average's device (pinned for a CUDA -> CPU copy), by position, and
        # the average of the last staged copy, waiting for its CUDA event (see the module doc).
        self._staging: dict[int, Tensor] = {}
        self._pending: tuple[Any, Callable[[], None]] | None = None
        # ema_update_ copies when its counter is 0; we keep it at >= 1 so it always averages.
        self._count = torch.ones((), dtype=torch.int64)
        # fp32 masters of the half-precision floating tensors, by name (see the module doc).
        self._masters: dict[str, str] = {}
        for getter in ("named_parameters", "named_buffers"):
            for name, t in getattr(self.ema_model, getter)():
                if t.dtype in _HALF and name not in self._masters:
                    key = f"_ema32_{len(self._masters)}"
                    self.register_buffer(key, t.detach().float(), persistent=False)
                    self._masters[name] = key
        self._loading: dict[str, Tensor] = {}
        self.register_state_dict_pre_hook(EMA._flush_before_state_dict)
        self.register_state_dict_post_hook(EMA._masters_into_state_dict)
        self.register_load_state_dict_pre_hook(EMA._masters_from_state_dict)
        self.register_load_state_dict_post_hook(EMA._after_load)

    @property
    def model(self) -> nn.Module:
        """The online model, the one averaged (not part of this module's state_dict)."""
        return self.online_model[0]

    def _pairs(self, averaging: bool) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """(averaged, their sources, copied, their sources): by name, ema-pytorch's rules.

        On an averaging step the ``ignore_names`` are skipped and ``param_or_buffer_names_no_ema``
        (and, with ``copy_integer_tensors``, integer tensors) are copied; on a copy step every
        floating tensor is copied. An averaged half tensor is represented by its fp32 master
        (:meth:`_refresh_halves` rounds it into ``ema_model`` afterwards); a copied one appears
        twice among the copies, as itself and as its master."""
        avg: list[Tensor] = []
        src: list[Tensor] = []
        copy_dst: list[Tensor] = []
        copy_src: list[Tensor] = []
        for getter in ("named_parameters", "named_buffers"):
            mine = dict(getattr(self.ema_model, getter)())
            for name, t in getattr(self.model, getter)():
                if name not in mine:
                    continue
                if not _floating(t):
                    if self.copy_integer_tensors:
                        copy_dst.append(mine[name].data)
                        copy_src.append(t.data)
                    continue
                master = self._master(name)
                if not averaging or name in self.param_or_buffer_names_no_ema:
                    copy_dst.append(mine[name].data)
                    copy_src.append(t.data)
                    if master is not None:
                        copy_dst.append(master)
                        copy_src.append(t.data)
                elif name not in self.ignore_names:
                    avg.append(mine[name].data if master is None else master)
                    src.append(t.data)
        return avg, src, copy_dst, copy_src

    def _master(self, name: str) -> Tensor | None:
        key = self._masters.get(name)
        return None if key is None else getattr(self, key)

    def _refresh_halves(self) -> None:
        """``ema_model``'s half tensors <- their fp32 masters, rounded."""
        if not self._masters:
            return
        named = dict(self.ema_model.named_parameters())
        named.update(self.ema_model.named_buffers())
        halves = [named[name].data for name in self._masters]
        torch._foreach_copy_(halves, [getattr(self, key) for key in self._masters.values()])

    def get_current_decay(self) -> float:
        """The decay of the current step (after :meth:`update` counted it).

        Returns:
            ``clamp(1 - (1 + e / inv_gamma) ** -power, min_value, beta)`` with
            ``e = step - update_after_step - 1``, or 0.0 when ``e <= 0``.
        """
        return self._decay_at(self._steps)

    def _decay_at(self, step_count: int) -> float:
        epoch = max(step_count - self.update_after_step - 1, 0)
        if epoch <= 0:
            return 0.0
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        return float(min(max(value, self.min_value), self.beta))

    def _copy_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """(``ema_model``'s tensors, the model's) that a copy step copies, masters left out."""
        dst: list[Tensor] = []
        src: list[Tensor] = []
        for getter in ("named_parameters", "named_buffers"):
            mine = dict(getattr(self.ema_model, getter)())
            for name, t in getattr(self.model, getter)():
                if name in mine and (_floating(t) or self.copy_integer_tensors):
                    dst.append(mine[name].data)
                    src.append(t.data)
        return dst, src

    @torch.no_grad()
    def copy_params_from_model_to_ema(self) -> None:
        """Copies every floating (and, with ``copy_integer_tensors``, integer) tensor of the model into
        ``ema_model`` (and the fp32 masters)."""
        with self._lock:
            self._flush()
            _, _, dst, src = self._pairs(averaging=False)
            if dst:
                torch._foreach_copy_(dst, src)

    @torch.no_grad()
    def copy_params_from_ema_to_model(self) -> None:
        """Copies the average into the online model (ema-pytorch's name), rounded to its dtypes."""
        with self._lock:
            self._flush()
            dst, src = self._copy_pairs()
            if dst:
                torch._foreach_copy_(src, dst)

    @torch.no_grad()
    def update(self) -> None:
        """Advances one step: copy, average (one fused ``ema_update_``) or skip, as the schedule says.

        Reads nothing from a device; with the average on the CPU of a CUDA model, the host-side
        work of this step runs at the start of the next call (module doc). Thread-safe.
        """
        with self._lock:
            self._update()

    def _update(self) -> None:
        self._flush()
        step = self._steps  # ema-pytorch's step, counted before this call's increment
        if not self._initted or (step % self.update_every == 0 and step <= self.update_after_step):
            work = (self._pairs(averaging=False), 0.0)
        elif step % self.update_every != 0 or self.beta == 1.0:  # beta == 1: ema-pytorch's frozen average
            work = None
        else:
            work = (self._pairs(averaging=True), self._decay_at(step + 1))
        if work is not None:
            self._execute(*work[0], decay=work[1])
        # Counted only once the work went through: a refused update leaves the schedule as it was.
        self._steps = step + 1
        self.step.add_(1)
        if not self._initted:
            self._initted = True
            self.initted.fill_(True)

    def _execute(self, avg: list[Tensor], src: list[Tensor], copy_dst: list[Tensor],
                 copy_src: list[Tensor], decay: float) -> None:
        """Copies ``copy_src`` into ``copy_dst`` and averages ``src`` into ``avg`` with ``decay``
        (0: a copy), with the sources staged on the average's device first when they live elsewhere."""
        targets = avg + copy_dst
        for i, (t, s) in enumerate(zip(targets, src + copy_src)):
            if t.shape != s.shape:  # checked before anything is written: a refusal changes nothing
                raise ValueError(
                    f"update: tensor {i} of the model has shape {tuple(s.shape)}, expected "
                    f"{tuple(t.shape)} (ema_model's); was a parameter or buffer of the model replaced?"
                )
        sources, event = self._stage(targets, src + copy_src)
        n = len(avg)

        def apply() -> None:
            # The op validates its lists before it writes, so it runs before the copies.
            if avg and 0.0 < decay < 1.0:
                torch.ops.asymvalley.ema_update_(avg, sources[:n], self._count, decay)
            elif avg and decay <= 0.0:
                torch._foreach_copy_(avg, sources[:n])
            # decay >= 1 (min_value == 1): nothing moves (the op takes decay in (0, 1))
            if copy_dst:
                torch._foreach_copy_(copy_dst, sources[n:])
            if avg:
                self._refresh_halves()

        if event is None:
            apply()
        else:
            self._pending = (event, apply)

    def _stage(self, targets: list[Tensor], sources: list[Tensor]) -> tuple[list[Tensor], Any]:
        """The sources as the op can take them: on their target's device. Returns them and, when a
        CUDA -> CPU copy was queued (non-blocking, into pinned memory), the CUDA event that marks
        its end (else ``None``: nothing is left to wait for)."""
        if all(t.device == s.device for t, s in zip(targets, sources)):
            return sources, None
        staged: list[Tensor] = []
        cuda_to_host = False
        for i, (t, s) in enumerate(zip(targets, sources)):
            if t.device == s.device:
                staged.append(s)
                continue
            to_host = t.device.type == "cpu" and s.device.type == "cuda"
            buf = self._staging.get(i)
            if buf is None or buf.shape != s.shape or buf.dtype != s.dtype or buf.device != t.device:
                buf = torch.empty(s.shape, dtype=s.dtype, device=t.device, pin_memory=to_host)
                self._staging[i] = buf
            buf.copy_(s, non_blocking=to_host)
            cuda_to_host = cuda_to_host or to_host
            staged.append(buf)
        if not cuda_to_host:
            return staged, None
        event = torch.cuda.Event()
        event.record()  # on the current stream, after the copies
        return staged, event

    def _flush(self) -> None:
        """Runs the average of the last staged copy, once its copy has landed."""
        pending = self.__dict__.get("_pending")
        if pending is None:
            return
        self._pending = None
        event, apply = pending
        event.synchronize()
        apply()

    def __getattr__(self, name: str) -> Any:
        # `ema_model` is a submodule, found through nn.Module.__getattr__: reading it first applies
        # a pending offloaded average, so what a user sees is always up to date.
        if name == "ema_model" and self.__dict__.get("_pending") is not None:
            self._flush()
        return super().__getattr__(name)

    @contextmanager
    def swap_in(self) -> Iterator[nn.Module]:
        """Puts the averaged weights into the online model for the block, then restores its own.

        Returns:
            A context manager yielding the online model holding the average.
        """
        with self._lock:  # held for the block: an update meanwhile would average the average
            self._flush()
            avg, src = self._copy_pairs()
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

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`nn.Module.state_dict`, with the fp32 masters under the ``ema_model.*`` keys.

        Args:
            *args: as for :meth:`nn.Module.state_dict`.
            **kwargs: as for :meth:`nn.Module.state_dict` (``destination``, ``prefix``, ``keep_vars``).

        Returns:
            The state dict (``ema_model.*``, ``step``, ``initted``).
        """
        with self._lock:
            return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """:meth:`nn.Module.load_state_dict`; the fp32 masters are set from the loaded values.

        Args:
            state_dict: what :meth:`state_dict` returned (or ema-pytorch's layout without ``online_model``).
            strict: refuse missing and unexpected keys.
            assign: as for :meth:`nn.Module.load_state_dict`.

        Returns:
            The ``NamedTuple`` of missing and unexpected keys.
        """
        with self._lock:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def __getstate__(self) -> dict[str, Any]:
        self._flush()
        state = super().__getstate__()
        state = dict(state)
        state.pop("_lock", None)
        state["_pending"] = None
        state["_staging"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.RLock()

    # -- state_dict: the fp32 masters under the ema_model.* keys -----------------------------
    @staticmethod
    def _flush_before_state_dict(module: "EMA", prefix: str, keep_vars: bool) -> None:
        module._flush()

    @staticmethod
    def _masters_into_state_dict(module: "EMA", state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for name, key in module._masters.items():
            full = prefix + "ema_model." + name
            if full in state_dict:
                state_dict[full] = getattr(module, key).detach()

    @staticmethod
    def _masters_from_state_dict(module: "EMA", state_dict: Any, prefix: str, *args: Any) -> None:
        module._flush()
        module._loading = {}
        for name in module._masters:
            value = state_dict.get(prefix + "ema_model." + name)
            if isinstance(value, Tensor):
                module._loading[name] = value

    @staticmethod
    def _after_load(module: "EMA", incompatible_keys: Any) -> None:
        """The masters from the loaded values (fp32 kept exactly), the halves rounded from them."""
        with torch.no_grad():
            for name, key in module._masters.items():
                value = module._loading.get(name)
                if value is not None:
                    master = getattr(module, key)
                    master.copy_(value.detach().to(master.device))
            module._loading = {}
            module._refresh_halves()
            # Loading may read the device; updates never do.
            module._steps, module._initted = int(module.step.item()), bool(module.initted.item())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Runs ``ema_model`` (any pending offloaded average applied first).

        Args:
            *args: ``ema_model``'s positional inputs.
            **kwargs: ``ema_model``'s keyword inputs.

        Returns:
            What ``ema_model`` returns.
        """
        return self.ema_model(*args, **kwargs)
