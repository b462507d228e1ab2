"""asymvalley.SWA against the real torchcontrib 0.0.2 SWA over real training loops, plus resume in a
fresh process, EMA against torch's AveragedModel, bf16 against an f64 mean, and bad input."""
import copy
import pathlib
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn
from torch.optim import swa_utils

import asymvalley
from asymvalley import SWA

torchcontrib = pytest.importorskip("torchcontrib")
from torchcontrib.optim import SWA as TcSWA  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)


def data(seed=1, n=8, b=16):
    g = torch.Generator().manual_seed(seed)
    # Unequal batch sizes, so the sample weighting of bn_update matters.
    return [(torch.randn(b + 3 * (i % 3), 6, generator=g), torch.randint(0, 3, (b + 3 * (i % 3),), generator=g))
            for i in range(n)]


def make_opt(kind, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.01)
    return torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)


def train(model, opt, batches, epochs, manual=None, sched=None):
    """The loop both wrappers run; the model's own zero_grad (torchcontrib's fails on torch 2.x)."""
    i = 0
    for _ in range(epochs):
        for x, y in batches:
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if manual is not None and i > 10 and i % 5 == 0:
                manual()
            i += 1
        if sched is not None:
            sched.step()


def tc_buffers(tc, model):
    return [tc.state[p]["swa_buffer"] for p in model.parameters()]


def test_torchcontrib_zero_grad_fails_and_ours_does_not():
    model = make_model()
    tc = TcSWA(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(AttributeError, match="defaults"):
        tc.zero_grad()
    ours = SWA(torch.optim.SGD(model.parameters(), lr=0.1))
    nn.functional.cross_entropy(model(data()[0][0]), data()[0][1]).backward()
    ours.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_same_averages_swap_and_bn_as_torchcontrib(kind, mode):
    batches = data()
    m_tc, m_us = make_model(), make_model()
    b_tc, b_us = make_opt(kind, m_tc), make_opt(kind, m_us)
    s_tc = torch.optim.lr_scheduler.StepLR(b_tc, step_size=1, gamma=0.7)
    s_us = torch.optim.lr_scheduler.StepLR(b_us, step_size=1, gamma=0.7)
    if mode == "auto":
        tc, us = TcSWA(b_tc, swa_start=7, swa_freq=3, swa_lr=0.02), SWA(b_us, swa_start=7, swa_freq=3, swa_lr=0.02)
        train(m_tc, tc, batches, 4, sched=s_tc)
        train(m_us, us, batches, 4, sched=s_us)
    else:
        tc, us = TcSWA(b_tc), SWA(b_us)
        train(m_tc, tc, batches, 4, manual=tc.update_swa, sched=s_tc)
        train(m_us, us, batches, 4, manual=us.update_swa, sched=s_us)
    # Same inner trajectory (identical steps), so the iterates agree exactly.
    for a, b in zip(m_tc.parameters(), m_us.parameters()):
        assert torch.equal(a, b)
    assert us.n_averaged == [tc.param_groups[0]["n_avg"]] and us.n_averaged[0] >= 4
    for a, b in zip(tc_buffers(tc, m_tc), us.averages()[0]):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    tc.swap_swa_sgd()
    us.swap_swa_sgd()
    for a, b in zip(m_tc.parameters(), m_us.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    TcSWA.bn_update(batches, m_tc)
    SWA.bn_update(batches, m_us)
    bn_tc, bn_us = m_tc[1], m_us[1]
    torch.testing.assert_close(bn_us.running_mean, bn_tc.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn_us.running_var, bn_tc.running_var, rtol=1e-5, atol=1e-6)
    assert bn_us.momentum == bn_tc.momentum == 0.1


def test_bn_update_is_the_sample_weighted_mean_of_batch_statistics():
    model, batches = make_model(), data()
    SWA.bn_update(batches, model)
    with torch.no_grad():
        h = [model[0](x) for x, _ in batches]
    n = sum(t.shape[0] for t in h)
    mean = sum(t.double().mean(0) * t.shape[0] for t in h) / n
    var = sum(t.double().var(0, unbiased=True) * t.shape[0] for t in h) / n
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=1e-5, atol=1e-6)


RESUME = r"""
import sys, torch
from torch import nn
sys.path.insert(0, {tests!r})
from test_swa_optimizer import make_model, data, train
from asymvalley import SWA
from torchcontrib.optim import SWA as TcSWA
ckpt = torch.load({path!r}, weights_only=True)
model = make_model(seed=123)  # a different init: everything must come from the checkpoint
model.load_state_dict(ckpt["model"])
opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), swa_start=7, swa_freq=3, swa_lr=0.02)
opt.load_state_dict(ckpt["ours"])
train(model, opt, data(), 2)
tmodel = make_model(seed=123)
tmodel.load_state_dict(ckpt["model"])
tc = TcSWA(torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9), swa_start=7, swa_freq=3, swa_lr=0.02)
try:
    tc.load_state_dict(ckpt["theirs"])
    tc_error = ""
except Exception as e:  # torch 2.x: its Optimizer base was never initialised
    tc_error = repr(e)
ids = {{id(p) for p in tmodel.parameters()}}
tc_keys_found = [k in ids for k in ckpt["theirs"]["swa_state"]]
torch.save({{"params": [p.detach() for p in model.parameters()], "avg": opt.averages()[0],
            "n": opt.n_averaged, "tc_error": tc_error, "tc_keys_found": tc_keys_found}}, {out!r})
"""


def test_state_dict_resumes_bitwise_in_a_fresh_process_where_torchcontribs_cannot(tmp_path):
    batches = data()
    model = make_model()
    opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), swa_start=7, swa_freq=3, swa_lr=0.02)
    tmodel = make_model()
    tc = TcSWA(torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9), swa_start=7, swa_freq=3, swa_lr=0.02)
    train(model, opt, batches, 2)
    train(tmodel, tc, batches, 2)
    path, out = tmp_path / "ckpt.pt", tmp_path / "out.pt"
    torch.save({"model": model.state_dict(), "ours": opt.state_dict(), "theirs": tc.state_dict()}, path)
    train(model, opt, batches, 2)  # the uninterrupted run
    script = RESUME.format(tests=str(ROOT / "tests" / "python"), path=str(path), out=str(out))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)
    got = torch.load(out, weights_only=True)
    for a, b in zip(got["params"], model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(got["avg"], opt.averages()[0]):
        assert torch.equal(a, b)
    assert got["n"] == opt.n_averaged
    # torchcontrib's load_state_dict fails on torch 2.x, and even without that its buffers are keyed
    # by id(tensor) of the first process, which names no parameter of the second.
    assert "_optimizer_load_state_dict_pre_hooks" in got["tc_error"]
    assert len(got["tc_keys_found"]) == len(list(tmodel.parameters())) and not any(got["tc_keys_found"])


def test_ema_mode_matches_torch_averaged_model_and_bias_and_context_manager():
    batches = data()
    model = make_model()
    ref = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1), mode="ema", decay=0.9)
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.update_swa()
        ref.update_parameters(model)
    for a, b in zip(opt.averages()[0], ref.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    own = [p.detach().clone() for p in model.parameters()]
    with opt.averaged():
        for p, a in zip(model.parameters(), opt.averages()[0]):
            assert torch.equal(p, a)
    for p, o in zip(model.parameters(), own):
        assert torch.equal(p, o)
    opt.write_biased(0.5)
    for p, a, o in zip(model.parameters(), opt.averages()[0], own):
        torch.testing.assert_close(p, a + 0.5 * (a - o))


def test_bf16_parameters_get_fp32_averages_equal_to_the_f64_mean():
    model = nn.Linear(64, 64).to(torch.bfloat16)
    opt = SWA(torch.optim.SGD(model.parameters(), lr=0.1))
    g = torch.Generator().manual_seed(3)
    snaps = []
    with torch.no_grad():
        for _ in range(200):
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 1e-3)
            snaps.append([p.double().clone() for p in model.parameters()])
            opt.update_swa()
    for k, a in enumerate(opt.averages()[0]):
        assert a.dtype == torch.float32
        want = torch.stack([s[k] for s in snaps]).mean(0)
        assert (a.double() - want).abs().max() < 1e-5


