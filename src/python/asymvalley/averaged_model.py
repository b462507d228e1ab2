"""``AveragedModel``: ``torch.optim.swa_utils.AveragedModel`` with the update done by the op library.

Same constructor, ``update_parameters``, ``forward`` and ``state_dict`` keys (``module.*`` and
``n_averaged``), same numbers. What differs, and why:

- The counter is also kept on the host (``n_averaged`` stays a buffer on the module's device for
  the state_dict), so ``update_parameters`` never reads the device: PyTorch's reads
  ``n_averaged`` on the device up to three times per update (a stream sync each on CUDA).
- The default SWA and ``get_ema_multi_avg_fn(decay)`` (PyTorch's own function is recognised) run
  as one ``torch.ops.asymvalley`` call; other ``avg_fn`` / ``multi_avg_fn`` run PyTorch's own path.
- A half-precision (bf16/fp16) model's average is kept in fp32 masters (non-persistent buffers);
  the module's weights are the masters rounded to the model's dtype, and ``state_dict`` returns
  the fp32 masters under the usual keys, so nothing is lost on save/load and the state_dict still
  loads into PyTorch's class (``load_state_dict`` casts).
- The module is deep-copied when it can be; a module that cannot (``weight_norm`` after a forward
  pass, ``parametrize``, pytorch#28594 / #69413) is rebuilt from its structure and state instead.
- Sharded parameters (DTensor, FSDP2): each rank averages its local shard; nothing is gathered.
  An FSDP2 (``fully_shard``) model, which cannot be deep-copied (PyTorch's class fails on it),
  is copied as its plain module tree holding DTensor shards (no FSDP hooks): ``state_dict``
  gives DTensors under the model's keys, so it loads into the FSDP model (or DCP) for eval;
  ``forward`` on the copy itself is not supported (its parameters stay sharded).
- Integer tensors averaged with ``use_buffers=True`` (BatchNorm's ``num_batches_tracked``) are
  copied from the model at every update, as timm's ``ModelEmaV3`` and ``ema-pytorch`` do: a
  count of batches has no meaningful average. This is a deliberate difference: PyTorch's SWA runs
  ``_foreach_addcdiv_`` on them and raises on CUDA ("Integer division with addcdiv is no longer
  supported"), and on the CPU (and for EMA everywhere) computes a float average and truncates it
  into the integer buffer (an EMA count then never moves). Floating tensors are unaffected.
- ``update_parameters`` is host-cheap: what it passes to the op (the tensor lists, which source
  needs a device move, which buffers are copied) is worked out once per model and reused while
  every parameter, buffer and submodule of both modules is the same object as before (checked
  each call by identity, at C speed); anything replaced (``module.weight = Parameter(...)``,
  ``.to()`` replacing buffers, ``load_state_dict(assign=True)``, a new submodule) rebuilds it.
  Tensors are passed as the objects themselves, so ``param.data = ...`` is followed too; if the
  op then rejects the stale lists (say, a model moved to another device with ``.data``), the
  plan is rebuilt and the update retried once. DTensor models rebuild it on every call.
- Thread-safe: ``update_parameters`` and ``load_state_dict`` take a per-object re-entrant lock, so
  threads sharing one ``AveragedModel`` update it one at a time (PyTorch's class has no lock: two
  threads read the same ``n_averaged`` and weight a model wrongly). The lock is not pickled.
"""
from __future__ import annotations

import copy
import inspect
import itertools
import operator
import threading
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.optim import swa_utils

_HALF = (torch.float16, torch.bfloat16)
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_EMA_CODE = inspect.unwrap(swa_utils.get_ema_multi_avg_fn(0.5)).__code__
_SWA_CODE = inspect.unwrap(swa_utils.get_swa_multi_avg_fn()).__code__


def _rule(avg_fn: Callable | None, multi_avg_fn: Callable | None) -> tuple[str, float | None]:
    """("swa", None), ("ema", decay) or ("custom", None) for PyTorch's own path."""
    if avg_fn is None and multi_avg_fn is None:
        return "swa", None
    if multi_avg_fn is None:
        return "custom", None
    inner = inspect.unwrap(multi_avg_fn)
    code = getattr(inner, "__code__", None)
    if code is _SWA_CODE:
        return "swa", None
    if code is _EMA_CODE and inner.__closure__ is not None:
        decay = inner.__closure__[code.co_freevars.index("decay")].cell_contents
        if 0.0 < float(decay) < 1.0:
            return "ema", float(decay)
    return "custom", None


