"""asymvalley.EMA on a bf16 / fp16 model keeps an fp32 master: against a float64 run of the same
recursion it stays within fp32 rounding, while a bf16-only EMA (ema_pytorch.EMA on the same
model, which averages in the model's dtype) drifts; resume through state_dict is bitwise."""
import copy

import pytest
import torch
from torch import nn

import asymvalley

ema_pytorch = pytest.importorskip("ema_pytorch")

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 300
DECAY = 0.99


def _walk(model, g, k):
    """A drift plus noise, as training moves weights: the average lags the model."""
    with torch.no_grad():
        for p in model.parameters():
            step = 1e-3 + 1e-2 * torch.randn(p.shape, generator=g)
            p.add_(step.to(p.dtype))


def _run(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32)).to(dtype)
    kw = dict(beta=DECAY, min_value=DECAY, update_after_step=0, update_every=1)
    ours = asymvalley.EMA(model, **kw)
    naive = ema_pytorch.EMA(model, include_online_model=False, **kw)
    g = torch.Generator().manual_seed(1)
    ref = None
    for k in range(STEPS):
        _walk(model, g, k)
        ours.update()
        naive.update()
        w = [p.detach().double() for p in model.parameters()]
        ref = w if ref is None else [DECAY * r + (1 - DECAY) * x for r, x in zip(ref, w)]
    return model, ours, naive, ref


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_model_average_is_fp32_within_rounding(dtype):
    model, ours, naive, ref = _run(dtype)
    sd = ours.state_dict()
    names = [n for n, _ in model.named_parameters()]
    worst_ours = worst_naive = 0.0
    for name, r in zip(names, ref):
        master = sd["ema_model." + name]
        assert master.dtype == torch.float32, name  # the state_dict carries the master
        half = dict(ours.ema_model.named_parameters())[name]
        assert half.dtype == dtype and torch.equal(half, master.to(dtype)), name
        # fp32 rounding: at most one ulp of the largest value per step, summed over every step.
        bound = STEPS * 2.0 ** -24 * float(r.abs().max())
        err = float((master.double() - r).abs().max())
        assert err <= bound, (name, err, bound)
        worst_ours = max(worst_ours, err)
        worst_naive = max(worst_naive, float((dict(naive.ema_model.named_parameters())[name].double() - r).abs().max()))
    # The bug the master prevents: averaging in half precision drifts far beyond that.
    assert worst_naive > 100 * worst_ours, (worst_naive, worst_ours)


def test_half_resume_is_bitwise_and_loads_half_values():
    model, ours, _, _ = _run(torch.bfloat16)
    other = asymvalley.EMA(copy.deepcopy(model), beta=DECAY, min_value=DECAY, update_after_step=0, update_every=1)
    other.load_state_dict(ours.state_dict())
    assert int(other.step) == STEPS
    g = torch.Generator().manual_seed(5)
    other.online_model[0] = model  # both now follow the same online model
    for k in range(20):
        _walk(model, g, k)
        ours.update()
        other.update()
    a, b = ours.state_dict(), other.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # An ema-pytorch-style state_dict (bf16 values) sets the masters from those values.
    half_sd = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in a.items()}
    other.load_state_dict(half_sd)
    for name, p in other.ema_model.named_parameters():
        assert torch.equal(other.state_dict()["ema_model." + name], p.float()), name


def test_fp32_model_has_no_masters():
    ours = asymvalley.EMA(nn.Linear(3, 3))
    assert not [n for n, _ in ours.named_buffers() if n.startswith("_ema32")]
