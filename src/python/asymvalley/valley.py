"""The asymmetric-valley detector on an ``nn.Module``, from Python, with one implementation.

:func:`probe`, :func:`hessian_directions` and :func:`surface` do not reimplement the profile loop:
they script the module, hand its ``torch.jit.save`` bytes, the data and a JSON config to
``torch.ops.asymvalley.valley_probe``, whose body is the Rust probe that ``asymvalley probe`` runs,
and parse its JSON report into frozen dataclasses. Same model, data and settings give the same
numbers as the command line. The keyword names are the CLI's flags in snake case
(``--bn-exclude`` → ``bn_exclude``).

Why ``torch.jit.script`` and not ``trace``: a traced graph bakes in the mode it was traced in.
Traced in eval mode, BatchNorm never updates its running statistics in train mode, so the default
``bn="full"`` (re-estimation at every point, the official ``bn_update``) is refused; traced in
train mode, BatchNorm normalizes with batch statistics even in eval mode and the profiles are
silently wrong. A scripted module keeps ``self.training`` as a real branch, so both modes work.
A module that cannot be scripted can be traced by the caller and passed as a ``ScriptModule``
(the probe then checks its BatchNorm layers and refuses or warns, as the CLI does).

Example::

    >>> import torch, asymvalley
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> report = asymvalley.valley.probe(net, x, y, count=2, points=11, bootstrap=0)
    >>> len(report.directions), report.directions[0].class_ in ("flat", "sharp", "asymmetric", "slope")
    (2, True)
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "DirectionResult",
    "HessianResult",
    "HessianSummary",
    "Profile",
    "ProbeReport",
    "Summary",
    "Surface",
    "hessian_directions",
    "probe",
    "surface",
]

LOSSES = ("cross-entropy", "mse")
KINDS = ("uniform", "gaussian", "filter", "sign-consistent", "sign-inconsistent")
SUBSETS = ("all", "batch-norm", "non-batch-norm")
SHIFT_LAWS = ("gaussian", "uniform")

Tensors = dict  # parameter name -> tensor


@dataclasses.dataclass(frozen=True)
class Profile:
    """One data set's loss along a line: ``loss[i]`` at ``w + offsets[i]·d``."""

    offsets: np.ndarray
    loss: np.ndarray
    accuracy: Optional[np.ndarray]

    @staticmethod
    def _of(d: Optional[dict]) -> Optional["Profile"]:
        if d is None:
            return None
        acc = d.get("accuracy")
        return Profile(np.asarray(d["offsets"]), np.asarray(d["loss"]), None if acc is None else np.asarray(acc))


@dataclasses.dataclass(frozen=True)
class DirectionResult:
    """One probed direction (the JSON report's ``directions[i]``).

    ``rise_ratio`` is R = (L(s+r) − L(s)) / (L(s−r) − L(s)) around the scored point s (the profile's
    minimum); ``flat_side`` is +1 when +t is flat, −1 when −t is, 0 when neither; ``class_`` is
    ``flat``, ``sharp``, ``asymmetric`` or ``slope``; ``interval`` the bootstrap interval of R
    (``None`` without bootstrap). ``direction`` holds its tensors by parameter name.
    """

    index: int
    kind: str
    seed: int
    params: str
    moved: int
    norm: float
    sign_consistency: float
    rise_ratio: float
    flat_side: int
    class_: str
    interval: Optional[tuple]
    t_min: float
    scored_at: float
    center_loss: float
    warnings: tuple
    asymmetry: dict
    profile: Profile
    test_profile: Optional[Profile]
    bias: Optional[dict]
    shift: Optional[float]
    direction: Tensors


@dataclasses.dataclass(frozen=True)
class Summary:
    """Counts of classes over the directions and the median |ln R|."""

    directions: int
    asymmetric: int
    flat: int
    sharp: int
    slope: int
    fraction_asymmetric: float
    median_abs_log_ratio: float


