"""Lightning's ModelCheckpoint and EarlyStopping, as a resumed run needs them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn


class ModelCheckpoint(_LightningModelCheckpoint):
    """Two changes to Lightning 2.6's:

    - `last.ckpt` is written at the end of every epoch. Lightning writes it only on epochs that
      also write a top-k checkpoint, so after an epoch without improvement it was stale: a
      killed run lost every epoch since its best, and `resume=` repeated them; and on epochs
      without validation not at all.
    - Resumed in a new directory (`ckpt_path=` of another run), the best checkpoint so far is
      copied in and stays the one to beat. Lightning forgets its score there, so the first new
      epoch became "best", however bad, and was the one tested.
    """

    _validated_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Also an epoch without validation (trainer.check_val_every_n_epoch > 1): Lightning
        # then saves at neither point, and the run's last epochs were saved nowhere.
        if self._should_save_on_train_epoch_end(trainer) or self._validated_epoch != trainer.current_epoch:
            self._save_last_if_missed(trainer)
        elif self.save_last and not trainer.fast_dev_run and trainer.state.fn == TrainerFn.FITTING:
            # Saved at this epoch's validation (check_val_every_n_epoch > 1, or val_check_interval),
            # before the epoch was counted and its schedulers stepped: a finished run's last.ckpt
            # then looked unfinished, and a refused resume= trained nothing but rewrote the run.
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        # Skipped when this step was saved already (top-k and last together), in sanity
        # checking, and on fast_dev_run: the same rules as Lightning's own saves.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage, self._trainer = stage, trainer  # its ckpt_path is set only when restoring

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_best = self._previous_best(state_dict)
        if old_best is not None:
            new_best = Path(self.dirpath) / old_best.name
            new_best.parent.mkdir(parents=True, exist_ok=True)
            tmp = new_best.with_name(f".{new_best.name}.{os.getpid()}.tmp")  # every rank may copy
            shutil.copy2(old_best, tmp)
            os.replace(tmp, new_best)
            score = state_dict.get("best_model_score")
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": str(new_best),
                          "kth_best_model_path": str(new_best), "last_model_path": "",
                          "best_k_models": {str(new_best): score} if score is not None else {}}
        super().load_state_dict(state_dict)

    def _previous_best(self, state_dict: dict[str, Any]) -> Path | None:
        """The best checkpoint of the run being continued in a new directory: the one beside
        the checkpoint resumed from (the stored absolute path may name a moved or since
        resumed run's file). Only when fitting: `trainer.test(ckpt_path=best)` restores too."""
        old_dir, stored = state_dict.get("dirpath", self.dirpath), state_dict.get("best_model_path")
        if getattr(self, "_stage", None) != "fit" or not self.dirpath or old_dir == self.dirpath or not stored:
            return None
        trainer = getattr(self, "_trainer", None)
        resumed_from = trainer.ckpt_path if trainer is not None else None
        beside = Path(resumed_from).parent / Path(stored).name if resumed_from else None
        if beside is not None and beside.is_file():
            return beside
        return None


class EarlyStopping(_LightningEarlyStopping):
    """Two changes to Lightning 2.6's:

    - Lightning restores `patience` from the checkpoint, so `resume=... trainer.max_epochs=N
      callbacks.early_stopping.patience=P` kept the old patience and stopped at once. Here the
      configured patience applies; the count of epochs without improvement is restored.
    - An epoch that `trainer.max_steps` ends before its validation is not judged: Lightning's
      check raised for the missing metric (a traceback) or judged the epoch by the previous one's.
    """

    _validated_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch
        super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validated_epoch == trainer.current_epoch:
            super().on_train_epoch_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience
        # Whether this fit stopped early: a stop recorded by the run it resumes is history.
        self.stopped_epoch = 0
