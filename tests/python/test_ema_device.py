"""asymvalley.EMA(device=...): the average on another device than the model.

On a CPU-only machine: the CPU -> CPU path (equal to the default, no staging), and the deferred
path of a CUDA -> CPU offload driven by a stand-in event (the staged copy is a snapshot taken at
update(); its average lands at the next update or at any read), against an EMA on the model's
device. With CUDA: the staging buffers are pinned, the result equals an on-device EMA, and
update() makes no synchronizing CUDA call (torch.cuda.set_sync_debug_mode("error")).
"""
import pytest
import torch
from torch import nn

import asymvalley

pytestmark = pytest.mark.usefixtures("one_thread")

KW = dict(beta=0.9, update_after_step=3, update_every=2)


def _model(device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).to(device)


def _train_step(model, g):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device))
    model.train()
    model(torch.randn(16, 4, generator=g).to(next(model.parameters()).device))


def _assert_same(a, b, exact=True):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if exact:
            assert torch.equal(sa[k].cpu(), sb[k].cpu()), k
        else:
            torch.testing.assert_close(sa[k].cpu(), sb[k].cpu(), rtol=1e-5, atol=1e-6, msg=k)


def test_cpu_to_cpu_equals_default():
    model = _model()
    ours = asymvalley.EMA(model, device="cpu", **KW)
    ref = asymvalley.EMA(model, **KW)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        _train_step(model, g)
        ours.update()
        ref.update()
        assert ours._pending is None and not ours._staging  # same device: nothing staged
    _assert_same(ours, ref)
    assert next(ours.ema_model.parameters()).device.type == "cpu"


class _StandInEvent:
    """What _flush needs of a torch.cuda.Event; counts the waits."""

    waits = 0

    def synchronize(self):
        _StandInEvent.waits += 1


def test_deferred_offload_bookkeeping(monkeypatch):
    model = _model()
    ours = asymvalley.EMA(model, **KW)
    ref = asymvalley.EMA(model, **KW)
    # A CUDA -> CPU stage: a snapshot of the sources now, an event to wait for later.
    monkeypatch.setattr(ours, "_stage", lambda targets, sources: ([s.clone() for s in sources], _StandInEvent()))
    g = torch.Generator().manual_seed(1)
    for k in range(41):  # the last (k = 40) averages and is read only below
        _train_step(model, g)
        ours.update()
        ref.update()
        if k % 3 == 0:
            _train_step(model, g)  # the model moves on before anyone reads: the snapshot must hold
            ref_sd = ref.state_dict()
            acted = k % KW["update_every"] == 0  # this update copied or averaged (else it skipped)
            assert (ours.__dict__["_pending"] is not None) == acted  # its work is still queued
            for key, value in ours.state_dict().items():  # a read applies it first
                assert torch.equal(value, ref_sd[key]), (k, key)
            assert ours.__dict__["_pending"] is None
    waits = _StandInEvent.waits
    ours.ema_model  # noqa: B018 - reading the attribute flushes
    assert _StandInEvent.waits == waits + 1
    _assert_same(ours, ref)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_to_cpu_pinned_and_no_sync():
    model = _model("cuda")
    ours = asymvalley.EMA(model, device="cpu", **KW)
    ref = asymvalley.EMA(model, **KW)
    g = torch.Generator().manual_seed(1)
    for k in range(30):
        _train_step(model, g)
        if k >= 2:
            torch.cuda.set_sync_debug_mode("error")
        try:
            ours.update()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ref.update()
    assert ours._staging and all(b.is_pinned() for b in ours._staging.values())
    assert all(p.device.type == "cpu" for p in ours.ema_model.parameters())
    _assert_same(ours, ref, exact=False)
