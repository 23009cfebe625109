"""Lightning's ModelCheckpoint, with `last.ckpt` written at the end of every epoch."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning 2.6 writes `last.ckpt` only on epochs that also write a top-k checkpoint, so
    after an epoch without improvement `last.ckpt` is stale: a killed run loses every epoch
    since its best, and `resume=` repeats them. Here `last.ckpt` follows every epoch, as
    `save_last` promises."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        # Skipped when this step was saved already (top-k and last together), in sanity
        # checking, and on fast_dev_run: the same rules as Lightning's own saves.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
