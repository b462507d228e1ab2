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
    """One data set's loss along a line through the probed point w: ``loss[i]`` is the mean loss
    at ``w + offsets[i]·d``.

    Args:
        offsets: the offsets t, float64 ``[points]``, strictly increasing:
            ``linspace(−radius, radius, points)`` (t = 0 is the probed point), or on a line
            ``(i − distances)/division`` (t = 0 is A, t = 1 is B). Units of ``d``: t = 1 moves the
            weights by ``d`` itself (unit L2 norm for every random kind but ``filter``).
        loss: the mean loss over the data set at each offset, float64 ``[points]``, in the
            loss's units (nats for cross-entropy, squared target units for mse).
        accuracy: top-1 accuracy in percent (0 to 100) at each offset, float64 ``[points]``, for
            cross-entropy; ``None`` for mse.

    Example:
        >>> import numpy as np, torch
        >>> from asymvalley import valley
        >>> net = torch.nn.Linear(1, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x, y = torch.ones(8, 1), torch.zeros(8, 1)  # mse: L(w) = mean((w·x − y)²) = w²
        >>> report = valley.probe(net, x, y, loss="mse", directions={"weight": torch.ones(1, 1)},
        ...                       points=5, bootstrap=0)
        >>> p = report.directions[0].profile
        >>> p.offsets.tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
        >>> np.allclose(p.loss, p.offsets ** 2), p.accuracy is None  # the closed form L(t) = t²
        (True, True)
    """

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
    """One probed direction d and its verdict (the JSON report's ``directions[i]``).

    With the rises ``Δ±(r) = L(s ± r) − L(s)`` around the scored point s, the rise ratio is
    ``R = Δ+(r) / Δ−(r)`` at the largest radius r the grid offers on both sides of s. Rises below
    1e-9 count as 1e-9, so R stays finite when one side does not rise. The class:

    - ``asymmetric`` when ``max(R, 1/R) ≥ ratio_threshold`` (and, with bootstrap, the interval of
      ln R excludes 0); the flat side is the side that rises less;
    - else ``flat`` when both rises are at most ``flat_rise``, else ``sharp``;
    - ``slope`` when the smallest loss is at an end of the grid (no valley inside it).

    Args:
        index: position in the probe; direction i of a random kind was drawn with ``seed + i``.
        kind: how d was made: ``uniform``, ``gaussian``, ``filter``, ``sign-consistent``,
            ``sign-inconsistent``, ``hessian`` (an eigenvector), ``line`` (B − A) or ``loaded``
            (given by ``directions=``).
        seed: the seed it was drawn with (0 when not random).
        params: the parameter subset it moves, in words (``all``, a regular expression, ``given``).
        moved: how many parameter entries it moves (entries in its subset).
        norm: its L2 norm over all parameters (1 for every random kind but ``filter``; ‖B − A‖
            for a line).
        sign_consistency: the fraction, in [0, 1], of moved entries whose sign is their weight's.
        rise_ratio: R, in (0, ∞): > 1 when +t rises more (−t is flat), < 1 when −t rises more,
            1 for a symmetric valley. Mirroring d (t ↦ −t) maps R to 1/R.
        flat_side: +1 when +t is the flat side (R < 1), −1 when −t is (R > 1), 0 when neither
            (``flat``, ``sharp``, ``slope``).
        class_: ``flat``, ``sharp``, ``asymmetric`` or ``slope`` (``class`` is a keyword).
        interval: the bootstrap percentile interval ``(low, high)`` of R at 95 %, over examples
            resampled with replacement; ``None`` with ``bootstrap=0``.
        t_min: the grid offset of the smallest loss.
        scored_at: s, the offset the rises are measured from: ``t_min`` when the loss there is
            below L(0) and inside the grid (with a warning), else 0.
        center_loss: L(s), the loss the rises are measured from.
        warnings: why the verdict needs care (minimum off centre, slope), as sentences.
        asymmetry: everything measured (JSON): ``rise_plus``, ``rise_minus``, ``radius``,
            ``log_rise_ratio``, ``ratio_curve`` (``[r, R(r)]`` at every matched radius), ``fit``
            (the two-sided power fit ``Δ(t) ≈ c± |t|^p``: ``c_plus``, ``c_minus``,
            ``exponent``, ``ratio`` = c+/c−), ``fit_ratio_ci`` and the fields above.
        profile: the training data's :class:`Profile` along d.
        test_profile: the held-out data's :class:`Profile` when ``test=`` was given, else ``None``.
        bias: with ``shift_scale``: the expected-loss-optimal offset c* along d under a shift of
            that law and scale (``c_star``, same sign as the flat side; ``c_max``, ``g0``,
            ``g_c_star``, ...); else ``None``.
        shift: with ``test=``: δ in offset units, where ``L_test(t) ≈ L_train(t + δ)``; else ``None``.
        direction: d itself, one tensor per parameter name (zero outside its subset).

    Example:
        >>> import math, torch
        >>> from asymvalley import valley
        >>> # f(x) = leaky_relu(w·x, 0.5) at w = 0 on x = 1, y = 0 (mse): L(t) = t² for t > 0 and
        >>> # (t/2)² for t < 0, so R = 1 / (1/4) = 4 and −t is the flat side.
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.LeakyReLU(0.5))
        >>> _ = torch.nn.init.zeros_(net[0].weight)
        >>> x, y = torch.ones(8, 1), torch.zeros(8, 1)
        >>> report = valley.probe(net, x, y, loss="mse", directions={"0.weight": torch.ones(1, 1)},
        ...                       points=5, bootstrap=0)
        >>> d = report.directions[0]
        >>> d.kind, d.class_, d.flat_side, math.isclose(d.rise_ratio, 4.0)
        ('loaded', 'asymmetric', -1, True)
        >>> d.t_min, d.scored_at, d.interval is None, torch.equal(d.direction["0.weight"], torch.ones(1, 1))
        (0.0, 0.0, True, True)
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
    """Counts of the classes over a probe's directions, and the median |ln R|.

    Args:
        directions: how many directions were probed.
        asymmetric: how many were classified ``asymmetric``.
        flat: how many ``flat``.
        sharp: how many ``sharp``.
        slope: how many ``slope``.
        fraction_asymmetric: ``asymmetric / directions``, in [0, 1] (0 without directions).
        median_abs_log_ratio: the median over directions of |ln R| (0: symmetric; ln 2 ≈ 0.69:
            one side rises twice as much as the other).

    Example:
        >>> import math, torch
        >>> from asymvalley import valley
        >>> # The valley of DirectionResult's example, probed along d and −d: R = 4, then 1/4.
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.LeakyReLU(0.5))
        >>> _ = torch.nn.init.zeros_(net[0].weight)
        >>> x, y = torch.ones(8, 1), torch.zeros(8, 1)
        >>> d = torch.ones(1, 1)
        >>> s = valley.probe(net, x, y, loss="mse", directions=[{"0.weight": d}, {"0.weight": -d}],
        ...                  points=5, bootstrap=0).summary
        >>> s.directions, s.asymmetric, s.flat + s.sharp + s.slope, s.fraction_asymmetric
        (2, 2, 0, 1.0)
        >>> math.isclose(s.median_abs_log_ratio, math.log(4))
        True
    """

    directions: int
    asymmetric: int
    flat: int
    sharp: int
    slope: int
    fraction_asymmetric: float
    median_abs_log_ratio: float


@dataclasses.dataclass(frozen=True)
class HessianSummary:
    """What power iteration on Hessian-vector products found: the top eigenvalues of the Hessian
    H of the mean training loss (direction i of the probe is eigenvector i), and Hutchinson's
    trace ``tr H ≈ mean(zᵀHz)`` over Rademacher vectors z when asked for.

    Args:
        eigenvalues: λ_1, …, λ_k in the order found (decreasing |λ| when the iteration
            converged), in loss units per squared unit of the parameters.
        iterations: the power iterations spent on each eigenpair.
        converged: whether each eigenpair's λ changed by less than the tolerance, relatively.
        trace: with ``trace_samples`` > 0, a dict ``trace`` (the estimate of tr H), ``std_error``
            (its standard error), ``samples``; else ``None``.
        products: the Hessian-vector products computed in all.

    Example:
        >>> import torch
        >>> from asymvalley import valley
        >>> # mse of a bias-free linear model at w = 0: H = 2·XᵀX/n = diag(1, 4) for these two rows.
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 1)
        >>> h = valley.hessian_directions(net, x, y, loss="mse", count=2, trace_samples=4, points=5).summary
        >>> [round(v, 2) for v in h.eigenvalues], h.converged
        ([4.0, 1.0], (True, True))
        >>> # zᵀHz = tr H for every ±1 vector z when H is diagonal: the estimate is exact.
        >>> round(h.trace["trace"], 6), h.trace["samples"], h.products >= sum(h.iterations)
        (5.0, 4, True)
    """

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
    """The report of :func:`probe`: the CLI's JSON report, typed.

    Args:
        directions: one :class:`DirectionResult` per probed direction, in order.
        summary: the :class:`Summary` over them.
        hessian: for ``direction="hessian"``, the :class:`HessianSummary`; else ``None``.
        comparison: with ``compare_random``, the eigenvectors' asymmetry against that many random
            directions' (dict: ``sharp``, ``random``, ``verdict``); else ``None``.
        shift: with ``test=``, the shift estimated from train vs held-out profiles (dict:
            ``shifts`` per direction, ``scale`` = their root mean square, ``mean``,
            ``positive``, ``negative``, ``sign_test_p``); else ``None``.
        examples: the number of training examples scored.
        loss: ``cross-entropy`` or ``mse``.
        bn: the BatchNorm mode used at each point: ``stale``, ``full`` or ``k=K``
            (``stale`` when the model has no BatchNorm: there is nothing to re-estimate).
        has_batch_norm: whether the model has BatchNorm layers.
        radius: the profiles' radius: ``t ∈ [−radius, radius]``.
        points: grid points per profile (odd, so t = 0 is on the grid).
        cost: forward passes spent (dict): ``eval_forwards`` (eval-mode mini-batches) and
            ``bn_forwards`` (train-mode mini-batches re-estimating BatchNorm statistics).
        raw: the JSON report itself, with the fields not typed here (``config``, ...).

    Example:
        >>> import torch
        >>> from asymvalley import valley
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> report = valley.probe(net, x, y, count=2, points=4, bootstrap=0)
        >>> report.loss, report.bn, report.has_batch_norm, report.examples, report.points
        ('cross-entropy', 'full', True, 64, 5)
        >>> # 2 directions × 5 points × 1 mini-batch, each after one BatchNorm re-estimation pass.
        >>> report.cost
        {'eval_forwards': 10, 'bn_forwards': 10}
        >>> report.summary.directions == len(report.directions) == 2, report.hessian is None
        (True, True)
    """

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
    """The top eigenpairs of the training-loss Hessian and their profiles (:func:`hessian_directions`).

    Args:
        summary: the :class:`HessianSummary` (eigenvalues, iterations, trace).
        eigenvectors: ``eigenvectors[i]`` belongs to ``summary.eigenvalues[i]``: unit L2 norm, one
            tensor per parameter name (its sign is arbitrary).
        report: the :class:`ProbeReport` of the eigenvectors' profiles: whether the sharpest
            directions are asymmetric.

    Example:
        >>> import torch
        >>> from asymvalley import valley
        >>> # mse of a bias-free linear model at w = 0: H = 2·XᵀX/n = diag(1, 4), top eigenvector e₂.
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 1)
        >>> h = valley.hessian_directions(net, x, y, loss="mse", count=1, points=5)
        >>> round(h.eigenvalues[0], 2), abs(h.eigenvectors[0]["weight"][0, 1].item()) > 0.999
        (4.0, True)
        >>> # Along it L(t) = mean((t·x₂)²) = 2t²: a symmetric valley, R = 1.
        >>> d = h.report.directions[0]
        >>> d.kind, d.class_, round(d.rise_ratio, 3)
        ('hessian', 'sharp', 1.0)
    """

    summary: HessianSummary
    eigenvectors: tuple
    report: ProbeReport

    @property
    def eigenvalues(self) -> tuple:
        """λ_1, …, λ_k, the same tuple as ``summary.eigenvalues``."""
        return self.summary.eigenvalues


@dataclasses.dataclass(frozen=True)
class Surface:
    """A 2-D loss surface through the probed point w: ``loss[j, i]`` is the mean loss at
    ``w + a[i]·d1 + b[j]·d2`` (one row per ``b``), as ``asymvalley probe --surface`` writes it.

    Args:
        a: the offsets along d1, float64 ``[grid]``: ``linspace(−radius, radius, grid)``, or the
            line's grid ``(i − distances)/division`` when d1 is B − A.
        b: the offsets along d2, float64 ``[grid]``: ``linspace(−radius, radius, grid)``.
        loss: the mean loss, float64 ``[len(b), len(a)]``, in the loss's units.
        accuracy: top-1 accuracy in percent (0 to 100), same layout, for cross-entropy; ``None``
            for mse.
        axes: two dicts describing d1 and d2: ``kind``, ``seed``, ``params``, ``norm`` and
            ``source`` (how it was made, in words).
        points: the marked points, dicts ``label``, ``a``, ``b``: the probed point ``w`` at
            (0, 0), or ``A`` at (0, 0) and ``B`` at (1, 0) for a line.
        hessian: for ``direction="hessian"``, the :class:`HessianSummary` of the top two
            eigenpairs; else ``None``.
        bn: the BatchNorm mode used at each point (``stale`` without BatchNorm).
        d1: the first direction, one tensor per parameter name.
        d2: the second direction, one tensor per parameter name.
        raw: the JSON report itself.

    Example:
        >>> import numpy as np, torch
        >>> from asymvalley import valley
        >>> # mse of a bias-free linear model at w = 0 along e₁, e₂: L(a, b) = (a² + 4b²)/2.
        >>> net = torch.nn.Linear(2, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 1)
        >>> e1, e2 = {"weight": torch.tensor([[1.0, 0.0]])}, {"weight": torch.tensor([[0.0, 1.0]])}
        >>> s = valley.surface(net, x, y, loss="mse", grid=5, directions=[e1, e2])
        >>> s.loss.shape, s.a.tolist(), s.accuracy is None
        ((5, 5), [-1.0, -0.5, 0.0, 0.5, 1.0], True)
        >>> np.allclose(s.loss, (s.a[None, :] ** 2 + 4 * s.b[:, None] ** 2) / 2)
        True
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
        """The loss grid as a tensor (a copy: changing it leaves ``loss`` as it was).

        Returns:
            ``loss`` as a float64 tensor ``[len(b), len(a)]``: row j is ``b[j]``, column i ``a[i]``.

        Example:
            >>> import torch
            >>> from asymvalley import valley
            >>> net = torch.nn.Linear(2, 1, bias=False)
            >>> x, y = torch.randn(16, 2), torch.randn(16, 1)
            >>> t = valley.surface(net, x, y, loss="mse", grid=3).as_tensor()
            >>> t.dtype, tuple(t.shape)
            (torch.float64, (3, 3))
        """
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
    """Probes ``model``'s loss landscape along directions, as ``asymvalley probe`` does: the
    profile ``L(w + t·d)`` on a grid of t for each direction d, its rise ratio
    ``R = (L(+r) − L(0)) / (L(−r) − L(0))`` and its class (see :class:`DirectionResult`).

    Args:
        model: an ``nn.Module`` (scripted here) or a ``ScriptModule``; it is not modified.
        inputs: the training inputs, first dimension the example.
        targets: their targets: class indices for cross-entropy, values shaped like the model's
            output for mse.
        loss: ``cross-entropy`` or ``mse`` (mean over the examples).
        direction: a random law (``uniform``, ``gaussian``, ``filter``, ``sign-consistent``,
            ``sign-inconsistent``) or ``hessian`` (the top eigenvectors of the training-loss Hessian).
        count: directions (default 10 drawn, 1 eigenvector); direction i uses ``seed + i``.
        seed: the seed of the first direction (and of the bootstrap and the Hessian's start vectors).
        params: only parameters whose name matches this regular expression move (None: all).
        subset: ``all``, ``batch-norm`` (BatchNorm γ and β only) or ``non-batch-norm``.
        filter_keep_1d: ``filter`` directions: tensors with ≤ 1 dim (biases, BatchNorm γ/β) are
            set to the weight itself (``d = w``) instead of zeroed.
        points: grid points per profile, ≥ 3 (made odd, so that t = 0 is on the grid).
        radius: the grid spans ``t ∈ [−radius, radius]`` (> 0).
        bn: BatchNorm at each point: ``stale`` (eval with the point's running statistics),
            ``full`` (re-estimated on all the data, the official ``bn_update``), ``k=K`` or ``K``
            (re-estimated on K mini-batches).
        bn_exclude: BatchNorm module paths left out of re-estimation (layers forward never uses).
        batch: mini-batch size for evaluation and BatchNorm re-estimation.
        bootstrap: resamples of the examples for the intervals of R (0: none).
        ratio_threshold: asymmetric when ``max(R, 1/R) ≥ ratio_threshold`` (> 1).
        flat_rise: symmetric and flat when both rises are ≤ this, in loss units (≥ 0).
        exponent: fix the two-sided fit's exponent p (2: the curvature model); None: fitted.
        shift_scale: the shift scale, in t units, for the theorem-optimal bias c* of each direction
            (``DirectionResult.bias``); None: no c* (with ``test``, the scale is estimated).
        shift_law: the law of that shift, ``gaussian`` or ``uniform``.
        hessian_iterations: ``hessian``: most power iterations per eigenvector.
        hessian_tolerance: ``hessian``: stop when the eigenvalue changes by less than this, relatively.
        trace_samples: ``hessian``: Rademacher samples for Hutchinson's trace (0: none).
        compare_random: ``hessian``: also probe this many random directions (unit norm, kind
            ``compare_kind``) and compare the two groups' asymmetry (``ProbeReport.comparison``).
        compare_kind: the random law of those directions.
        test: held-out ``(inputs, targets)``, profiled along the same directions; the shift scale
            for c* is then estimated from train vs held-out profiles.
        between: ``(A, B)`` modules or state dicts of this model: probe the line ``t = 0`` at A,
            ``t = 1`` at B on the grid ``(i − distances)/division``; ``points``/``radius`` do not apply.
        directions: your own directions instead of drawn ones (``--directions F``): a dict
            parameter name → tensor, or a list of them (every parameter, its shape and dtype;
            checked as a directions file is); ``count`` takes the first ``count``.
        distances: with ``between``: grid points before A (and after B).
        division: with ``between``: grid steps from A to B.
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: where the model's parameters are).

    Returns:
        A :class:`ProbeReport`; each direction carries its tensors (``direction``, by name).

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it, its value and what
            was expected); RuntimeError: the probe refused (its message says why).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from asymvalley import valley
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> report = valley.probe(net, x, y, count=2, points=11, bootstrap=0)
        >>> [d.class_ in ("flat", "sharp", "asymmetric", "slope") for d in report.directions]
        [True, True]
        >>> d = report.directions[0]
        >>> d.kind, d.seed, d.profile.loss.shape, float(d.profile.offsets[5])
        ('uniform', 0, (11,), 0.0)
        >>> # t = 0 is the model itself: plain PyTorch gives the same loss.
        >>> with torch.no_grad():
        ...     bool(abs(d.profile.loss[5] - F.cross_entropy(net(x), y).item()) < 1e-5)
        True
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

    Args:
        model: an ``nn.Module`` (scripted here) or a ``ScriptModule``; it is not modified.
        inputs: the training inputs, first dimension the example.
        targets: their targets: class indices for cross-entropy, values shaped like the model's
            output for mse.
        count: how many eigenpairs (≥ 1), found one after another with deflation.
        iterations: most power iterations per eigenpair (≥ 1).
        tolerance: stop when the eigenvalue changes by less than this, relatively (> 0).
        trace_samples: Rademacher samples for Hutchinson's trace ``tr H ≈ mean(zᵀHz)`` (0: none).
        loss: ``cross-entropy`` or ``mse``.
        seed: the seed of the start vectors and of the trace samples.
        params: only parameters whose name matches this regular expression (None: all); the
            Hessian is the one of the loss in those parameters.
        subset: ``all``, ``batch-norm`` or ``non-batch-norm``.
        bn: BatchNorm at each profiled point: ``stale``, ``full``, ``k=K`` or ``K`` (see :func:`probe`).
        batch: mini-batch size for the products and evaluation.
        points: grid points per profile of each eigenvector (made odd).
        radius: the profiles span ``t ∈ [−radius, radius]``.
        bootstrap: resamples of the examples for the intervals of R (0: none).
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: where the model's parameters are).

    Returns:
        A :class:`HessianResult`: ``eigenvalues``, unit ``eigenvectors`` by parameter name, the
        :class:`HessianSummary` and the eigenvectors' :class:`ProbeReport`.

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it, its value and what
            was expected); RuntimeError: the probe refused (its message says why).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from asymvalley import valley
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
        >>> h = valley.hessian_directions(net, x, y, count=2, iterations=1000, tolerance=1e-9, points=5)
        >>> len(h.eigenvalues), len(h.eigenvectors), h.report.directions[0].kind
        (2, 2, 'hessian')
        >>> # The oracle: the full 8 × 8 Hessian by autograd (weight entries, then bias), in float64.
        >>> def ce(flat):
        ...     return F.cross_entropy(x.double() @ flat[:6].reshape(2, 3).T + flat[6:], y)
        >>> w = torch.cat([net.weight.detach().flatten(), net.bias.detach()]).double()
        >>> top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(ce, w)).abs().max().item()
        >>> abs(h.eigenvalues[0] - top) / top < 1e-3
        True
        >>> # Each eigenvector has unit L2 norm over all parameters.
        >>> v = h.eigenvectors[0]
        >>> abs(sum(float((t.double() ** 2).sum()) for t in v.values()) - 1) < 1e-4
        True
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

    Args:
        model: an ``nn.Module`` (scripted here) or a ``ScriptModule``; it is not modified.
        inputs: the inputs, first dimension the example.
        targets: their targets: class indices for cross-entropy, values shaped like the model's
            output for mse.
        direction: the random law of d1, d2 (``uniform``, ``gaussian``, ``filter``,
            ``sign-consistent``, ``sign-inconsistent``) or ``hessian``; d2 with ``between``.
        seed: d1 is drawn with ``seed``, d2 with ``seed + 1``.
        grid: points per axis, ≥ 3 (made odd, so the probed point is on the lattice).
        radius: both axes span ``[−radius, radius]`` (> 0), except a line's axis.
        loss: ``cross-entropy`` or ``mse``.
        bn: BatchNorm at each point: ``stale``, ``full``, ``k=K`` or ``K`` (see :func:`probe`).
        bn_exclude: BatchNorm module paths left out of re-estimation.
        params: only parameters whose name matches this regular expression move (None: all).
        subset: ``all``, ``batch-norm`` or ``non-batch-norm``.
        filter_keep_1d: ``filter`` directions: keep tensors with ≤ 1 dim as ``d = w``.
        hessian_iterations: ``hessian``: most power iterations per eigenvector.
        hessian_tolerance: ``hessian``: stop when the eigenvalue changes by less than this, relatively.
        between: ``(A, B)`` modules or state dicts of this model: d1 is B − A.
        directions: ``[d1, d2]``, each a dict parameter name → tensor (every parameter, its
            shape and dtype).
        distances: with ``between``: grid points of d1's axis before A (and after B).
        division: with ``between``: grid steps from A to B on d1's axis.
        batch: mini-batch size for evaluation and BatchNorm re-estimation.
        device: ``cpu``, ``cuda``, ``cuda:N`` (default: where the model's parameters are).

    Returns:
        A :class:`Surface`: ``loss[j, i]`` at ``w + a[i]·d1 + b[j]·d2``, with d1 and d2.

    Raises:
        ValueError, TypeError: an argument is invalid (the message names it, its value and what
            was expected); RuntimeError: the probe refused (its message says why).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from asymvalley import valley
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> s = valley.surface(net, x, y, grid=5, radius=0.5)
        >>> s.loss.shape, s.accuracy.shape, [ax["seed"] for ax in s.axes], s.points[0]["label"]
        ((5, 5), (5, 5), [0, 1], 'w')
        >>> # The centre of the lattice is the model itself: plain PyTorch gives the same loss.
        >>> with torch.no_grad():
        ...     bool(abs(s.loss[2, 2] - F.cross_entropy(net(x), y).item()) < 1e-5)
        True
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
