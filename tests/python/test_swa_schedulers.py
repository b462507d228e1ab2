"""asymvalley.SWA as a real torch.optim.Optimizer: lr schedulers attach to it directly and give the
same lr sequence and weights as the same scheduler on torchcontrib 0.0.2's SWA (the peer), and as
the scheduler on the inner optimizer; hooks, zero_grad, add_param_group, the end of training, and
bad input that must change nothing."""
import copy

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler, swa_utils

import asymvalley  # noqa: F401  (loads the op library)
from asymvalley import SWA

torchcontrib = pytest.importorskip("torchcontrib")
from torchcontrib.optim import SWA as TcSWA  # noqa: E402

EPOCHS, BATCHES = 5, 6


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))


def make_inner(model):
    # Two groups with different lrs, so a scheduler that reaches only one group is caught.
    return torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.03}],
        lr=0.1, momentum=0.9,
    )


def batches():
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(BATCHES)]


SCHEDULERS = {
    # (make scheduler, steps it per batch (True) or per epoch, SWA kwargs)
    "steplr": (lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5), False,
               dict(swa_start=14, swa_freq=3, swa_lr=0.02)),
    "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS * BATCHES), True,
               dict(swa_start=10, swa_freq=2)),
    "swalr": (lambda o: swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=3, anneal_strategy="cos"), False,
              dict(swa_start=12, swa_freq=4)),
}


def run(model, opt, sched, per_batch, zero):
    lrs = []
    for _ in range(EPOCHS):
        for x, y in batches():
            zero()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if per_batch:
                sched.step()
            lrs.append([g["lr"] for g in opt.param_groups])
        if not per_batch:
            sched.step()
    return lrs


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_on_swa_matches_torchcontrib_and_the_inner_optimizer(name):
    make_sched, per_batch, kw = SCHEDULERS[name]
    m_us, m_tc, m_in = make_model(), make_model(), make_model()
    us = SWA(make_inner(m_us), **kw)
    tc = TcSWA(make_inner(m_tc), **kw)
    inner = make_inner(m_in)
    us_in = SWA(inner, **kw)
    lr_us = run(m_us, us, make_sched(us), per_batch, us.zero_grad)
    lr_tc = run(m_tc, tc, make_sched(tc), per_batch, m_tc.zero_grad)  # tc.zero_grad fails on torch 2.x
    lr_in = run(m_in, us_in, make_sched(inner), per_batch, us_in.zero_grad)
    assert lr_us == lr_tc == lr_in
    assert len({tuple(r) for r in lr_us}) > 2  # the schedule really moved the lr
    for a, b, c in zip(m_us.parameters(), m_tc.parameters(), m_in.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert us.n_averaged == [tc.param_groups[0]["n_avg"], tc.param_groups[1]["n_avg"]] == us_in.n_averaged
    assert us.n_averaged[0] >= 3
    tc_avg = [tc.state[p]["swa_buffer"] for p in m_tc.parameters()]
    ours = us.averages()[0] + us.averages()[1]
    for a, b in zip(ours, tc_avg):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_optimizer_surface_hooks_zero_grad_and_shared_groups():
    model = make_model()
    inner = make_inner(model)
    opt = SWA(inner, swa_start=0, swa_freq=1)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o is opt)))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o is opt)))
    x, y = batches()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert calls == [("pre", True), ("post", True)]
    h1.remove()
    h2.remove()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert opt.n_averaged == [1, 1] and inner.state  # momentum buffers were made by the inner step
    seen = []
    opt.register_state_dict_post_hook(lambda o, sd: seen.append(sorted(sd)))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("loaded"))
    opt.load_state_dict(opt.state_dict())
    assert seen == [["optimizer", "swa"], "loaded"]


def snapshot(model, opt):
    return (copy.deepcopy(opt.optimizer.state_dict()), [p.detach().clone() for p in model.parameters()],
            opt.state_dict()["swa"])


def assert_same(a, b):
    (o1, p1, s1), (o2, p2, s2) = a, b
    assert o1["param_groups"] == o2["param_groups"]
    assert o1["state"].keys() == o2["state"].keys()
    for k in o1["state"]:
        for kk in o1["state"][k]:
            assert torch.equal(o1["state"][k][kk], o2["state"][k][kk])
    assert all(torch.equal(x, y) for x, y in zip(p1, p2))
    assert s1["steps"] == s2["steps"] and s1["n_averaged"] == s2["n_averaged"]
    for g1, g2 in zip(s1["averages"], s2["averages"]):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            assert all(torch.equal(x, y) for x, y in zip(g1, g2))


