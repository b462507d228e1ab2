"""Lightning drop-ins: ``WeightAveraging`` and ``EMAWeightAveraging`` with the fused update.

Lightning (>= 2.5) ships ``lightning.pytorch.callbacks.WeightAveraging``, which builds a
``torch.optim.swa_utils.AveragedModel`` in ``setup`` and calls its ``update_parameters`` after the
optimizer steps that ``should_update`` selects. It has no factory argument for the averaged
model (the class is imported by name inside Lightning's module), so these subclasses override
``setup`` only, building :class:`asymvalley.AveragedModel` with the same arguments. Everything
else (when to update, the swap around validation, copying the average into the model at the end
of training, the checkpoint layout with ``current_model_state`` and ``averaging_state``) is
Lightning's own code, unchanged; our ``state_dict`` has PyTorch's keys, so checkpoints written
by either class load into the other.

``EMAWeightAveraging(decay=...)`` passes ``multi_avg_fn=get_ema_multi_avg_fn(decay)`` where
Lightning's passes ``avg_fn=get_ema_avg_fn(decay)``: the same rule
``avg <- decay * avg + (1 - decay) * param`` (equal to float rounding), but a per-tensor ``avg_fn``
can only run PyTorch's loop, while the multi-tensor form runs as one fused op.

Integer buffers (``num_batches_tracked``, averaged because Lightning sets ``use_buffers=True``)
are copied from the model, as :class:`asymvalley.AveragedModel` documents; PyTorch's class
truncates a float average into them on the CPU. Floating tensors are unaffected.

This module imports Lightning; ``import asymvalley`` does not.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import weight_averaging as _lightning
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .averaged_model import AveragedModel

__all__ = ["WeightAveraging", "EMAWeightAveraging"]


def _setup(callback: _lightning.WeightAveraging, pl_module: pl.LightningModule, stage: str) -> None:
    """Lightning's ``WeightAveraging.setup`` with :class:`asymvalley.AveragedModel` in place of PyTorch's."""
    if stage != "fit":
        return
    device = callback._device or pl_module.device
    if is_overridden("configure_model", pl_module):
        rank_zero_warn(
            "You're using the WeightAveraging callback with a model that overrides the configure_model "
            "callback. WeightAveraging doesn't support sharding model layers, so you may run out of memory."
        )
        pl_module.configure_model()
    callback._average_model = AveragedModel(
        model=pl_module, device=device, use_buffers=callback._use_buffers, **callback._kwargs
    )


class WeightAveraging(_lightning.WeightAveraging):
    r"""``lightning.pytorch.callbacks.WeightAveraging`` whose averaged model is :class:`asymvalley.AveragedModel`.

    Args:
        device (torch.device | str | int, optional): where the average lives (default: the model's).
        use_buffers (bool): average the buffers too (Lightning's default, ``True``).
        **kwargs: passed to :class:`asymvalley.AveragedModel` (``avg_fn``, ``multi_avg_fn``). The
            default SWA and ``multi_avg_fn=get_ema_multi_avg_fn(d)`` are fused; others run
            PyTorch's own loop.

    Example::

        >>> import lightning, torch
        >>> from asymvalley.lightning import WeightAveraging
        >>> class Net(lightning.LightningModule):
        ...     def __init__(self):
        ...         super().__init__(); self.net = torch.nn.Linear(4, 1)
        ...     def training_step(self, batch, _):
        ...         return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.05)
        >>> data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
        >>> callback = WeightAveraging()
        >>> trainer = lightning.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
        ...                             enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
        >>> trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8))  # the model ends holding the average
        >>> int(callback._average_model.n_averaged)
        4
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Builds the :class:`asymvalley.AveragedModel` when fit begins (Lightning's ``setup`` otherwise).

        Args:
            trainer: the running ``Trainer``.
            pl_module: the ``LightningModule`` being fitted.
            stage: ``"fit"``, ``"validate"``, ...; only ``"fit"`` builds the average.
        """
        _setup(self, pl_module, stage)


class EMAWeightAveraging(_lightning.EMAWeightAveraging):
    r"""``lightning.pytorch.callbacks.EMAWeightAveraging`` with the fused EMA update.

    Args:
        device (torch.device | str | int, optional): where the average lives (default: the model's).
        use_buffers (bool): average the buffers too (default ``True``).
        decay (float): the EMA decay in (0, 1). Default: 0.999.
        update_every_n_steps (int): update on optimizer steps whose index is a multiple of this.
        update_starting_at_step (int, optional): first step index that updates.
        update_starting_at_epoch (int, optional): update at the end of epochs from this index on.
        **kwargs: passed to :class:`asymvalley.AveragedModel`.

    Example::

        >>> import lightning
        >>> from asymvalley.lightning import EMAWeightAveraging
        >>> trainer = lightning.Trainer(accelerator="cpu", max_epochs=10, logger=False,
        ...                             callbacks=[EMAWeightAveraging(decay=0.99)])
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(decay, (int, float)) and 0.0 < decay < 1.0):
            raise ValueError(f"decay: got {decay!r}, expected a number in the open interval (0, 1)")
        super().__init__(
            device=device, use_buffers=use_buffers, decay=decay, update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step, update_starting_at_epoch=update_starting_at_epoch,
            **kwargs,
        )
        # Lightning's passes avg_fn=get_ema_avg_fn(decay); the multi-tensor form is the same rule, fused.
        self._kwargs.pop("avg_fn", None)
        self._kwargs["multi_avg_fn"] = get_ema_multi_avg_fn(decay)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Builds the :class:`asymvalley.AveragedModel` when fit begins.

        Args:
            trainer: the running ``Trainer``.
            pl_module: the ``LightningModule`` being fitted.
            stage: only ``"fit"`` builds the average.
        """
        _setup(self, pl_module, stage)
