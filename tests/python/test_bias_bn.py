"""bias_toward_flat against its formula (float64) and the op it runs; update_bn against the
sample-weighted closed form and torch.optim.swa_utils.update_bn."""
import copy
import pathlib

import pytest
import torch
from torch import nn
from torch.optim import swa_utils

import asymvalley

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_bias_equals_the_formula_in_float64():
    torch.manual_seed(0)
    sgd = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 2))
    swa = asymvalley.AveragedModel(sgd)
    for _ in range(4):
        with torch.no_grad():
            for p in sgd.parameters():
                p.add_(torch.randn_like(p))
        swa.update_parameters(sgd)
    for beta in [0.0, 0.3, 2.5]:
        got = asymvalley.bias_toward_flat(swa, sgd, beta)
        for name, w in sgd.named_parameters():
            avg = dict(swa.module.named_parameters())[name].double()
            want = avg + beta * (avg - w.double())
            torch.testing.assert_close(got[name].double(), want, atol=1e-5, rtol=1e-6)
        if beta == 0.0:
            for name, p in swa.module.named_parameters():
                assert torch.equal(got[name], p.detach())
    # Written into a module: the anchor model itself.
    want = asymvalley.bias_toward_flat(swa, sgd, 0.5)
    out = asymvalley.bias_toward_flat(swa, sgd, 0.5, into=sgd)
    assert out is sgd
    for name, p in sgd.named_parameters():
        assert torch.equal(p.detach(), want[name])


def test_bias_on_state_dicts_in_float64_and_into_is_all_or_nothing():
    # float64 state dicts: lerp(w, avg, 1 + beta) against avg + beta*(avg - w) to float64 rounding.
    g = torch.Generator().manual_seed(5)
    avg = {"a": torch.randn(300, generator=g, dtype=torch.float64), "b": torch.randn(4, 5, generator=g, dtype=torch.float64)}
    anchor = {k: v + torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in avg.items()}
    for beta in [0.0, 0.25, 1.0, 7.0]:
        got = asymvalley.bias_toward_flat(avg, anchor, beta)
        for k in avg:
            assert got[k].dtype == torch.float64
            torch.testing.assert_close(got[k], avg[k] + beta * (avg[k] - anchor[k]), atol=1e-12, rtol=1e-12)
    # The same numbers as calling the op directly, out aliasing the anchor.
    direct = [v.clone() for v in anchor.values()]
    torch.ops.asymvalley.bias_toward_flat_(direct, list(avg.values()), direct, 0.25)
    got = asymvalley.bias_toward_flat(avg, anchor, 0.25)
    for k, d in zip(avg, direct):
        assert torch.equal(got[k], d)
    # into= with one wrong shape: refused before anything is written.
    net = nn.Linear(4, 5).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {"weight": torch.randn(5, 4, dtype=torch.float64), "bias": torch.randn(1, dtype=torch.float64)}
    with pytest.raises(ValueError, match="bias"):
        asymvalley.bias_toward_flat(sd, {k: v.clone() for k, v in sd.items()}, 0.5, into=net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_bias_uses_the_fp32_master_of_a_half_model_and_refuses_bad_input():
    sgd = nn.Linear(3, 2).to(torch.bfloat16)
    swa = asymvalley.AveragedModel(sgd)
    swa.update_parameters(sgd)
    with torch.no_grad():
        sgd.weight.add_(1.0)
    swa.update_parameters(sgd)
    got = asymvalley.bias_toward_flat(swa, sgd, 1.0)
    assert got["weight"].dtype == torch.float32
    master = swa.state_dict()["module.weight"]
    torch.testing.assert_close(got["weight"], 2 * master - sgd.weight.float())
    with pytest.raises(ValueError, match="beta"):
        asymvalley.bias_toward_flat(swa, sgd, -1.0)
    with pytest.raises(ValueError, match="beta"):
        asymvalley.bias_toward_flat(swa, sgd, float("nan"))
    with pytest.raises(KeyError, match="weight"):
        asymvalley.bias_toward_flat(swa, {"bias": sgd.bias}, 0.5)


def bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(3))  # batch statistics are the inputs' own


def batches():
    g = torch.Generator().manual_seed(3)
    sizes = [16, 16, 16, 3]  # a short last batch: the two weightings differ
    return [(torch.randn(b, 3, generator=g) * (i + 1) + i, torch.zeros(b)) for i, b in enumerate(sizes)]


