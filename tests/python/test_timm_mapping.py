"""The documented mapping from timm's ModelEmaV3 to asymvalley.EMA, against timm itself.

Each setting trains a BatchNorm model for 210 SGD steps; after every step both averages are
updated and every state_dict entry is compared: floating tensors to float rounding, integer
buffers (num_batches_tracked) exactly. A wrong step offset, a swapped clamp, or a constant decay
mapped as a warm-up makes a setting fail within its first averaging steps.
"""
import pytest
import torch
from torch import nn

import asymvalley

timm_ema = pytest.importorskip("timm.utils.model_ema")
ModelEmaV3 = timm_ema.ModelEmaV3

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 210


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _float_buffers(model):
    return [n for n, b in model.named_buffers() if b.is_floating_point()]


# (timm kwargs, the step timm's update gets for the k-th call (None: no step), our kwargs)
SETTINGS = {
    "constant decay": (
        dict(decay=0.98, update_after_step=0), lambda k: k,
        dict(beta=0.98, min_value=0.98, update_after_step=0),
    ),
    "warm-up 2/3": (
        dict(decay=0.9999, use_warmup=True, warmup_gamma=1.0, warmup_power=2 / 3), lambda k: k,
        dict(beta=0.9999, inv_gamma=1.0, power=2 / 3, update_after_step=0),
    ),
    "warm-up 3/4, gamma 10, min_decay, after 20": (
        dict(decay=0.995, min_decay=0.3, update_after_step=20, use_warmup=True, warmup_gamma=10.0,
             warmup_power=0.75), lambda k: k,
        dict(beta=0.995, min_value=0.3, update_after_step=20, inv_gamma=10.0, power=0.75),
    ),
    "warm-up power 1 (running mean), exclude_buffers": (
        dict(decay=0.999, update_after_step=5, use_warmup=True, warmup_gamma=1.0, warmup_power=1.0,
             exclude_buffers=True), lambda k: k,
        dict(beta=0.999, update_after_step=5, inv_gamma=1.0, power=1.0, no_ema_buffers=True),
    ),
    "step counted from 0": (
        dict(decay=0.99, update_after_step=3, use_warmup=True, warmup_power=0.5), lambda k: k - 1,
        dict(beta=0.99, update_after_step=4, power=0.5),
    ),
    "step=None": (
        dict(decay=0.95), None,
        dict(beta=0.95, min_value=0.95, update_after_step=0, extra_first_update=True),
    ),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_timm_model_ema_v3_mapping(name):
    timm_kw, step_of, our_kw = SETTINGS[name]
    our_kw = dict(our_kw)
    model = _model()
    theirs = ModelEmaV3(model, **timm_kw)
    extra = our_kw.pop("extra_first_update", False)
    if our_kw.pop("no_ema_buffers", False):
        our_kw["param_or_buffer_names_no_ema"] = _float_buffers(model)
    ours = asymvalley.EMA(model, update_every=1, copy_integer_tensors=True, **our_kw)
    if extra:
        ours.update()  # stands for timm's construction-time copy
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    moved = 0
    for k in range(1, STEPS + 1):
        x = torch.randn(16, 4, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if step_of is None:
            theirs.update(model)
        else:
            theirs.update(model, step=step_of(k))
        ours.update()
        a, b = ours.ema_model.state_dict(), theirs.module.state_dict()
        assert a.keys() == b.keys()
        fa = torch.cat([v.flatten() for v in a.values() if v.is_floating_point()])
        fb = torch.cat([v.flatten() for v in b.values() if v.is_floating_point()])
        if not torch.allclose(fa, fb, rtol=1e-5, atol=1e-6):  # one check per step; details on failure
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} at k={k}")
        for key in a:
            if not a[key].is_floating_point():
                assert torch.equal(a[key], b[key]), f"{key} at k={k}"
        w, m = ours.ema_model[0].weight, model[0].weight
        moved += int(not torch.allclose(w, m))
    # The averages really lag the model (else a copy every step would pass too).
    assert moved > STEPS // 2


def test_without_integer_copy_the_count_differs_from_timm():
    """ema-pytorch's default (integers left alone) is not timm's: the flag is what maps it."""
    model = _model()
    theirs = ModelEmaV3(model, decay=0.9)
    ours = asymvalley.EMA(model, beta=0.9, min_value=0.9, update_after_step=0, update_every=1)
    for _ in range(3):
        model.train()
        model(torch.randn(8, 4))
        theirs.update(model)
        ours.update()
    assert int(theirs.module[1].num_batches_tracked) == 3
    assert int(ours.ema_model[1].num_batches_tracked) == 0
