"""Lightning's learning-rate monitor, with its per-step logging counted in optimizer steps."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor


class LearningRateMonitor(_LightningLearningRateMonitor):
    """With `logging_interval: step`, Lightning logs when its logging step (+1) is a multiple of
    `trainer.log_every_n_steps`, checked once per `training_step` call. A call holds
    `data.batches_per_call` optimizer steps and the logging step counts steps, so that check
    would skip most multiples, or all of them. This logs at the start of every call that
    contains such a step, at the call's first step and with that step's learning rate."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        every = trainer.log_every_n_steps
        if self.logging_interval == "epoch" or not every:
            return
        first = trainer.global_step
        steps = len(batch) if isinstance(batch, list) else 1  # a group of batches, or one (x, y)
        if not any((step + 1) % every == 0 for step in range(first, first + steps)):
            return
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        for logger in trainer.loggers if stats else []:
            logger.log_metrics(stats, step=first)