@dataclasses.dataclass(frozen=True)
class HessianSummary:
    """The Hessian's eigenvalues (direction i is eigenvector i), Hutchinson's trace when asked for
    (``trace``: dict with ``trace``, ``std_error``, ``samples``) and the Hessian-vector products spent."""

    eigenvalues: tuple
    iterations: tuple
    converged: tuple
    trace: Optional[dict]
    products: int

    @staticmethod
    def _of(d: Optional[dict]) -> Optional["HessianSummary"]:
        if d is None:
            return None
        return HessianSummary(tuple(d["eigenvalues"]), tuple(d["iterations"]), tuple(d["converged"]),
                              d.get("trace"), d["products"])


@dataclasses.dataclass(frozen=True)
class ProbeReport:
    """The report of :func:`probe` (the CLI's JSON report, typed); ``raw`` is the JSON itself."""

    directions: tuple
    summary: Summary
    hessian: Optional[HessianSummary]
    comparison: Optional[dict]
    shift: Optional[dict]
    examples: int
    loss: str
    bn: str
    has_batch_norm: bool
    radius: float
    points: int
    cost: dict
    raw: dict


@dataclasses.dataclass(frozen=True)
class HessianResult:
    """The top eigenpairs of the training-loss Hessian: ``eigenvectors[i]`` (unit norm, by
    parameter name) belongs to ``summary.eigenvalues[i]``; ``report`` holds their profiles."""

    summary: HessianSummary
    eigenvectors: tuple
    report: ProbeReport

    @property
    def eigenvalues(self) -> tuple:
        return self.summary.eigenvalues


@dataclasses.dataclass(frozen=True)
class Surface:
    """``loss[j, i]``: the mean loss at ``w + a[i]·d1 + b[j]·d2`` (one row per ``b``).

    ``axes`` describes d1 and d2 (kind, seed, norm, source); ``points`` the marked points (the
    probed point, or A and B of a line); ``d1``/``d2`` the directions by parameter name.
    """

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    accuracy: Optional[np.ndarray]
    axes: tuple
    points: tuple
    hessian: Optional[HessianSummary]
    bn: str
    d1: Tensors
    d2: Tensors
    raw: dict

    def as_tensor(self) -> torch.Tensor:
        """The loss grid as a float64 tensor ``[len(b), len(a)]``."""
        return torch.from_numpy(self.loss.copy())


def _bad(name: str, value: Any, expected: str, kind=ValueError):
    return kind(f"asymvalley.valley: argument `{name}` = {value!r} is invalid; expected {expected}")


def _check_int(name, v, low, allow_none=False):
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _bad(name, v, f"an integer >= {low}" + (" or None" if allow_none else ""))


def _check_float(name, v, positive=True, allow_none=False):
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise _bad(name, v, "a finite number" + (" > 0" if positive else "") + (" or None" if allow_none else ""))


def _check_choice(name, v, choices):
    if v not in choices:
        raise _bad(name, v, "one of " + ", ".join(repr(c) for c in choices))


def _check_data(name_x, x, name_y, y):
    for n, t in ((name_x, x), (name_y, y)):
        if not isinstance(t, torch.Tensor):
            raise _bad(n, type(t).__name__, "a torch.Tensor", TypeError)
        if t.dim() == 0:
            raise _bad(n, f"a 0-d tensor {tuple(t.shape)}", "a tensor whose first dimension is the example")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise _bad(name_y, f"shape {tuple(y.shape)} for {name_x} of shape {tuple(x.shape)}",
                   "the same non-zero number of examples (first dimension) as the inputs")


def _bn_text(bn) -> str:
    if isinstance(bn, int) and not isinstance(bn, bool):
        if bn < 1:
            raise _bad("bn", bn, "'stale', 'full', 'k=K' or an integer K >= 1")
        return f"k={bn}"
    if bn in ("stale", "full"):
        return bn
    if isinstance(bn, str) and bn.startswith("k=") and bn[2:].isdigit() and int(bn[2:]) >= 1:
        return bn
    raise _bad("bn", bn, "'stale', 'full', 'k=K' or an integer K >= 1")


