"""asymvalley.AveragedModel gives PyTorch's numbers (torch.optim.swa_utils is the oracle)."""
import pytest
import torch
from torch import nn
from torch.optim import swa_utils

import asymvalley


def int_follows_model(sd, model_sd, key):
    """The documented rule for integer tensors (num_batches_tracked): copied from the model.
    PyTorch instead truncates a float average on the CPU and raises on CUDA (SWA)."""
    assert torch.equal(sd[key], model_sd[key.removeprefix("module.")]), key


def close(rule, got, want, key):
    """EMA and non-float tensors: equal. SWA floats: equal to a few ulps (see below)."""
    if rule == "ema" or not want.is_floating_point():
        assert torch.equal(got, want), key
    else:
        eps = torch.finfo(want.dtype).eps
        torch.testing.assert_close(got, want, rtol=8 * eps, atol=8 * eps, msg=key)


def net(dtype=torch.float32, bn=True):
    layers = [nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3)]
    if bn:
        layers.insert(1, nn.BatchNorm1d(5))
    return nn.Sequential(*layers).to(dtype)


def perturb(model, gen, train_bn=True):
    """A random training-like step: new weights, and BN statistics moved by a forward pass."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype))
    if train_bn and any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        model.train()
        dtype = next(model.parameters()).dtype
        model(torch.randn(6, 7, generator=gen).to(dtype))


def run_pair(rule, dtype, use_buffers, steps=6, seed=0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = net(dtype)
    ref_model = net(torch.float32)
    ref_model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    fn = swa_utils.get_ema_multi_avg_fn(0.9) if rule == "ema" else None
    ours = asymvalley.AveragedModel(model, multi_avg_fn=fn, use_buffers=use_buffers)
    ref = swa_utils.AveragedModel(ref_model, multi_avg_fn=fn, use_buffers=use_buffers)
    for _ in range(steps):
        perturb(model, gen)
        ref_model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
        ours.update_parameters(model)
        ref.update_parameters(ref_model)
    return ours, ref, model


@pytest.mark.parametrize("rule", ["swa", "ema"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_buffers", [False, True])
def test_averaged_model_equals_swa_utils(rule, dtype, use_buffers):
    """EMA: bit for bit (both lerp with 1 - decay). SWA: PyTorch's CPU path divides,
    avg + (θ − avg)/(n+1), where the op lerps with 1/(n+1): equal to rounding."""
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    model = net(dtype)
    fn = swa_utils.get_ema_multi_avg_fn(0.9) if rule == "ema" else None
    ours = asymvalley.AveragedModel(model, multi_avg_fn=fn, use_buffers=use_buffers)
    ref = swa_utils.AveragedModel(model, multi_avg_fn=fn, use_buffers=use_buffers)
    for _ in range(7):
        perturb(model, gen)
        ours.update_parameters(model)
        ref.update_parameters(model)
    a, b, msd = ours.state_dict(), ref.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for k in b:
        assert a[k].dtype == b[k].dtype, k
        if not a[k].is_floating_point() and k != "n_averaged":
            int_follows_model(a, msd, k)
        elif rule == "ema" or not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("rule", ["swa", "ema"])
@pytest.mark.parametrize("use_buffers", [False, True])
def test_bf16_model_is_averaged_in_fp32_like_an_fp32_reference(rule, use_buffers):
    ours, ref, model = run_pair(rule, torch.bfloat16, use_buffers)
    a, b, msd = ours.state_dict(), ref.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for k in b:
        if b[k].is_floating_point():
            if a[k].dtype == torch.bfloat16:  # a buffer copied from the model (use_buffers=False)
                assert not use_buffers and "running" in k, k
                assert torch.equal(a[k], b[k].to(torch.bfloat16)), k
            else:
                assert a[k].dtype == torch.float32, k  # fp32 masters under the usual keys
                close(rule, a[k], b[k], k)
        elif k != "n_averaged":
            int_follows_model(a, msd, k)
        else:
            assert torch.equal(a[k], b[k]), k
    # The module itself stays bf16 (forward takes bf16 inputs) and holds the rounded masters.
    w = ours.module[0].weight
    assert w.dtype == torch.bfloat16
    assert torch.equal(w, ours.state_dict()["module.0.weight"].to(torch.bfloat16))
    out = ours(torch.randn(4, 7).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_torch_ema_function_is_recognised_and_custom_functions_take_torch_path():
    model = net()
    assert asymvalley.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.99))._rule == "ema"
    assert asymvalley.AveragedModel(model, multi_avg_fn=swa_utils.get_swa_multi_avg_fn())._rule == "swa"
    custom = asymvalley.AveragedModel(model, avg_fn=swa_utils.get_ema_avg_fn(0.5))
    ref = swa_utils.AveragedModel(model, avg_fn=swa_utils.get_ema_avg_fn(0.5))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        perturb(model, gen)
        custom.update_parameters(model)
        ref.update_parameters(model)
    for k, v in ref.state_dict().items():
        assert torch.equal(custom.state_dict()[k], v), k
    assert int(custom._n_host) == 3


@pytest.mark.parametrize("rule", ["swa", "ema"])
def test_state_dict_cross_loads_both_ways_and_continues(rule):
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    model = net()
    fn = swa_utils.get_ema_multi_avg_fn(0.8) if rule == "ema" else None
    ours = asymvalley.AveragedModel(model, multi_avg_fn=fn, use_buffers=True)
    ref = swa_utils.AveragedModel(model, multi_avg_fn=fn, use_buffers=True)
    for _ in range(3):
        perturb(model, gen)
        ours.update_parameters(model)
        ref.update_parameters(model)
    ours_from_ref = asymvalley.AveragedModel(net(), multi_avg_fn=fn, use_buffers=True)
    ours_from_ref.load_state_dict(ref.state_dict())
    ref_from_ours = swa_utils.AveragedModel(net(), multi_avg_fn=fn, use_buffers=True)
    ref_from_ours.load_state_dict(ours.state_dict())
    for _ in range(3):
        perturb(model, gen)
        for m in (ours, ref, ours_from_ref, ref_from_ours):
            m.update_parameters(model)
    want, msd = ref.state_dict(), model.state_dict()
    for m in (ours, ours_from_ref, ref_from_ours):
        got = m.state_dict()
        for k in want:
            if want[k].is_floating_point() or k == "n_averaged":
                close(rule, got[k], want[k], k)
            elif m is not ref_from_ours:  # PyTorch's class keeps its own integer rule
                int_follows_model(got, msd, k)
    assert int(ours_from_ref.n_averaged) == 6


def test_bf16_state_dict_round_trip_keeps_the_fp32_average():
    ours, ref, _ = run_pair("ema", torch.bfloat16, False, steps=4)
    again = asymvalley.AveragedModel(net(torch.bfloat16), multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
    again.load_state_dict(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    # and PyTorch's class with a bf16 module accepts it (cast on load)
    torch_bf16 = swa_utils.AveragedModel(net(torch.bfloat16))
    torch_bf16.load_state_dict(ours.state_dict())
    assert torch.equal(torch_bf16.module[0].weight, ours.module[0].weight)


def test_modules_that_cannot_be_deepcopied_are_rebuilt():
    from torch.nn.utils import parametrize

    from asymvalley.averaged_model import _rebuild

    class Symmetric(nn.Module):
        def forward(self, x):
            return x.triu() + x.triu(1).transpose(-1, -2)

    lin = nn.Linear(4, 4)
    parametrize.register_parametrization(lin, "weight", Symmetric())
    wn = torch.nn.utils.weight_norm(nn.Linear(4, 3))
    wn(torch.randn(2, 4))  # after a forward, `weight` is a non-leaf attribute (pytorch#28594)
    for m in (lin, wn):
        clone = _rebuild(m, {})  # the path taken when deepcopy raises
        ours = asymvalley.AveragedModel(m)
        for avg in (clone, ours.module):
            assert all(p is not q for p, q in zip(avg.parameters(), m.parameters()))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)
        ours.update_parameters(m)
        x = torch.randn(2, 4)
        assert torch.equal(ours(x), m(x))
        assert torch.equal(clone(x), clone(x))


@pytest.mark.parametrize("rule", ["swa", "ema"])
def test_integer_buffers_follow_the_model_with_use_buffers(rule):
    """use_buffers=True: floats are averaged exactly like swa_utils; num_batches_tracked is copied
    from the model at every update (timm/ema-pytorch), where PyTorch truncates a float average
    on the CPU (and its SWA raises on CUDA: `_foreach_addcdiv_` on int64)."""
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    model = net()
    fn = swa_utils.get_ema_multi_avg_fn(0.9) if rule == "ema" else None
    ours = asymvalley.AveragedModel(model, multi_avg_fn=fn, use_buffers=True)
    ref = swa_utils.AveragedModel(model, multi_avg_fn=fn, use_buffers=True)
    for step in range(1, 6):
        perturb(model, gen)
        ours.update_parameters(model)
        ref.update_parameters(model)
        a, b, msd = ours.state_dict(), ref.state_dict(), model.state_dict()
        for k in b:
            if b[k].is_floating_point() or k == "n_averaged":
                close(rule, a[k], b[k], k)
            else:
                int_follows_model(a, msd, k)
                assert int(a[k]) == step  # one training forward per step
    assert int(ref.state_dict()["module.1.num_batches_tracked"]) < 5  # PyTorch's truncation


def test_cached_plan_follows_replaced_and_reassigned_tensors():
    """The lists are reused between calls, but a replaced parameter, a `.data =` assignment and
    a replaced buffer are all seen; the cache is not deep-copied with the module."""
    import copy

    gen = torch.Generator().manual_seed(5)
    model = net()
    ours = asymvalley.AveragedModel(model, use_buffers=True)
    ref = swa_utils.AveragedModel(model, use_buffers=True)

    def step():
        perturb(model, gen)
        ours.update_parameters(model)
        ref.update_parameters(model)

    step()
    step()
    model[0].weight = nn.Parameter(torch.randn(5, 7, generator=gen))  # a new object
    step()
    model[3].bias.data = torch.randn(3, generator=gen)  # same object, new storage
    step()
    model[1].running_mean = torch.randn(5, generator=gen)  # a buffer replaced
    step()
    a, b, msd = ours.state_dict(), ref.state_dict(), model.state_dict()
    for k in b:
        if b[k].is_floating_point() or k == "n_averaged":
            close("swa", a[k], b[k], k)
        else:
            int_follows_model(a, msd, k)
    twin = copy.deepcopy(ours)
    assert twin._plan is None and ours._plan is not None
    twin.update_parameters(model)
    ours.update_parameters(model)
    for k, v in ours.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v), k
