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
"""
from __future__ import annotations

import copy
import inspect
import itertools
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


def _rebuild(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A copy of ``m`` made from its structure and state, without the deepcopy protocol:
    same classes, hooks shared, parameters and buffers cloned (ties kept), tensor attributes
    (``weight_norm``'s computed weight) cloned and detached."""
    if id(m) in memo:
        return memo[id(m)]
    new = m.__class__.__new__(m.__class__)
    memo[id(m)] = new
    state = dict(m.__dict__)
    for key, value in state.items():
        if isinstance(value, dict) and key.startswith("_") and key.endswith("hooks"):
            state[key] = value.__class__(value)
        elif isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
            state[key] = value.detach().clone()

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


class AveragedModel(nn.Module):
    r"""Drop-in for :class:`torch.optim.swa_utils.AveragedModel` (see the module docstring).

    ``avg ← avg + (θ − avg)/(n+1)`` (SWA, default) or ``avg ← decay·avg + (1−decay)·θ`` with
    ``multi_avg_fn=get_ema_multi_avg_fn(decay)``; the first update copies.

    Example::

        swa = AveragedModel(model)                                   # SWA
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        for batch in loader:
            train_step(model, batch)
            ema.update_parameters(model)
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

    def forward(self, *args, **kwargs):
        """Runs the averaged module."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Averages ``model`` into this one (the first call copies); never syncs the device."""
        if self._rule == "custom":
            swa_utils.AveragedModel.update_parameters(self, model)  # PyTorch's own path
            self._n_host.fill_(self._n_host.item() + 1)
            return
        mine = [t for _, t in self._averaged_named()]
        theirs = list(itertools.chain(model.parameters(), model.buffers() if self.use_buffers else ()))
        n = int(self._n_host.item())  # a CPU tensor: no device sync
        avg_f, src_f, avg_i, src_i, halves = [], [], [], [], []
        for i, (a, s) in enumerate(zip(mine, theirs)):
            a_local = _local(a)
            s_local = _local(s)
            if s_local.device != a_local.device:
                s_local = s_local.to(a_local.device)
            if a.dtype in _FLOAT:
                key = f"_avg32_{i}" if i in self._master_index else None
                if key is not None:
                    master = getattr(self, key)
                    halves.append((a_local, master))
                    a_local = master
                avg_f.append(a_local)
                src_f.append(s_local)
            else:
                avg_i.append(a_local)
                src_i.append(s_local)
        if avg_i:
            self._average_non_float(avg_i, src_i, n)
        if avg_f:
            if self._rule == "swa":
                torch.ops.asymvalley.swa_update_(avg_f, src_f, self._n_host)
            else:
                torch.ops.asymvalley.ema_update_(avg_f, src_f, self._n_host, self._decay)
        else:
            self._n_host.add_(1)
        if halves:
            torch._foreach_copy_([h for h, _ in halves], [m for _, m in halves])
        if not self.use_buffers:
            # Like PyTorch (pytorch#84053): buffers follow the model.
            for b_swa, b_model in zip(self.module.buffers(), model.buffers()):
                b_swa.detach().copy_(b_model.detach().to(b_swa.device))
        self.n_averaged.add_(1)  # the device mirror for the state_dict: an async add, no sync

    def _average_non_float(self, avg: list[Tensor], src: list[Tensor], n: int) -> None:
        """Integer tensors (``num_batches_tracked`` with ``use_buffers=True``) take PyTorch's own
        code, so they end up exactly as PyTorch leaves them."""
        if n == 0:
            for a, s in zip(avg, src):
                a.copy_(s)
            return
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

        fn = (
            swa_utils.get_swa_multi_avg_fn()
            if self._rule == "swa"
            else swa_utils.get_ema_multi_avg_fn(self._decay)
        )
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for a, s in zip(avg, src):
            g = groups.setdefault((a.device, a.dtype), ([], []))
            g[0].append(a)
            g[1].append(s)
        for (device, _), (a_list, s_list) in groups.items():
            n_dev = self.n_averaged.to(device)
            if self._rule == "swa" and device.type not in _get_foreach_kernels_supported_devices():
                swa = swa_utils.get_swa_avg_fn()  # PyTorch's per-tensor fallback (CPU)
                for a, s in zip(a_list, s_list):
                    a.copy_(swa(a, s, n_dev))
            else:
                fn(a_list, s_list, n_dev)

    # -- state_dict: fp32 masters under the usual keys --------------------------------------
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