def _device_text(device, model: torch.nn.Module) -> str:
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise _bad("device", device, "'cpu', 'cuda', 'cuda:N' or a torch.device") from err
    if d.type == "cpu":
        return "cpu"
    if d.type == "cuda":
        return f"cuda:{d.index or 0}"
    raise _bad("device", device, "'cpu', 'cuda', 'cuda:N' or a torch.device")


def _module_bytes(model) -> torch.Tensor:
    """The ``torch.jit.save`` bytes of ``model`` (scripted first when it is a plain module)."""
    if not isinstance(model, torch.nn.Module):
        raise _bad("model", type(model).__name__, "a torch.nn.Module or a torch.jit.ScriptModule", TypeError)
    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    else:
        try:
            scripted = torch.jit.script(model)
        except Exception as err:  # torch raises several kinds for unscriptable code
            raise _bad(
                "model", type(model).__name__,
                "a module torch.jit.script accepts (see why above), or a ScriptModule you made: "
                "torch.jit.trace(model.eval(), x) works with bn='stale' only",
                TypeError,
            ) from err
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _state(name: str, s) -> dict:
    if isinstance(s, torch.nn.Module):
        s = s.state_dict()
    if not isinstance(s, Mapping) or not all(isinstance(v, torch.Tensor) for v in s.values()):
        raise _bad(name, type(s).__name__, "an nn.Module or a state dict (str -> Tensor)", TypeError)
    return {k: v.detach() for k, v in s.items()}


def _given(directions) -> tuple:
    """Given directions (a dict, or a list of dicts, parameter name -> tensor) as the names and
    tensors of a directions file (`d{i}/{parameter}`), which the Rust probe checks against the model."""
    if directions is None:
        return [], []
    if isinstance(directions, Mapping):
        directions = [directions]
    if not isinstance(directions, (list, tuple)) or not directions:
        raise _bad("directions", type(directions).__name__,
                   "a dict (parameter name -> tensor) or a non-empty list of them", TypeError)
    names, tensors = [], []
    for i, d in enumerate(directions):
        if not isinstance(d, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()):
            raise _bad(f"directions[{i}]", type(d).__name__, "a dict of parameter name (str) -> tensor", TypeError)
        for k in sorted(d):
            names.append(f"d{i}/{k}")
            tensors.append(d[k].detach())
    return names, tensors


