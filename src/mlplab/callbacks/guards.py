"""Stop a run the moment its loss stops being a number, instead of burning its epochs."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch


class NonFiniteLossError(RuntimeError):
    """Raised from inside `fit`; `train()` catches it, keeps and tests the best checkpoint."""


class FiniteLossGuard(L.Callback):
    """Checks the losses a `training_step` returns (one per optimizer step of the call) at
    least every `check_every_n_steps` optimizer steps."""

    def __init__(self, check_every_n_steps: int = 1) -> None:
        # On a GPU each check is a device sync; checking every few steps keeps the queue full.
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._checked_at = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 <= self._checked_at and trainer.global_step - self._checked_at < self.check_every_n_steps:
            return
        self._checked_at = trainer.global_step
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        here = loss is None or bool(torch.isfinite(loss).all())
        # Under DDP every rank must stop at the same step: a rank stopping alone would leave
        # the others waiting in the next gradient all-reduce until gloo's 30-minute timeout.
        everywhere = trainer.strategy.reduce_boolean_decision(here, all=True) if trainer.world_size > 1 else here
        if everywhere:
            return
        if here:
            raise NonFiniteLossError(
                f"non-finite training loss on another DDP rank at epoch {trainer.current_epoch}, "
                f"by step {trainer.global_step}: lower optimizer.lr or add gradient clipping")
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        lr = lrs[0] if len(set(lrs)) == 1 else lrs
        big = any(not math.isfinite(x) or x >= 1.0 for x in (lrs if lrs else [0.0]))
        cause = (
            "the learning rate is probably too high for this optimizer; lower optimizer.lr"
            if big
            else "check the data and model.init (try a lower optimizer.lr or gradient clipping)"
        )
        losses = loss.detach().flatten()
        first = int((~torch.isfinite(losses)).nonzero()[0])
        # The call's steps end at global_step; report the optimizer step that went wrong.
        step = trainer.global_step - len(losses) + first + 1
        raise NonFiniteLossError(
            f"non-finite training loss ({float(losses[first])}) at epoch {trainer.current_epoch}, "
            f"step {step}, lr={lr}: {cause}"
        )
