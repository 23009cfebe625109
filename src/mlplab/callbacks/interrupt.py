"""Ctrl-C that costs nothing: finish the step, save last.ckpt, say how to resume, exit 1.

SIGTERM (`kill`, `docker stop`, a scheduler's time limit) does what Ctrl-C does at that moment:
`mlplab.cli.SigtermAsInterrupt` hands it to the SIGINT handler in place, one of the two below
during a run.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def _name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class GracefulInterrupt(L.Callback):
    """The first SIGINT (or SIGTERM) only sets a flag, so the optimizer step in flight completes
    and the saved state is consistent; the second one falls through to Lightning's immediate stop."""

    def __init__(self) -> None:
        self._requested = False
        self._at_epoch_end = False  # the request came in an epoch's last call: acted on once it has ended
        self._signal = "Ctrl-C"
        self._previous: Any = None
        self._previous_term: Any = None
        self.after: FinishFirst | None = None  # takes SIGINT over once training ends (set by train())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning's SIGTERM handler broadcasts from inside itself and signals the other ranks
        # again: under DDP, ranks that each got the signal then ran different collectives and
        # waited on each other for good (in the sanity check and the test too). Its other
        # handlers (SLURM's requeue signal) stay; SIGTERM keeps the one it had.
        connector = trainer._signal_connector
        register = connector.register_signal_handlers
        if getattr(register, "keeps_sigterm", False):
            return

        def register_but_sigterm() -> None:
            main = threading.current_thread() is threading.main_thread()
            term = signal.getsignal(signal.SIGTERM) if main else None
            register()
            if main:
                signal.signal(signal.SIGTERM, term)

        register_but_sigterm.keeps_sigterm = True  # type: ignore[attr-defined]
        connector.register_signal_handlers = register_but_sigterm  # type: ignore[method-assign]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._requested = self._at_epoch_end = False
        from mlplab.cli import SigtermAsInterrupt

        if SigtermAsInterrupt.received:  # under DDP, before training (the sanity check): acted on now
            self._requested, self._signal = True, "SIGTERM"
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            # Lightning's SIGTERM handler would stop a validation pass with nothing saved; under
            # DDP it broadcasts from inside the handler and signals the other ranks again, so
            # ranks that each got the signal ran different collectives and waited forever.
            self._previous_term = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        self._signal = _name(signum)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        requested = self._requested
        if trainer.world_size > 1:
            # Every rank stops at the same step, even when the signal reached only some of them
            # or reached them a step apart: the checkpoint is written together. Asked every 8th
            # call (and at an epoch's last): each all-reduce costs ~2 ms on CPU.
            last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            if batch_idx % 8 != 7 and not last:
                return
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        if not self._requested:  # a DDP rank that got no signal itself: its name is not known here
            self._signal = "a signal to another rank"
        self._requested = True
        ckpt = trainer.checkpoint_callback
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and isinstance(ckpt, ModelCheckpoint) and ckpt.save_last:
            # The epoch's last call: saved here, Lightning restores the epoch as ended, and its
            # validation, best-checkpoint choice, early-stopping check and scheduler step never
            # happen. The epoch ends first; its own last.ckpt is then the one to resume from.
            self._at_epoch_end = True
            return
        folder = Path(ckpt.dirpath) if isinstance(ckpt, ModelCheckpoint) and ckpt.dirpath else (
            Path(trainer.default_root_dir) / "checkpoints"
        )
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path)  # a temporary file beside it, renamed (AtomicCheckpointIO)
        self._stop(trainer, f"during epoch {trainer.current_epoch} after step {trainer.global_step}; saved {path}")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._requested and self._at_epoch_end:
            ckpt = trainer.checkpoint_callback
            path = Path(ckpt.dirpath) / "last.ckpt" if isinstance(ckpt, ModelCheckpoint) and ckpt.dirpath else None
            self._stop(trainer, f"at the end of epoch {trainer.current_epoch - 1}, after its validation; saved {path}")

    def _stop(self, trainer: L.Trainer, where: str) -> None:
        if trainer.is_global_zero:
            print(f"\nInterrupted ({self._signal}) {where}\n"
                  f"Resume with: python src/train.py resume={shlex.quote(str(trainer.default_root_dir))}",
                  file=sys.stderr, flush=True)
        self._restore()
        raise KeyboardInterrupt  # Lightning tears down and exits with status 1

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._previous_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        if self.after is not None:
            # No batch is left to act on a Ctrl-C made during the last validation: it is passed
            # on, and from here (Lightning's teardown included) a Ctrl-C waits for the summary.
            self.after.arm()
            if self._requested:
                self.after.request(self._signal)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()


class FinishFirst:
    """Ctrl-C once training has finished: the run is tested and its summary.json written first.

    Before, Lightning's default handler was back by then, so a Ctrl-C during the test left a
    trained run without a summary, which `resume=` then refused (nothing left to train). Entered
    around the whole run; until `arm()` (training has ended: `GracefulInterrupt.on_train_end`, or
    fit has returned) a Ctrl-C interrupts as Python's own
    handler would, and during fit `GracefulInterrupt` holds SIGINT. A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.armed = False
        self.requested = False
        self.signal = "Ctrl-C"
        self._previous: Any = None

    def __enter__(self) -> FinishFirst:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def arm(self) -> None:
        self.armed = True

    def request(self, name: str = "Ctrl-C") -> None:
        self.requested, self.signal = True, name
        print(f"\n{name}: training has finished; the test and summary.json come first ({name} again stops at once)",
              file=sys.stderr, flush=True)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed or self.requested:
            raise KeyboardInterrupt
        self.request(_name(signum))

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