def test_add_param_group_is_refused_and_changes_nothing():
    model = make_model()
    opt = SWA(make_inner(model), swa_start=0, swa_freq=1)
    x, y = batches()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match="param_group: got a group of 1 parameters"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
    assert len(opt.param_groups) == 2
    assert_same(before, snapshot(model, opt))
    opt.step()  # still usable
    assert opt.n_averaged == [2, 2]


def test_the_end_of_training_rule():
    # torchcontrib has no end; with total_steps the first average must come by then ...
    model = make_model()
    inner = make_inner(model)
    for start, freq, total in [(20, 1, 20), (18, 5, 19), (50, 1, 40)]:
        with pytest.raises(ValueError, match=f"swa_start: got {start}.*total_steps = {total}"):
            SWA(inner, swa_start=start, swa_freq=freq, total_steps=total)
    opt = SWA(inner, swa_start=3, swa_freq=2, total_steps=4)  # first average after step 4: allowed
    for x, y in batches()[:4]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert opt.n_averaged == [1, 1]
    # ... and a step past it is refused before the inner step runs.
    x, y = batches()[4]
    nn.functional.cross_entropy(model(x), y).backward()
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match="step: this would be step 5, expected at most total_steps = 4"):
        opt.step()
    assert_same(before, snapshot(model, opt))
    with pytest.raises(ValueError, match="total_steps"):
        SWA(inner, total_steps=0)


@pytest.mark.parametrize("kwargs,word", [
    (dict(swa_start=5, swa_freq=0), "swa_freq: got 0"),
    (dict(swa_start=-1, swa_freq=1), "swa_start: got -1"),
    (dict(swa_start=2.5, swa_freq=1), "swa_start: got 2.5"),
    (dict(swa_start=True, swa_freq=1), "swa_start: got True"),
    (dict(swa_start=5, swa_freq=1, swa_lr=-0.1), "swa_lr: got -0.1"),
    (dict(swa_start=5, swa_freq=1, swa_lr=float("nan")), "swa_lr: got nan"),
    (dict(swa_start=5, swa_freq=1, swa_lr=float("inf")), "swa_lr: got inf"),
    (dict(swa_start=5, swa_freq=1, total_steps=5), "total_steps = 5"),
    (dict(mode="ema", decay=1.0), "decay: got 1.0"),
    (dict(mode="mean"), "mode: got 'mean'"),
])
def test_bad_arguments_are_named_and_change_nothing(kwargs, word):
    model = make_model()
    inner = make_inner(model)
    x, y = batches()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    inner.step()
    before = copy.deepcopy(inner.state_dict())
    step_fn = inner.step
    with pytest.raises(ValueError, match=word):
        SWA(inner, **kwargs)
    after = inner.state_dict()
    assert after["param_groups"] == before["param_groups"] and inner.step == step_fn
    for k in before["state"]:
        assert torch.equal(after["state"][k]["momentum_buffer"], before["state"][k]["momentum_buffer"])


def test_bad_optimizers_are_refused():
    with pytest.raises(ValueError, match="optimizer: it has no parameters"):
        SWA(torch.optim.SGD([{"params": []}], lr=0.1))
    with pytest.raises(ValueError, match="optimizer: got list"):
        SWA([nn.Parameter(torch.zeros(1))])
    model = make_model()
    with pytest.raises(ValueError, match="optimizer: got an SWA"):
        SWA(SWA(make_inner(model)))


@pytest.mark.parametrize("mutate,word", [
    (lambda s: s.pop("swa"), "expected a dict with 'optimizer' and 'swa'"),
    (lambda s: s["swa"].pop("steps"), "lacks \\['steps'\\]"),
    (lambda s: s["swa"].update(steps=-3), "steps -3"),
    (lambda s: s["swa"].update(n_averaged=[-1, 2]), "group 0 n_averaged -1"),
    (lambda s: s["swa"].update(n_averaged=[0, 2]), "group 0 n_averaged 0"),
    (lambda s: s["swa"]["averages"][1].pop(), "group 1 has 1 averages, expected 2"),
    (lambda s: s["swa"]["averages"][0].__setitem__(0, torch.zeros(2, 2)), "group 0 parameter 0 average is \\(2, 2\\)"),
    (lambda s: s["swa"]["averages"][0].__setitem__(1, torch.zeros(12, dtype=torch.float64)), "float64"),
    (lambda s: s["optimizer"]["param_groups"].pop(), "different number of parameter groups"),
])
def test_malformed_state_dicts_are_refused_and_change_nothing(mutate, word):
    model = make_model()
    opt = SWA(make_inner(model), swa_start=1, swa_freq=1)
    for x, y in batches()[:3]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    good = opt.state_dict()
    for x, y in batches()[3:5]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    bad = copy.deepcopy(good)
    mutate(bad)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=word):
        opt.load_state_dict(bad)
    assert_same(before, snapshot(model, opt))