def test_update_bn_sample_weighting_equals_the_formula():
    net = bn_net()
    net.eval()
    data = batches()
    asymvalley.update_bn(data, net)
    bn = net[0]
    sizes = torch.tensor([x.shape[0] for x, _ in data], dtype=torch.float64)
    means = torch.stack([x.double().mean(0) for x, _ in data])
    vars_ = torch.stack([x.double().var(0, unbiased=True) for x, _ in data])
    want_mean = (sizes[:, None] * means).sum(0) / sizes.sum()
    want_var = (sizes[:, None] * vars_).sum(0) / sizes.sum()
    torch.testing.assert_close(bn.running_mean.double(), want_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), want_var, atol=1e-5, rtol=1e-5)
    assert bn.momentum == 0.1 and not net.training  # restored
    # The per-batch mean differs (the short batch weighs as much as a full one).
    assert (means.mean(0) - want_mean).abs().max() > 1e-2
    # batches=k: the first k batches only.
    asymvalley.update_bn(data, net, batches=2)
    torch.testing.assert_close(bn.running_mean.double(), means[:2].mean(0), atol=1e-5, rtol=1e-5)


def test_update_bn_batch_weighting_equals_torch():
    data = batches()
    ours, ref = bn_net(), bn_net()
    asymvalley.update_bn(data, ours, weighting="batch")
    swa_utils.update_bn(data, ref)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    # Through a real network with a conv and BN2d too.
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    imgs = [torch.randn(5, 2, 8, 8) for _ in range(3)]
    asymvalley.update_bn(imgs, a, weighting="batch")
    swa_utils.update_bn(imgs, b)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_update_bn_refuses_bad_arguments():
    with pytest.raises(ValueError, match="weighting"):
        asymvalley.update_bn([], bn_net(), weighting="epoch")
    with pytest.raises(ValueError, match="batches"):
        asymvalley.update_bn([], bn_net(), batches=0)


def test_fp32_average_moved_to_bfloat16_updates_like_torch():
    torch.manual_seed(2)
    model = nn.Linear(6, 3)
    ours = asymvalley.AveragedModel(model).to(torch.bfloat16)
    ref = swa_utils.AveragedModel(model).to(torch.bfloat16)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(model)
        ref.update_parameters(model)
    for a, b in zip(ours.module.parameters(), ref.module.parameters()):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a, b, atol=0.02, rtol=0.02)  # bf16 rounding of each step
    assert int(ours.n_averaged) == int(ref.n_averaged) == 5


def _bytes(t):
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).clone()


def snapshot(avg):
    """Bytes of the state_dict, every buffer (fp32 masters included) and every parameter."""
    parts = [("sd", avg.state_dict().items()), ("buf", avg.named_buffers()), ("param", avg.named_parameters())]
    out = {(tag, k): _bytes(v) for tag, items in parts for k, v in items}
    out[("host", "n")] = _bytes(avg._n_host)
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_load_state_dict_is_all_or_nothing(dtype):
    torch.manual_seed(4)
    model = nn.Linear(4, 3).to(dtype)
    avg = asymvalley.AveragedModel(model)
    avg.update_parameters(model)
    with torch.no_grad():
        model.weight.add_(0.37)
    avg.update_parameters(model)
    before = snapshot(avg)
    good = avg.state_dict()
    bad = dict(good)
    bad["module.weight"] = torch.ones(1, 4)  # broadcasts to (3, 4), wrong shape
    bad["module.bias"] = good["module.bias"] + 1  # a good key that must not be loaded either
    bad["n_averaged"] = torch.tensor(9)
    with pytest.raises(RuntimeError, match="module.weight"):
        avg.load_state_dict(bad)
    after = snapshot(avg)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # The correct dict still loads.
    avg.load_state_dict(good)


def test_bias_into_a_half_averaged_model_writes_its_masters():
    sgd = nn.Linear(3, 2).to(torch.bfloat16)
    swa = asymvalley.AveragedModel(sgd)
    swa.update_parameters(sgd)
    with torch.no_grad():
        sgd.weight.add_(0.5)
    swa.update_parameters(sgd)
    want = asymvalley.bias_toward_flat(swa, sgd, 0.7)
    assert asymvalley.bias_toward_flat(swa, sgd, 0.7, into=swa) is swa
    sd = swa.state_dict()
    for name, value in want.items():
        assert torch.equal(sd["module." + name], value)  # the fp32 master
        assert torch.equal(dict(swa.module.named_parameters())[name], value.to(torch.bfloat16))