def test_bad_input_is_refused_and_changes_nothing():
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    for kwargs, word in [
        (dict(swa_start=5, swa_freq=0), "swa_freq"),
        (dict(swa_start=-1, swa_freq=1), "swa_start"),
        (dict(swa_start=50, swa_freq=1, total_steps=40), "total_steps"),
        (dict(swa_start=5, swa_freq=1, swa_lr=-0.1), "swa_lr"),
        (dict(swa_start=5, swa_freq=1, swa_lr=float("nan")), "swa_lr"),
    ]:
        with pytest.raises(ValueError, match=word):
            SWA(base, **kwargs)
    with pytest.warns(UserWarning, match="swa_lr is ignored"):  # as torchcontrib warns
        SWA(base, swa_lr=0.05)
    empty = torch.optim.SGD([{"params": []}], lr=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        SWA(empty)
    opt = SWA(base, swa_start=0, swa_freq=1)
    x, y = data()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    base.add_param_group({"params": [nn.Parameter(torch.zeros(3))]})
    before = [p.detach().clone() for p in model.parameters()]
    avg_before = [a.clone() for a in opt.averages()[0]]
    with pytest.raises(ValueError, match="changed after wrapping"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(a, b) for a, b in zip(opt.averages()[0], avg_before))
    assert opt.n_averaged == [1]
    with pytest.raises(ValueError, match="before any update"):
        SWA(torch.optim.SGD(make_model().parameters(), lr=0.1)).swap_swa_sgd()


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    section = text.split("## Optimizer wrapper (Rust and Python)", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(block, "README.md", "exec"), {})
    state = torch.load(tmp_path / "swa_state.pt", weights_only=True)
    assert state["swa"]["n_averaged"] == [18]  # steps 15, 20, ..., 100