def _is_sharded(t: Tensor) -> bool:
    return callable(getattr(t, "to_local", None))


def _local(t: Tensor) -> Tensor:
    """The rank-local shard of a DTensor, the tensor itself otherwise (detached)."""
    t = t.detach()
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _clone_module(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - any deepcopy failure: rebuild from structure instead
        return _rebuild(model, {})


def _fsdp_attr(key: str) -> bool:
    """FSDP2 bookkeeping on a module (its state, dynamo flags), not carried into the copy."""
    return key.startswith("__composable_api_state_key") or key in (
        "_is_fsdp_managed_module", "_fsdp_use_orig_params",
    )


def _fsdp_hook(hook: Any) -> bool:
    """A hook FSDP2 registered (bound to the source model's FSDPState / FSDPParam)."""
    return str(getattr(hook, "__module__", "") or "").startswith("torch.distributed.fsdp.")


def _rebuild(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A copy of ``m`` made from its structure and state, without the deepcopy protocol:
    same classes, hooks shared, parameters and buffers cloned (ties kept), tensor attributes
    (``weight_norm``'s computed weight) cloned and detached. An FSDP2 (``fully_shard``) module,
    which refuses deepcopy, becomes its original class without FSDP's state and hooks (they
    belong to the source model: kept, they would all-gather and run the *source's* weights);
    its DTensor parameters are cloned as DTensors, so the copy holds only this rank's shards."""
    if id(m) in memo:
        return memo[id(m)]
    cls = m.__class__
    fsdp_index = getattr(cls, "_orig_cls_mro_index", None)
    if fsdp_index is not None and any(c.__name__ == "FSDPModule" for c in cls.__mro__):
        cls = cls.__mro__[fsdp_index]  # FSDP2's FSDP<Orig> class: the copy is a plain Orig
    new = cls.__new__(cls)
    memo[id(m)] = new
    state = {k: v for k, v in m.__dict__.items() if not _fsdp_attr(k)}
    dropped = set()
    for key, value in state.items():
        if isinstance(value, dict) and key.startswith("_") and key.endswith("hooks"):
            dropped.update(h for h, f in value.items() if _fsdp_hook(f))
            state[key] = value.__class__((h, f) for h, f in value.items() if not _fsdp_hook(f))
        elif isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
            state[key] = value.detach().clone()
    for key in ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
        if isinstance(state.get(key), dict):  # keyed by hook id: own copies, minus dropped hooks
            state[key] = state[key].__class__((h, v) for h, v in state[key].items() if h not in dropped)

    def param(p):
        if p is None:
            return None
        if id(p) not in memo:
            memo[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        return memo[id(p)]

    def buf(b):
        if b is None:
            return None
        if id(b) not in memo:
            memo[id(b)] = b.detach().clone()
        return memo[id(b)]

    state["_parameters"] = {k: param(p) for k, p in m._parameters.items()}
    state["_buffers"] = {k: buf(b) for k, b in m._buffers.items()}
    state["_non_persistent_buffers_set"] = set(m._non_persistent_buffers_set)
    state["_modules"] = {k: None if s is None else _rebuild(s, memo) for k, s in m._modules.items()}
    object.__setattr__(new, "__dict__", state)
    return new


class _Plan:
    """What one ``update_parameters(model)`` call passes where, reused while nothing changed.

    ``current()`` compares every value of every ``_parameters`` / ``_buffers`` / ``_modules`` dict
    of both module trees with the objects seen when the plan was built, by identity; the lists
    hold strong references, so an id is never reused while the plan lives.
    """

    __slots__ = (
        "model", "dicts", "seen", "avg", "src", "fix", "halves", "masters", "copy_dst",
        "copy_src", "other_dst", "other_src", "counter", "signature", "reusable",
    )

    def current(self) -> bool:
        if not self.reusable:
            return False
        now = list(itertools.chain.from_iterable(map(dict.values, self.dicts)))
        seen = self.seen
        return len(now) == len(seen) and all(map(operator.is_, now, seen))

    def sources(self) -> list[Tensor]:
        """The params to pass, with those on another device than their average moved there."""
        if not self.fix:
            return self.src
        src = list(self.src)
        for k, s, device, dtype in self.fix:
            src[k] = s.detach().to(device=device, dtype=dtype)
        return src


class AveragedModel(nn.Module):
    r"""Drop-in for :class:`torch.optim.swa_utils.AveragedModel` (see the module docstring).

    ``avg ← avg + (θ − avg)/(n+1)`` (SWA, default) or ``avg ← decay·avg + (1−decay)·θ`` with
    ``multi_avg_fn=get_ema_multi_avg_fn(decay)``; the first update copies.

    Args:
        model (nn.Module): the model to average (deep-copied into ``module``).
        device (int | torch.device, optional): where the average lives (default: the model's).
        avg_fn (Callable, optional): a per-tensor rule ``fn(avg, param, n) -> avg`` (PyTorch's loop).
        multi_avg_fn (Callable, optional): a multi-tensor rule ``fn(avgs, params, n)``; PyTorch's
            ``get_swa_multi_avg_fn()`` and ``get_ema_multi_avg_fn(decay)`` run fused.
        use_buffers (bool): average the buffers too (else they are copied from the model).

    Example::

        >>> import torch, asymvalley
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
        >>> swa = asymvalley.AveragedModel(model)                                   # SWA
        >>> ema = asymvalley.AveragedModel(model, multi_avg_fn=asymvalley.get_ema_multi_avg_fn(0.999),
        ...                                use_buffers=True)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> for _ in range(5):
        ...     opt.zero_grad(); model(torch.randn(16, 4)).pow(2).mean().backward(); opt.step()
        ...     swa.update_parameters(model); ema.update_parameters(model)
        >>> int(swa.n_averaged), swa(torch.randn(2, 4)).shape
        (5, torch.Size([2, 8]))
    """

    n_averaged: Tensor

    def __init__(
        self,
        model: nn.Module,
        device: int | torch.device | None = None,
        avg_fn: Callable[[Tensor, Tensor, Tensor | int], Tensor] | None = None,
        multi_avg_fn: Callable[[list[Tensor], list[Tensor], Tensor | int], None] | None = None,
        use_buffers: bool = False,
    ) -> None:
        super().__init__()
        self._lock = threading.RLock()  # one update at a time (module doc)
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = _clone_module(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers
        self._rule, self._decay = _rule(avg_fn, multi_avg_fn)
        # The host-side counter the ops read (a CPU tensor: reading it syncs nothing).
        self._n_host = torch.zeros((), dtype=torch.long)
        # fp32 masters of half-precision averaged tensors, keyed by their index in _averaged().
        self._master_index: dict[int, str] = {}
        if self._rule != "custom":
            for i, (name, t) in enumerate(self._averaged_named()):
                if t.dtype in _HALF:
                    key = f"_avg32_{i}"
                    self.register_buffer(key, t.detach().float(), persistent=False)
                    self._master_index[i] = name
        self._pending: dict[int, Tensor] = {}
        self._register_state_dict_hook(AveragedModel._masters_into_state_dict)
        self._register_load_state_dict_pre_hook(AveragedModel._masters_from_state_dict, with_module=True)
        self.register_load_state_dict_post_hook(AveragedModel._after_load)

    # -- what is averaged ------------------------------------------------------------------
    def _averaged_named(self) -> list[tuple[str, Tensor]]:
        named = list(self.module.named_parameters())
        if self.use_buffers:
            named += list(self.module.named_buffers())
        return named

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the averaged module.

        Args:
            *args: the module's positional inputs.
            **kwargs: the module's keyword inputs.

        Returns:
            What ``module`` returns.
        """
        return self.module(*args, **kwargs)

    # Never pickled or deep-copied (it references the source model's tensors); rebuilt on use.
    _plan: _Plan | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_plan", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.RLock()

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Averages ``model`` into this one (the first call copies); never syncs the device.

        Thread-safe: concurrent calls run one at a time.

        Args:
            model: the model whose parameters (and, with ``use_buffers``, buffers) are averaged in.
        """
        with self._lock:
            self._update_parameters(model)

    def _update_parameters(self, model: nn.Module) -> None:
        if self._rule == "custom":
            swa_utils.AveragedModel.update_parameters(self, model)  # PyTorch's own path
            self._n_host.fill_(self._n_host.item() + 1)
            return
        plan = self._plan
        fresh = plan is None or plan.model is not model or not plan.current()
        if fresh:
            plan = self._make_plan(model)
        self._run(plan, model, fresh)

    def _make_plan(self, model: nn.Module) -> _Plan:
        """Pairs our tensors with the model's (``zip``, like PyTorch) and sorts them into: floats
        averaged by the op (half-precision ones through their fp32 masters), integer tensors
        copied, other dtypes (complex) left to PyTorch's function, and (``use_buffers=False``)
        buffers copied from the model."""
        plan = _Plan()
        plan.model = model
        mods = list(self.modules()) + list(model.modules())
        plan.dicts = [d for m in mods for d in (m._parameters, m._buffers, m._modules)]
        plan.reusable = all(isinstance(d, dict) for d in plan.dicts)
        plan.seen = (
            list(itertools.chain.from_iterable(map(dict.values, plan.dicts))) if plan.reusable else []
        )
        mine = [t for _, t in self._averaged_named()]
        theirs = list(itertools.chain(model.parameters(), model.buffers() if self.use_buffers else ()))
        sharded = any(map(_is_sharded, itertools.chain(mine, theirs)))
        if sharded:  # DTensor: to_local() is a fresh tensor each time, so never reuse the lists
            plan.reusable = False
        fix_local = _local if sharded else (lambda t: t)
        plan.avg, plan.src, plan.fix = [], [], []
        plan.halves, plan.masters = [], []
        plan.copy_dst, plan.copy_src, plan.other_dst, plan.other_src = [], [], [], []
        for i, (a, s) in enumerate(zip(mine, theirs)):
            a_t, s_t = fix_local(a), fix_local(s)
            if a.dtype in _FLOAT:
                if i in self._master_index:
                    master = getattr(self, f"_avg32_{i}")
                    plan.halves.append(a_t)
                    plan.masters.append(master)
                    a_t = master
                # A half average with no master (an fp32 average moved with `.to(bfloat16)`)
                # takes the source in its own dtype, as PyTorch's class does; the op refuses
                # a mixed-dtype pair there (only fp32/fp64 averages accumulate other dtypes).
                dtype = a_t.dtype if a_t.dtype in _HALF and s_t.dtype != a_t.dtype else s_t.dtype
                if s_t.device != a_t.device or dtype != s_t.dtype:
                    plan.fix.append((len(plan.src), s_t, a_t.device, dtype))
                plan.avg.append(a_t)
                plan.src.append(s_t)
            elif a.is_floating_point() or a.is_complex():
                plan.other_dst.append(a_t)
                plan.other_src.append(s_t)  # moved to a_t's device per call, in _average_other
            else:  # integer / bool: copied from the model (see the module docstring)
                plan.copy_dst.append(a_t)
                plan.copy_src.append(s_t)
        if not self.use_buffers:
            # Like PyTorch (pytorch#84053): buffers follow the model.
            for b_swa, b_model in zip(self.module.buffers(), model.buffers()):
                plan.copy_dst.append(fix_local(b_swa))
                plan.copy_src.append(fix_local(b_model))
        plan.counter = self.n_averaged
        plan.signature = (
            len(plan.avg), tuple((k, d, t) for k, _, d, t in plan.fix), len(plan.halves),
            len(plan.copy_dst), len(plan.other_dst), sharded,
        )
        self._plan = plan
        return plan

    def _run(self, plan: _Plan, model: nn.Module, fresh: bool) -> None:
        n = int(self._n_host.item()) if plan.other_dst else 0  # a CPU tensor: no device sync
        if plan.avg:
            try:
                if self._rule == "swa":
                    torch.ops.asymvalley.swa_update_(plan.avg, plan.sources(), self._n_host)
                else:
                    torch.ops.asymvalley.ema_update_(plan.avg, plan.sources(), self._n_host, self._decay)
            except RuntimeError:
                # The op validates before it writes anything, so a reused plan made stale in a
                # way identity cannot see (a tensor moved to another device with `.data =`)
                # may be rebuilt and the update retried, once, if the rebuild changes anything.
                if fresh:
                    raise
                rebuilt = self._make_plan(model)
                if rebuilt.signature == plan.signature:
                    raise
                return self._run(rebuilt, model, True)
        else:
            self._n_host.add_(1)
        if plan.halves:
            torch._foreach_copy_(plan.halves, plan.masters)
        if plan.copy_dst:
            torch._foreach_copy_(plan.copy_dst, plan.copy_src)
        if plan.other_dst:
            self._average_other(plan.other_dst, plan.other_src, n)
        plan.counter.add_(1)  # n_averaged, the device mirror for the state_dict: an async add

    def _average_other(self, avg: list[Tensor], src: list[Tensor], n: int) -> None:
        """Floating dtypes the op does not take (complex) go through PyTorch's own function."""
        if n == 0:
            torch._foreach_copy_(avg, src)  # copies across devices itself
            return
        fn = (
            swa_utils.get_swa_multi_avg_fn()
            if self._rule == "swa"
            else swa_utils.get_ema_multi_avg_fn(self._decay)
        )
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for a, s in zip(avg, src):
            g = groups.setdefault((a.device, a.dtype), ([], []))
            g[0].append(a)
            g[1].append(s.detach().to(a.device))
        for (device, _), (a_list, s_list) in groups.items():
            fn(a_list, s_list, torch.tensor(n, device=device))

    # -- state_dict: fp32 masters under the usual keys --------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """:meth:`nn.Module.load_state_dict`, all or nothing.

        Every key is checked first (a tensor, the shape of ours, floating where ours is floating,
        and with ``strict`` no missing or unexpected key), so a refused load raises
        ``RuntimeError`` naming the key and leaves the weights, the fp32 masters and
        ``n_averaged`` as they were. PyTorch's loader would copy the good keys before raising,
        and a broadcastable wrong shape would reach an fp32 master through ``copy_``.

        Args:
            state_dict: as for :meth:`nn.Module.load_state_dict` (our ``state_dict`` keys).
            strict: refuse missing and unexpected keys.
            assign: as for :meth:`nn.Module.load_state_dict`.

        Returns:
            The ``NamedTuple`` of missing and unexpected keys, as PyTorch's.
        """
        with self._lock:
            return self._load_state_dict(state_dict, strict, assign)

    def _load_state_dict(self, state_dict: Mapping[str, Any], strict: bool, assign: bool):
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: got {type(state_dict).__name__}, expected a Mapping")
        ours = self.state_dict(keep_vars=True)
        errors = []
        if strict:
            missing = [k for k in ours if k not in state_dict]
            unexpected = [k for k in state_dict if k not in ours]
            if missing:
                errors.append(f"missing keys {missing}")
            if unexpected:
                errors.append(f"unexpected keys {unexpected}")
        for key, mine in ours.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                errors.append(f"{key!r}: got {type(value).__name__}, expected a Tensor")
            elif value.shape != mine.shape:
                errors.append(f"{key!r}: got shape {tuple(value.shape)}, expected {tuple(mine.shape)}")
            elif (value.is_floating_point() or value.is_complex()) and not (
                mine.is_floating_point() or mine.is_complex()
            ):
                errors.append(f"{key!r}: got dtype {value.dtype}, expected {mine.dtype} (not floating)")
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {self.__class__.__name__} (nothing was loaded): "
                + "; ".join(errors)
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @staticmethod
    def _masters_into_state_dict(module: "AveragedModel", state_dict, prefix, local_metadata):
        named = module._averaged_named() if module._master_index else []
        for i, name in module._master_index.items():
            key = prefix + "module." + name
            if key in state_dict and i < len(named):
                state_dict[key] = getattr(module, f"_avg32_{i}").detach()
        for i in range(len(named)):
            state_dict.pop(prefix + f"_avg32_{i}", None)
        return state_dict

    def _masters_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._pending = {}
        for i, name in self._master_index.items():
            value = state_dict.get(prefix + "module." + name)
            if isinstance(value, Tensor):
                self._pending[i] = value

    @staticmethod
    def _after_load(module: "AveragedModel", incompatible_keys) -> None:
        named = module._averaged_named()
        with torch.no_grad():
            for i in module._master_index:
                master = getattr(module, f"_avg32_{i}")
                src = module._pending.get(i, named[i][1])
                master.copy_(_local(src).to(master.device))
            module._pending = {}
            module._n_host.fill_(int(module.n_averaged.item()))  # loading may sync; updates never do
