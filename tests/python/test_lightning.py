"""asymvalley.lightning callbacks inside a real lightning.Trainer fit (CPU), against Lightning's own
WeightAveraging / EMAWeightAveraging (which run torch.optim.swa_utils.AveragedModel) on the same
seed, plus checkpoint save and resume."""
import pytest
import torch
from torch import nn

import asymvalley

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.callbacks import EMAWeightAveraging as LEMA  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.callbacks import WeightAveraging as LWA  # noqa: E402

from asymvalley.lightning import EMAWeightAveraging, WeightAveraging  # noqa: E402

EPOCHS = 3


class Net(L.LightningModule):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)


def fit(callback, tmp_path, seed=0, ckpt_path=None, checkpoint=None):
    model = Net(seed)
    callbacks = [callback] + ([checkpoint] if checkpoint is not None else [])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=checkpoint is not None, default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model, callback


def compare(ours, theirs, model_ours, model_theirs, rtol, atol, batches_at_last_update):
    avg_o, avg_t = ours._average_model, theirs._average_model
    assert isinstance(avg_o, asymvalley.AveragedModel) and not isinstance(avg_t, asymvalley.AveragedModel)
    assert avg_o._rule != "custom"  # the fused op ran, not PyTorch's loop
    assert int(avg_o.n_averaged) == int(avg_t.n_averaged) > 1
    so, st = avg_o.module.state_dict(), avg_t.module.state_dict()
    assert so.keys() == st.keys()
    for k in so:
        if so[k].is_floating_point():
            torch.testing.assert_close(so[k], st[k], rtol=rtol, atol=atol, msg=k)
        else:  # num_batches_tracked: ours copies the model's count, PyTorch's truncates an average
            assert int(so[k]) == batches_at_last_update
    # on_train_end copied the average into the model (Lightning's code, our numbers)
    for (k, a), b in zip(model_ours.state_dict().items(), model_theirs.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=k)
            torch.testing.assert_close(a, so[k], rtol=0, atol=0)


def test_swa_callback_equals_lightnings_own(tmp_path):
    m_o, ours = fit(WeightAveraging(), tmp_path / "o")
    m_t, theirs = fit(LWA(), tmp_path / "t")
    compare(ours, theirs, m_o, m_t, rtol=1e-6, atol=1e-7, batches_at_last_update=EPOCHS * 4)


def test_ema_callback_equals_lightnings_own(tmp_path):
    kw = dict(decay=0.8, update_starting_at_step=2, update_every_n_steps=2)
    m_o, ours = fit(EMAWeightAveraging(**kw), tmp_path / "o")
    m_t, theirs = fit(LEMA(**kw), tmp_path / "t")
    # step indices 2, 4, ..., 10 of 0..11 update: the last at the 11th batch
    compare(ours, theirs, m_o, m_t, rtol=1e-5, atol=1e-6, batches_at_last_update=11)
    with pytest.raises(ValueError, match="decay: got 1.5"):
        EMAWeightAveraging(decay=1.5)


def test_checkpoint_save_and_resume_is_bitwise(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    m_full, full = fit(WeightAveraging(), tmp_path / "a", checkpoint=ckpt)
    first = tmp_path / "ck" / "epoch=0.ckpt"
    state = torch.load(first, weights_only=True)
    assert int(state["averaging_state"]["n_averaged"]) == 4  # 4 steps in epoch 0
    assert set(state["current_model_state"]) == set(state["state_dict"])
    m_res, res = fit(WeightAveraging(), tmp_path / "b", seed=99, ckpt_path=first)  # another init
    assert int(res._average_model.n_averaged) == int(full._average_model.n_averaged) == EPOCHS * 4
    for (k, a), b in zip(full._average_model.state_dict().items(), res._average_model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(m_full.state_dict().values(), m_res.state_dict().values()):
        assert torch.equal(a, b)
