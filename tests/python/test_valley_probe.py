"""`asymvalley.valley` (the detector from Python) against independent oracles.

- parity: the same model, data and settings through the `asymvalley probe` binary and through
  Python give identical numbers (one implementation, two front ends);
- profiles: the loss at w + t·d, evaluated here in plain PyTorch with the returned direction
  (BatchNorm stale = the eval-mode forward; full = running statistics recomputed on the data);
- the Hessian's top eigenpair against `torch.autograd.functional.hessian` on a tiny network;
- surfaces and lines against direct evaluation;
- refusals: bad arguments name the argument, the value and what was expected.
"""
import json
import math
import pathlib
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import asymvalley
from asymvalley import valley

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = ROOT / "target" / "release" / "asymvalley"

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _data(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _trained(seed=0):
    """A BatchNorm MLP trained a little, so the point sits near a minimum and the BN statistics
    are not the initial ones."""
    net, (x, y) = _bn_mlp(seed), _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x, y


def _loss_at(net, direction, t, x, y, bn="stale", bn_x=None):
    """Mean cross-entropy on (x, y) of a copy of `net` at w + t·d, in eval mode (stale), or after
    recomputing the BatchNorm running statistics on all of `bn_x` (default `x`) in one batch
    (full; the official bn_update with a single batch)."""
    import copy

    m = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.add_(t * direction[name].to(p.dtype))
        if bn == "full":
            for mod in m.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            m(x if bn_x is None else bn_x)
        m.eval()
        return F.cross_entropy(m(x).double(), y).item()


def _one_thread_env():
    """The CLI on one intra-op thread, like this process (the `one_thread` fixture): a matmul's
    reduction order depends on the thread count, which moves float32 results by an ulp."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_cli_and_python_give_identical_numbers(tmp_path):
    assert CLI.is_file(), f"{CLI} is missing: build it with `cargo build --release -p asymvalley-cli`"
    net, x, y = _trained()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "model.pt"))
    save_file({"inputs": x.contiguous(), "targets": y.contiguous()}, str(tmp_path / "data.safetensors"))
    run = subprocess.run(
        [str(CLI), "probe", "--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data.safetensors"),
         "--count", "3", "--seed", "7", "--points", "11", "--radius", "0.5", "--bn", "full", "--batch", "32",
         "--bootstrap", "50", "--direction", "gaussian", "--json", str(tmp_path / "cli.json"), "--quiet"],
        capture_output=True, text=True, timeout=300, env=_one_thread_env())
    assert run.returncode == 0, run.stderr
    cli = json.loads((tmp_path / "cli.json").read_text())
    py = valley.probe(net, x, y, count=3, seed=7, points=11, radius=0.5, bn="full", batch=32, bootstrap=50,
                      direction="gaussian")
    assert len(py.directions) == len(cli["directions"]) == 3
    for d, c in zip(py.directions, cli["directions"]):
        assert d.profile.loss.tolist() == c["profile"]["loss"]
        assert d.profile.offsets.tolist() == c["profile"]["offsets"]
        assert d.rise_ratio == c["rise_ratio"] and d.flat_side == c["flat_side"] and d.class_ == c["class"]
        assert d.interval == tuple(c["asymmetry"]["rise_ratio_ci"])
        assert (d.seed, d.norm) == (c["seed"], c["norm"])
    assert py.raw["summary"] == cli["summary"] and py.raw["cost"] == cli["cost"]
    # The directions the CLI saved are the ones Python got back.
    saved = load_file(str(tmp_path / "cli.directions.safetensors"))
    for d in py.directions:
        for name, t in d.direction.items():
            assert torch.equal(t, saved[f"d{d.index}/{name}"]), name


@pytest.mark.parametrize("bn", ["stale", "full"])
def test_profile_matches_plain_pytorch(bn):
    net, x, y = _trained()
    r = valley.probe(net, x, y, count=2, points=9, radius=0.8, bn=bn, bootstrap=0, seed=3)
    assert r.bn == bn and r.has_batch_norm
    for d in r.directions:
        assert set(d.direction) == {n for n, _ in net.named_parameters()}
        for t, got in zip(d.profile.offsets, d.profile.loss):
            want = _loss_at(net, d.direction, float(t), x, y, bn=bn)
            assert got == pytest.approx(want, rel=2e-5, abs=1e-7), (bn, t)
    # The user's module is not moved by the probe.
    assert torch.equal(net.state_dict()["0.weight"], _trained()[0].state_dict()["0.weight"])


def test_hessian_top_eigenpair_matches_autograd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in net.named_parameters()]).double()

    def loss(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            params[n] = flat[i:i + k].reshape(s)
            i += k
        out = torch.func.functional_call(net.double(), params, (x.double(),))
        return F.cross_entropy(out, y)

    hess = torch.autograd.functional.hessian(loss, flat0)
    net.float()
    evals, evecs = torch.linalg.eigh(hess)
    top = int(torch.argmax(evals.abs()))
    h = valley.hessian_directions(net, x, y, count=1, iterations=2000, tolerance=1e-10, points=3)
    assert h.eigenvalues[0] == pytest.approx(evals[top].item(), rel=1e-3)
    v = torch.cat([h.eigenvectors[0][n].double().reshape(-1) for n in names])
    assert abs(torch.dot(v / v.norm(), evecs[:, top]).item()) > 0.999


def test_surface_shape_and_values_match_direct_evaluation():
    net, x, y = _trained()
    s = valley.surface(net, x, y, grid=5, radius=0.4, bn="stale", seed=2)
    assert s.loss.shape == (5, 5) and s.a.shape == (5,) and s.b.shape == (5,)
    assert s.as_tensor().shape == (5, 5)
    centre = _loss_at(net, s.d1, 0.0, x, y)
    assert s.loss[2, 2] == pytest.approx(centre, rel=2e-5)
    for j, i in [(0, 0), (4, 1), (3, 4)]:
        combined = {n: s.a[i] * s.d1[n] + s.b[j] * s.d2[n] for n in s.d1}
        assert s.loss[j, i] == pytest.approx(_loss_at(net, combined, 1.0, x, y), rel=2e-5), (j, i)


def test_line_between_two_state_dicts_hits_both_ends():
    a, x, y = _trained(0)
    b, _, _ = _trained(1)
    r = valley.probe(a, x, y, between=(a.state_dict(), b), distances=2, division=4, bn="stale", bootstrap=0)
    (d,) = r.directions
    assert d.kind == "line" and r.raw["between"] == ["between[0]", "between[1]"]
    offsets = d.profile.offsets.tolist()
    with torch.no_grad():
        la = F.cross_entropy(a(x).double(), y).item()
    # t = 0 is A (parameters and running statistics: the whole state dict moved the model to A).
    assert d.profile.loss[offsets.index(0.0)] == pytest.approx(la, rel=2e-5)
    # t = 1 is B's parameters with A's BatchNorm statistics (stale) -- evaluated the same way here.
    assert d.profile.loss[offsets.index(1.0)] == pytest.approx(_loss_at(a, d.direction, 1.0, x, y), rel=2e-5)


def test_held_out_data_estimates_the_shift_and_bias():
    net, x, y = _trained()
    r = valley.probe(net, x, y, test=(x[:48], y[:48]), count=3, points=9, bootstrap=0)
    assert r.shift is not None and r.shift["scale"] >= 0
    for d in r.directions:
        assert d.test_profile is not None and d.shift is not None
        want = _loss_at(net, d.direction, float(d.test_profile.offsets[0]), x[:48], y[:48], bn="full", bn_x=x)
        # Held-out profiles use the BatchNorm statistics re-estimated on the training data.
        assert d.test_profile.loss[0] == pytest.approx(want, rel=2e-5)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(loss="hinge"), "loss"),
        (dict(direction="random"), "direction"),
        (dict(points=1), "points"),
        (dict(radius=-1.0), "radius"),
        (dict(radius=float("nan")), "radius"),
        (dict(bn="k=0"), "bn"),
        (dict(bn="sometimes"), "bn"),
        (dict(count=0), "count"),
        (dict(seed=-1), "seed"),
        (dict(subset="conv"), "subset"),
        (dict(params="0\\.", subset="batch-norm"), "params"),
        (dict(shift_scale=-0.5), "shift_scale"),
        (dict(ratio_threshold=1.0), "ratio_threshold"),
        (dict(test=(torch.zeros(3, 5),)), "test"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs, name):
    net, x, y = _trained()
    with pytest.raises((ValueError, TypeError), match=f"`{name}`") as err:
        valley.probe(net, x, y, **kwargs)
    assert "expected" in str(err.value)


def test_bad_data_and_model_are_refused():
    net, x, y = _trained()
    with pytest.raises(ValueError, match="`targets`.*same non-zero number of examples"):
        valley.probe(net, x, y[:10])
    with pytest.raises(TypeError, match="`model`"):
        valley.probe(lambda t: t, x, y)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pointz'"):
        valley.probe(net, x, y, pointz=3)


def test_the_rust_probe_refuses_with_a_clear_message():
    net, x, y = _trained()
    with pytest.raises(RuntimeError, match="bn-exclude.*3"):
        valley.probe(net, x, y, bn_exclude=["3"])
    # A model traced in eval mode cannot re-estimate BatchNorm: refused, naming the layer.
    traced = torch.jit.trace(net.eval(), x)
    with pytest.raises(RuntimeError, match="layer `1`.*--bn stale"):
        valley.probe(traced, x, y, count=1, points=3)
    # The op itself names an unknown setting.
    with pytest.raises(RuntimeError, match="unknown field `pointz`"):
        torch.ops.asymvalley.valley_probe(torch.zeros(1, dtype=torch.uint8), x, y, None, None, [], [], [],
                                          json.dumps({"config": {"pointz": 3}}))
    with pytest.raises(RuntimeError, match="module"):
        torch.ops.asymvalley.valley_probe(torch.zeros(4, dtype=torch.uint8), x, y, None, None, [], [], [], "{}")


def test_package_exports_the_detector():
    assert asymvalley.valley.probe is valley.probe
    assert callable(valley.hessian_directions) and callable(valley.surface)


def test_dropout_under_full_bn_is_deterministic():
    # Common random numbers: torch's RNG is seeded per grid point, so two runs draw the same masks.
    torch.manual_seed(0)
    # Dropout before BatchNorm: the masks drawn during re-estimation move the statistics.
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.3), torch.nn.BatchNorm1d(16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    x, y = _data()
    runs = [valley.probe(net, x, y, count=2, points=5, bn="full", batch=32, bootstrap=0) for _ in range(2)]
    assert [d.profile.loss.tolist() for d in runs[0].directions] == [d.profile.loss.tolist() for d in runs[1].directions]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    net, x, y = _trained()
    cpu = valley.probe(net, x, y, count=2, points=7, bn="full", bootstrap=0, device="cpu")
    gpu = valley.probe(net, x, y, count=2, points=7, bn="full", bootstrap=0, device="cuda")
    for c, g in zip(cpu.directions, gpu.directions):
        np.testing.assert_allclose(g.profile.loss, c.profile.loss, rtol=1e-4)


def test_train_mode_module_is_probed_in_eval_mode_and_left_as_it_was():
    # The probe scores the model at its point in eval mode whatever mode the module is in (the
    # CLI loads TorchScript files the same way), and the caller's module keeps its mode.
    net, x, y = _trained()
    ev = valley.probe(net.eval(), x, y, count=1, points=5, bn="stale", bootstrap=0)
    tr = valley.probe(net.train(), x, y, count=1, points=5, bn="stale", bootstrap=0)
    assert net.training
    assert tr.directions[0].profile.loss.tolist() == ev.directions[0].profile.loss.tolist()
    with torch.no_grad():
        want = F.cross_entropy(net.eval()(x).double(), y).item()
    assert ev.directions[0].profile.loss[2] == pytest.approx(want, rel=2e-5)


def test_given_directions_are_probed_and_checked():
    net, x, y = _trained()
    # A direction of our own: the normalized gradient of the loss (no seed could draw it).
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    grad = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grad.values()))
    mine = {n: g / norm for n, g in grad.items()}
    r = valley.probe(net, x, y, directions=[mine], points=7, radius=0.5, bn="stale", bootstrap=0)
    (d,) = r.directions
    assert d.kind == "loaded" and r.raw["directions_loaded"] and d.norm == pytest.approx(1.0, rel=1e-5)
    for t, got in zip(d.profile.offsets, d.profile.loss):
        assert got == pytest.approx(_loss_at(net, mine, float(t), x, y), rel=2e-5)
    # Along the gradient the loss falls on the -t side: +t is not the flat side.
    assert d.profile.loss[-1] > d.profile.loss[0]
    bad = dict(mine)
    bad["0.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="d0/0.weight.*shape"):
        valley.probe(net, x, y, directions=bad, points=3)
    with pytest.raises(RuntimeError, match="0.bias.*missing"):
        valley.probe(net, x, y, directions={k: v for k, v in mine.items() if k != "0.bias"}, points=3)
    with pytest.raises(TypeError, match="`directions\\[0\\]`"):
        valley.probe(net, x, y, directions=[{"0.weight": 1.0}])


def test_bytes_that_are_not_a_saved_module_are_refused_by_name():
    """The op loads the module from its bytes in memory (no temporary file): bytes that are no
    `torch.jit.save` get an error naming `module`, not a crash and not a path."""
    x, y = torch.randn(8, 2), torch.zeros(8, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"invalid module .*expected a torch\.jit\.save of a module"):
        torch.ops.asymvalley.valley_probe(
            torch.tensor([1, 2, 3], dtype=torch.uint8), x, y, None, None, [], [], [], "{}"
        )
