"""asymvalley.EMA against the real ema_pytorch.EMA, every step, BatchNorm model included."""
import copy

import pytest
import torch
from torch import nn

import asymvalley

ema_pytorch = pytest.importorskip("ema_pytorch")


pytestmark = pytest.mark.usefixtures("one_thread")

def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("after,every,kw", [
    (100, 10, {}),                                  # multiple of update_every
    (25, 10, {}),                                   # not a multiple
    (7, 3, {"beta": 0.9, "min_value": 0.5}),        # warm-up clamped from below
    (0, 1, {"inv_gamma": 1e-9, "beta": 0.95}),      # warm-up effectively off: decay == beta
    # an ignored name (copied on copy steps only) and a name copied instead of averaged
    (6, 2, {"beta": 0.9, "ignore_names": {"3.bias"}, "param_or_buffer_names_no_ema": {"1.running_mean"}}),
])
def test_matches_ema_pytorch_every_step(after, every, kw):
    model = _model()
    ours = asymvalley.EMA(model, update_after_step=after, update_every=every, **kw)
    ref = ema_pytorch.EMA(model, update_after_step=after, update_every=every, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(220):
        x = torch.randn(16, 4, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.update()
        ref.update()
        assert ours.get_current_decay() == pytest.approx(ref.get_current_decay(), abs=1e-7)
        a = ours.ema_model.state_dict()
        b = ref.ema_model.state_dict()
        assert a.keys() == b.keys()
        fa = torch.cat([v.flatten().double() for v in a.values()])
        fb = torch.cat([v.flatten().double() for v in b.values()])
        if not torch.allclose(fa, fb, rtol=1e-5, atol=1e-6):  # one check per step; details on failure
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_and_swap():
    model = _model()
    ema = asymvalley.EMA(model, update_after_step=0, update_every=1, beta=0.9)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        ema.update()
    other = asymvalley.EMA(copy.deepcopy(model), update_after_step=0, update_every=1, beta=0.9)
    other.load_state_dict(ema.state_dict())
    assert int(other.step) == 5
    before = [p.clone() for p in model.parameters()]
    with ema.swap_in() as m:
        for p, q in zip(m.parameters(), ema.ema_model.parameters()):
            assert torch.equal(p, q)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kw,word", [({"beta": 1.5}, "beta"), ({"update_every": 0}, "update_every"),
                                     ({"inv_gamma": 0.0}, "inv_gamma")])
def test_bad_arguments_named(kw, word):
    with pytest.raises(ValueError, match=word):
        asymvalley.EMA(_model(), **kw)


def test_refused_update_changes_nothing():
    model = _model()
    ema = asymvalley.EMA(model, update_after_step=0, update_every=1, beta=0.9)
    ema.update()
    ema.update()
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    model[3].weight = nn.Parameter(torch.zeros(3, 8))  # replaced with another shape
    with pytest.raises(ValueError, match=r"shape \(3, 8\), expected \(2, 8\)"):
        ema.update()
    after = ema.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert int(ema.step) == 2


def test_pickles_with_its_hooks_and_a_fresh_lock(tmp_path):
    ema = asymvalley.EMA(_model(), update_after_step=0, update_every=1)
    ema.update()
    torch.save(ema, tmp_path / "ema.pt")
    back = torch.load(tmp_path / "ema.pt", weights_only=False)
    back.update()
    assert int(back.step) == 2 and back._lock is not ema._lock
    clone = copy.deepcopy(ema)
    clone.update()
    assert int(clone.step) == 2 and int(ema.step) == 1