def _run(model, inputs, targets, config: dict, test=None, between=None, directions=None):
    """Validates the data, calls the op, returns (reply JSON, directions by name)."""
    _check_data("inputs", inputs, "targets", targets)
    ti = tt = None
    if test is not None:
        if not (isinstance(test, (tuple, list)) and len(test) == 2):
            raise _bad("test", type(test).__name__, "a pair (inputs, targets) of held-out data or None", TypeError)
        ti, tt = test
        _check_data("test[0]", ti, "test[1]", tt)
    names, a, b = [], [], []
    if between is not None:
        if not (isinstance(between, (tuple, list)) and len(between) == 2):
            raise _bad("between", type(between).__name__, "a pair (A, B) of modules or state dicts, or None", TypeError)
        sa, sb = _state("between[0]", between[0]), _state("between[1]", between[1])
        if sorted(sa) != sorted(sb):
            raise _bad("between", f"keys {sorted(set(sa) ^ set(sb))} in only one of A, B", "two state dicts with the same keys")
        names = sorted(sa)
        a, b = [sa[n] for n in names], [sb[n] for n in names]
    if between is not None and directions is not None:
        raise _bad("directions", "given", "None with between (the line is the direction)")
    dnames, dtensors = _given(directions)
    request = json.dumps({"config": config, "between_names": names, "direction_names": dnames,
                          "model": type(model).__name__})
    reply, tensors = torch.ops.asymvalley.valley_probe(
        _module_bytes(model), inputs.detach(), targets.detach(), ti, tt, a, b, dtensors, request)
    out = json.loads(reply)
    params = out["parameters"]
    k = len(params)
    dirs = [dict(zip(params, tensors[i * k:(i + 1) * k])) for i in range(len(tensors) // k)] if k else []
    return out, dirs


def _direction(d: dict, tensors: Optional[dict]) -> DirectionResult:
    a = d["asymmetry"]
    ci = a.get("rise_ratio_ci")
    return DirectionResult(
        index=d["index"], kind=d["kind"], seed=d["seed"], params=d["params"], moved=d["moved"], norm=d["norm"],
        sign_consistency=d["sign_consistency"], rise_ratio=d["rise_ratio"], flat_side=d["flat_side"],
        class_=d["class"], interval=None if ci is None else tuple(ci), t_min=a["t_min"], scored_at=a["scored_at"],
        center_loss=a["center_loss"], warnings=tuple(a["warnings"]), asymmetry=a, profile=Profile._of(d["profile"]),
        test_profile=Profile._of(d.get("test_profile")), bias=d.get("bias"), shift=d.get("shift"),
        direction=tensors if tensors is not None else {},
    )


def _report(r: dict, dirs: list) -> ProbeReport:
    s = r["summary"]
    return ProbeReport(
        directions=tuple(_direction(d, dirs[i] if i < len(dirs) else None) for i, d in enumerate(r["directions"])),
        summary=Summary(s["directions"], s["asymmetric"], s["flat"], s["sharp"], s["slope"],
                        s["fraction_asymmetric"], s["median_abs_log_ratio"]),
        hessian=HessianSummary._of(r.get("hessian")), comparison=r.get("comparison"), shift=r.get("shift"),
        examples=r["examples"], loss=r["loss"], bn=r["bn"], has_batch_norm=r["has_batch_norm"], radius=r["radius"],
        points=r["points"], cost=r["cost"], raw=r,
    )


def _common(loss, params, subset, bn, bn_exclude, batch, seed, device, model) -> dict:
    if not isinstance(model, torch.nn.Module):
        raise _bad("model", type(model).__name__, "a torch.nn.Module or a torch.jit.ScriptModule", TypeError)
    _check_choice("loss", loss, LOSSES)
    _check_choice("subset", subset, SUBSETS)
    if params is not None and not isinstance(params, str):
        raise _bad("params", params, "a regular expression (str) or None", TypeError)
    if params is not None and subset != "all":
        raise _bad("params", params, "either params or subset, not both")
    if isinstance(bn_exclude, str) or not all(isinstance(n, str) for n in bn_exclude):
        raise _bad("bn_exclude", bn_exclude, "a list of BatchNorm module paths (str)", TypeError)
    _check_int("batch", batch, 1)
    _check_int("seed", seed, 0)
    return {"loss": loss, "params": params, "subset": subset, "bn": _bn_text(bn), "bn_exclude": list(bn_exclude),
            "batch": batch, "seed": seed, "device": _device_text(device, model)}


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: str = "cross-entropy",
    direction: str = "uniform",
    count: Optional[int] = None,
    seed: int = 0,
    params: Optional[str] = None,
    subset: str = "all",
    filter_keep_1d: bool = False,
    points: int = 21,
    radius: float = 1.0,
    bn: Union[str, int] = "full",
    bn_exclude: Sequence[str] = (),
    batch: int = 256,
    bootstrap: int = 200,
    ratio_threshold: float = 2.0,
    flat_rise: float = 0.1,
    exponent: Optional[float] = None,
    shift_scale: Optional[float] = None,
    shift_law: str = "gaussian",
    hessian_iterations: int = 100,
    hessian_tolerance: float = 1e-4,
    trace_samples: int = 0,
    compare_random: Optional[int] = None,
    compare_kind: str = "gaussian",
    test: Optional[tuple] = None,
    between: Optional[tuple] = None,
    directions: Union[Mapping, Sequence[Mapping], None] = None,
    distances: int = 20,
    division: int = 40,
    device: Union[str, torch.device, None] = None,
) -> ProbeReport:
    """Probes ``model``'s loss landscape along directions, as ``asymvalley probe`` does.

    Args:
        model: an ``nn.Module`` (scripted here) or a ``ScriptModule``; it is not modified.
        inputs, targets: the data (first dimension: the example); class indices for cross-entropy.
        direction: a random law (``uniform``, ``gaussian``, ``filter``, ``sign-consistent``,
            ``sign-inconsistent``) or ``hessian`` (the top eigenvectors of the training-loss Hessian).
        count: directions (default 10 drawn, 1 eigenvector); direction i uses ``seed + i``.
        points, radius: the grid ``t ∈ [−radius, radius]`` (points made odd).
        bn: BatchNorm at each point: ``stale`` (eval with the point's running statistics),
            ``full`` (re-estimated on all the data, the official ``bn_update``), ``k=K`` or ``K``.
        test: held-out ``(inputs, targets)``, profiled along the same directions; the shift scale
            for c* is then estimated from train vs held-out profiles.
        between: ``(A, B)`` modules or state dicts of this model: probe the line ``t = 0`` at A,
            ``t = 1`` at B on the grid ``(i − distances)/division``; ``points``/``radius`` do not apply.
        directions: your own directions instead of drawn ones (``--directions F``): a dict
            parameter name → tensor, or a list of them (every parameter, its shape and dtype;
            checked as a directions file is); ``count`` takes the first ``count``.
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: where the model's parameters are).
        The other keywords are the CLI's flags of the same name.

    Returns:
        A :class:`ProbeReport`; each direction carries its tensors (``direction``, by name).

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it, its value and what
            was expected); RuntimeError: the probe refused (its message says why).
    """
    config = _common(loss, params, subset, bn, bn_exclude, batch, seed, device, model)
    if direction != "hessian":
        _check_choice("direction", direction, KINDS + ("hessian",))
    _check_choice("compare_kind", compare_kind, KINDS)
    _check_choice("shift_law", shift_law, SHIFT_LAWS)
    _check_int("count", count, 1, allow_none=True)
    _check_int("points", points, 3)
    _check_float("radius", radius)
    _check_int("bootstrap", bootstrap, 0)
    _check_float("ratio_threshold", ratio_threshold)
    if ratio_threshold <= 1:
        raise _bad("ratio_threshold", ratio_threshold, "a finite number > 1")
    _check_float("flat_rise", flat_rise, positive=False)
    if flat_rise < 0:
        raise _bad("flat_rise", flat_rise, "a finite number >= 0")
    _check_float("exponent", exponent, allow_none=True)
    _check_float("shift_scale", shift_scale, allow_none=True)
    _check_int("hessian_iterations", hessian_iterations, 1)
    _check_float("hessian_tolerance", hessian_tolerance)
    _check_int("trace_samples", trace_samples, 0)
    _check_int("compare_random", compare_random, 1, allow_none=True)
    _check_int("distances", distances, 0)
    _check_int("division", division, 1)
    if between is not None and count is not None:
        raise _bad("count", count, "None with between (a line is one direction)")
    config.update(direction=direction, count=count, filter_keep_1d=bool(filter_keep_1d), points=points,
                  radius=float(radius), bootstrap=bootstrap, ratio_threshold=float(ratio_threshold),
                  flat_rise=float(flat_rise), exponent=exponent, shift_scale=shift_scale, shift_law=shift_law,
                  hessian_iterations=hessian_iterations, hessian_tolerance=float(hessian_tolerance),
                  trace_samples=trace_samples, compare_random=compare_random, compare_kind=compare_kind,
                  distances=distances, division=division)
    out, dirs = _run(model, inputs, targets, config, test=test, between=between, directions=directions)
    return _report(out["report"], dirs)


def hessian_directions(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    count: int = 1,
    iterations: int = 100,
    tolerance: float = 1e-4,
    trace_samples: int = 0,
    loss: str = "cross-entropy",
    seed: int = 0,
    params: Optional[str] = None,
    subset: str = "all",
    bn: Union[str, int] = "stale",
    batch: int = 256,
    points: int = 21,
    radius: float = 1.0,
    bootstrap: int = 0,
    device: Union[str, torch.device, None] = None,
) -> HessianResult:
    """The top ``count`` eigenpairs of the Hessian of the mean training loss (the model in eval
    mode at its point), by power iteration on Hessian-vector products, with Hutchinson's trace
    when ``trace_samples`` > 0; each eigenvector is also profiled (``points``, ``radius``, ``bn``),
    so ``result.report`` says whether the sharpest directions are asymmetric.

    Same as ``probe(model, inputs, targets, direction="hessian", ...)``; the keywords
    ``iterations``/``tolerance`` are the CLI's ``--hessian-iterations``/``--hessian-tolerance``.
    """
    _check_int("count", count, 1)
    _check_int("iterations", iterations, 1)
    _check_float("tolerance", tolerance)
    report = probe(model, inputs, targets, direction="hessian", count=count, hessian_iterations=iterations,
                   hessian_tolerance=tolerance, trace_samples=trace_samples, loss=loss, seed=seed, params=params,
                   subset=subset, bn=bn, batch=batch, points=points, radius=radius, bootstrap=bootstrap,
                   device=device)
    return HessianResult(report.hessian, tuple(d.direction for d in report.directions), report)


def surface(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    direction: str = "uniform",
    seed: int = 0,
    grid: int = 21,
    radius: float = 1.0,
    loss: str = "cross-entropy",
    bn: Union[str, int] = "full",
    bn_exclude: Sequence[str] = (),
    params: Optional[str] = None,
    subset: str = "all",
    filter_keep_1d: bool = False,
    hessian_iterations: int = 100,
    hessian_tolerance: float = 1e-4,
    between: Optional[tuple] = None,
    directions: Optional[Sequence[Mapping]] = None,
    distances: int = 20,
    division: int = 40,
    batch: int = 256,
    device: Union[str, torch.device, None] = None,
) -> Surface:
    """The 2-D loss surface ``L(w + a·d1 + b·d2)`` on a ``grid × grid`` lattice of
    ``[−radius, radius]²``, as ``asymvalley probe --surface``: d1, d2 are the directions of seeds
    ``seed``, ``seed + 1`` (or the Hessian's top two for ``direction="hessian"``); with
    ``between=(A, B)``, d1 is the line B − A (A at (0, 0), B at (1, 0), its axis on the line's grid)
    and d2 a random direction made orthogonal to it and as long; ``directions=[d1, d2]`` (dicts
    parameter name → tensor) gives the plane yourself.
    """
    config = _common(loss, params, subset, bn, bn_exclude, batch, seed, device, model)
    if direction != "hessian":
        _check_choice("direction", direction, KINDS + ("hessian",))
    _check_int("grid", grid, 3)
    _check_float("radius", radius)
    _check_int("hessian_iterations", hessian_iterations, 1)
    _check_float("hessian_tolerance", hessian_tolerance)
    _check_int("distances", distances, 0)
    _check_int("division", division, 1)
    config.update(direction=direction, surface=True, grid=grid, radius=float(radius),
                  filter_keep_1d=bool(filter_keep_1d), hessian_iterations=hessian_iterations,
                  hessian_tolerance=float(hessian_tolerance), distances=distances, division=division)
    out, dirs = _run(model, inputs, targets, config, between=between, directions=directions)
    r = out["report"]
    s = r["surface"]
    acc = s.get("accuracy")
    return Surface(
        a=np.asarray(s["a"]), b=np.asarray(s["b"]), loss=np.asarray(s["loss"]),
        accuracy=None if acc is None else np.asarray(acc), axes=tuple(r["directions"]), points=tuple(r["points"]),
        hessian=HessianSummary._of(r.get("hessian")), bn=r["bn"], d1=dirs[0], d2=dirs[1], raw=r,
    )
