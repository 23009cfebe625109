"""In-process `train()` runs on the real config: learning happens, artefacts are written,
resume continues where it stopped."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import FAST, have_data
from mlplab import checkpoints
from mlplab.callbacks.guards import NonFiniteLossError
from mlplab.models.mlp import ResidualBlock
from mlplab.training import train

SYNTH = ["data=synthetic", "model.hidden_sizes=[32]", *FAST]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_synthetic_learns_and_writes_artefacts(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(SYNTH)
    val_best = train(cfg)
    run = tmp_path / "run"
    s = _summary(run)
    # 3 classes: chance is 1/3. Clusters with the default separability are learnable to ~0.8+.
    assert val_best is not None and val_best > 0.7
    assert s["metrics"]["test/acc"] > 0.7
    assert s["status"] == "completed" and s["epochs"] == 3
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["hidden_sizes"] == [32]
    assert ckpt["hyper_parameters"]["class_names"] == ["0", "1", "2"]


def test_residual_blocks_train_and_their_checkpoint_rebuilds_them(make_cfg, tmp_path: Path) -> None:
    val_best = train(make_cfg([*SYNTH, "model.blocks=2"]))
    assert val_best is not None and val_best > 0.7  # 3 classes: chance is 1/3
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    loaded = checkpoints.load(path)
    assert sum(isinstance(m, ResidualBlock) for m in loaded.model.modules()) == 2
    # A checkpoint whose hyperparameters claim no blocks cannot load block weights: refused,
    # with the architecture it claims.
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["blocks"] = 0
    torch.save(ckpt, tmp_path / "noblocks.ckpt")
    with pytest.raises(checkpoints.CheckpointError, match=r"\(hidden_sizes=\[32\], norm=none, blocks=0, members=1\): net\.net\.\d+\.weight"):
        checkpoints.load(tmp_path / "noblocks.ckpt")


def test_random_labels_are_not_learnable_beyond_chance_on_held_out_data(make_cfg) -> None:
    val_best = train(make_cfg([*SYNTH, "data.kind=random_labels"]))
    assert val_best is not None and val_best < 0.5


def test_resume_continues_at_saved_epoch_and_matches_uninterrupted_run(make_cfg, tmp_path: Path) -> None:
    common = [*SYNTH, "model.dropout=0.0", "callbacks.early_stopping.patience=100"]
    train(make_cfg([*common, "trainer.max_epochs=4"], run_dir=tmp_path / "full"))
    train(make_cfg([*common, "trainer.max_epochs=2"], run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    saved = torch.load(last, weights_only=True)
    assert 0 < saved["fit_seconds"] <= _summary(tmp_path / "first")["fit_seconds"] + 0.01
    saved["fit_seconds"] = 1000.0  # so that the whole run's fit time below cannot be this call's
    torch.save(saved, last)
    train(make_cfg([*common, "trainer.max_epochs=4", f"ckpt_path={last}"], run_dir=tmp_path / "resumed"))
    full, resumed = _summary(tmp_path / "full"), _summary(tmp_path / "resumed")
    assert resumed["epochs"] == 4
    assert 1000.0 < resumed["fit_seconds"] < 1000.0 + full["fit_seconds"] * 3  # the first call's time, and this one's
    resumed_last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    full_last = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed_last["epoch"] == full_last["epoch"] == 3
    assert resumed_last["global_step"] == full_last["global_step"]
    assert resumed["metrics"]["val/loss"] == pytest.approx(full["metrics"]["val/loss"], abs=1e-6)
    assert resumed["metrics"]["test/acc"] == pytest.approx(full["metrics"]["test/acc"], abs=1e-6)


class SaveAt(ModelCheckpoint):
    """Saves `dir/mid.ckpt` after optimizer step `step`, where Ctrl-C saves (GracefulInterrupt),
    and `dir/epoch0.ckpt` where the run's own ModelCheckpoint saves at the end of epoch 0 (a
    ModelCheckpoint itself, so that Lightning runs it after the other callbacks, as that one)."""

    def __init__(self, step: int, dir: str) -> None:
        super().__init__(dirpath=dir, save_top_k=0)
        self.step, self.dir = step, Path(dir)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.dir / "mid.ckpt")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.dir / "epoch0.ckpt")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


@pytest.mark.parametrize("data", ["synthetic", "mnist"])
def test_resume_with_dropout_mixup_and_one_cycle_is_exact_mid_epoch_and_at_epoch_end(
        make_cfg, tmp_path: Path, data: str) -> None:
    # Dropout masks and mixup draw from torch's global generator (saved in the checkpoint);
    # mid-epoch, the epoch goes on from its next batch, its augmentation stream where it was,
    # and the one-cycle schedule ends exactly at its planned step.
    if data == "mnist" and not have_data("mnist"):
        pytest.skip("MNIST not provisioned (make data)")
    per_epoch = 19 if data == "synthetic" else 24  # batches of 64 (3 calls) / 3 calls of 8
    setup = (["data=synthetic", "model.hidden_sizes=[32]"] if data == "synthetic" else
             ["data=mnist", "model.hidden_sizes=[32]", "data.augment.shift=2",
              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"])
    common = [*setup, *FAST, "model.dropout=0.3", "model.mixup_alpha=0.4", "scheduler=onecycle",
              "callbacks.early_stopping.patience=100"]
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    train(make_cfg([*common, f"+callbacks.save_at._target_={__name__}.SaveAt",
                    f"+callbacks.save_at.step={per_epoch + 8}", f"+callbacks.save_at.dir={snaps}"],
                   run_dir=tmp_path / "full"))
    full = _summary(tmp_path / "full")
    assert torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * per_epoch
    for snap in ("epoch0", "mid"):
        run = tmp_path / snap
        train(make_cfg([*common, f"ckpt_path={snaps / f'{snap}.ckpt'}"], run_dir=run))
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == 3 * per_epoch, snap
        resumed = _summary(run)
        assert resumed["metrics"]["val/loss"] == pytest.approx(full["metrics"]["val/loss"], abs=1e-6), snap
        assert resumed["metrics"]["test/loss"] == pytest.approx(full["metrics"]["test/loss"], abs=1e-6), snap


class CtrlCAt(L.Callback):
    """A Ctrl-C (GracefulInterrupt's handler, as the signal would call it) as the training call
    at or after optimizer step `step` starts."""

    def __init__(self, step: int) -> None:
        self.step, self.done = step, False

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        from mlplab.callbacks.interrupt import GracefulInterrupt

        if not self.done and trainer.global_step >= self.step:
            self.done = True
            next(c for c in trainer.callbacks if isinstance(c, GracefulInterrupt))._handle(signal.SIGINT, None)


def test_a_ctrl_c_in_an_epochs_last_call_resumes_with_that_epochs_validation(make_cfg, tmp_path: Path) -> None:
    # Saved in that call, the checkpoint restored as an ended epoch: its validation, best-checkpoint
    # choice, early-stopping check and scheduler step were skipped (best epoch and test differed).
    common = [*SYNTH, "data.kind=random_labels", "optimizer.lr=0.01", "callbacks.early_stopping.patience=100",
              "scheduler=step", "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5", "report=false"]
    train(make_cfg(common, run_dir=tmp_path / "full"))
    run = tmp_path / "stopped"
    sigint = signal.getsignal(signal.SIGINT)
    try:  # 19 batches an epoch in calls of 8: epoch 1's last call starts at step 35
        with pytest.raises(SystemExit):
            train(make_cfg([*common, f"+callbacks.ctrl_c._target_={__name__}.CtrlCAt", "+callbacks.ctrl_c.step=35"],
                           run_dir=run))
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT while it shuts down
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 38)  # the end of epoch 1, after its validation
    train(make_cfg([*common, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], run_dir=run))
    full, resumed = _summary(tmp_path / "full"), _summary(run)
    assert resumed["best_epoch"] == full["best_epoch"] and resumed["epochs"] == full["epochs"] == 3
    for key in ("val/loss", "val/acc_best", "test/loss", "test/acc"):
        assert resumed["metrics"][key] == pytest.approx(full["metrics"][key], abs=1e-6), key
    assert _steps(run, "val/acc") == _steps(tmp_path / "full", "val/acc")  # every epoch validated once
    from mlplab.curves import read_scalars

    full_tags, resumed_tags = read_scalars(tmp_path / "full"), read_scalars(run)
    for tag in ("train/loss", "train/acc"):  # a whole epoch's steps each, none counted twice
        assert [p.value for p in resumed_tags[tag]] == pytest.approx([p.value for p in full_tags[tag]], abs=1e-6), tag


def test_a_ctrl_c_mid_epoch_resumes_with_that_epochs_training_metrics_whole(make_cfg, tmp_path: Path) -> None:
    # train/loss and train/acc of the resumed epoch covered only the steps after the resume.
    from mlplab.curves import read_scalars

    common = [*SYNTH, "model.dropout=0.2", "data.batches_per_call=4", "callbacks.early_stopping.patience=100",
              "report=false"]
    train(make_cfg(common, run_dir=tmp_path / "full"))
    run = tmp_path / "stopped"
    sigint = signal.getsignal(signal.SIGINT)
    try:  # epoch 1 is steps 19-37, in calls of 4: stopped after the call starting at step 23
        with pytest.raises(SystemExit):
            train(make_cfg([*common, f"+callbacks.ctrl_c._target_={__name__}.CtrlCAt", "+callbacks.ctrl_c.step=22"],
                           run_dir=run))
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 27
    train(make_cfg([*common, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], run_dir=run))
    full, resumed = read_scalars(tmp_path / "full"), read_scalars(run)
    for tag in ("train/loss", "train/acc", "val/loss"):
        assert [p.value for p in resumed[tag]] == pytest.approx([p.value for p in full[tag]], abs=1e-6), tag


def test_a_checkpoint_folder_holding_another_runs_checkpoints_is_refused(make_cfg, tmp_path: Path) -> None:
    # The second run overwrote the first one's best.ckpt, which the first one's summary still named.
    from mlplab.config import ConfigError

    shared = tmp_path / "ckpts"
    common = [*SYNTH, "report=false", f"callbacks.model_checkpoint.dirpath={shared}"]
    train(make_cfg(common, run_dir=tmp_path / "a"))
    before = (shared / "best.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=rf"^callbacks.model_checkpoint.dirpath={shared}: holds another run's "
                                          r"checkpoints \(best.ckpt, last.ckpt\)"):
        train(make_cfg([*common, "seed=7"], run_dir=tmp_path / "b"))
    assert (shared / "best.ckpt").read_bytes() == before
    # The run that continues from one of them may go on writing there.
    train(make_cfg([*common, "trainer.max_epochs=4", f"ckpt_path={shared / 'last.ckpt'}"], run_dir=tmp_path / "a"))
    assert torch.load(shared / "last.ckpt", weights_only=True)["epoch"] == 3


def test_a_resumed_run_appends_to_its_csv_metrics(make_cfg, tmp_path: Path) -> None:
    # Lightning's CSV logger deleted metrics.csv when the run went on: its earlier epochs were lost.
    import csv

    common = [*SYNTH, "logger=csv", "report=false", "callbacks.early_stopping.patience=100"]
    train(make_cfg([*common, "trainer.max_epochs=2"]))
    train(make_cfg([*common, "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"]))
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows if r.get("val/acc")] == [0, 1, 2]


def test_an_epoch_without_validation_still_writes_last(make_cfg, tmp_path: Path) -> None:
    # trainer.check_val_every_n_epoch=2: epoch 2 was saved nowhere, and resume= trained it again.
    train(make_cfg([*SYNTH, "trainer.check_val_every_n_epoch=2", "report=false"]))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 3 * 19)


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_a_resumed_call_without_validation_keeps_the_runs_validation_figures(make_cfg, tmp_path: Path,
                                                                             logger: str) -> None:
    # summary.json had val/acc_best null (and train() returned None to a sweeper).
    common = [*SYNTH, "trainer.check_val_every_n_epoch=2", f"logger={logger}", "report=false"]
    train(make_cfg([*common, "trainer.max_epochs=2"]))
    first = _summary(tmp_path / "run")["metrics"]
    assert train(make_cfg([*common, "trainer.max_epochs=3",
                           f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"])) == first["val/acc_best"]
    metrics = _summary(tmp_path / "run")["metrics"]
    assert metrics["val/acc_best"] == first["val/acc_best"]
    if logger == "tensorboard":
        assert (metrics["val/loss"], metrics["val/acc"]) == (first["val/loss"], first["val/acc"])


def test_a_plateau_schedule_steps_only_after_a_validation(make_cfg, tmp_path: Path) -> None:
    # With check_val_every_n_epoch=2 it raised at the end of epoch 0, which logs no val/loss.
    train(make_cfg([*SYNTH, "scheduler=plateau", "trainer.check_val_every_n_epoch=2", "trainer.max_epochs=5",
                    "report=false"]))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["lr_schedulers"][0]["last_epoch"]) == (4, 2)  # stepped after epochs 1 and 3


def test_a_resume_that_cannot_go_on_exactly_still_trains_whole_epochs(make_cfg, tmp_path: Path) -> None:
    common = [*SYNTH, "callbacks.early_stopping.patience=100"]  # 19 batches an epoch, calls of 8
    # Stopped by trainer.max_steps one batch into a call: the rest of that call still trains.
    train(make_cfg([*common, "+trainer.max_steps=20"], run_dir=tmp_path / "a"))
    train(make_cfg([*common, "+trainer.max_steps=100", f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}"],
                   run_dir=tmp_path / "b"))
    assert _steps(tmp_path / "b", "val/acc")[0] == 2 * 19 - 1  # epoch 1 ended after its 19th batch
    # A Ctrl-C checkpoint resumed with other batches: the epoch starts over instead of
    # skipping batches that are not the ones trained (or running Lightning's count dry).
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    train(make_cfg([*common, f"+callbacks.save_at._target_={__name__}.SaveAt", "+callbacks.save_at.step=27",
                    f"+callbacks.save_at.dir={snaps}"], run_dir=tmp_path / "c"))
    for changed in ("data.batch_size=128", "data.batches_per_call=4"):
        run = tmp_path / changed.replace("=", "_")
        train(make_cfg([*common, changed, f"ckpt_path={snaps / 'mid.ckpt'}"], run_dir=run))
        assert _summary(run)["status"] == "completed" and _summary(run)["epochs"] == 3, changed


def test_checkpoints_are_written_beside_their_final_name(make_cfg, tmp_path: Path, monkeypatch) -> None:
    # Lightning's own save goes through the system temp directory, and a move from another
    # filesystem (a tmpfs /tmp) is a copy a kill can cut short. Without a temp directory at
    # all, its save fails outright; ours never uses it.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tempdir"))
    train(make_cfg([*SYNTH, "trainer.max_epochs=2", "report=false"]))
    folder = tmp_path / "run" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left


def test_same_seed_is_identical_and_other_seed_differs(make_cfg, tmp_path: Path) -> None:
    args = [*SYNTH, "deterministic=true", "trainer.max_epochs=2"]
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train(make_cfg([*args, f"seed={seed}"], run_dir=tmp_path / name))
        runs[name] = _summary(tmp_path / name)["metrics"]
    assert _hparams_session_status(tmp_path / "a") == "STATUS_SUCCESS"
    assert runs["a"] == runs["b"]
    assert runs["a"]["val/loss"] != runs["c"]["val/loss"]


def test_non_finite_loss_stops_at_once_and_keeps_best_checkpoint(make_cfg, tmp_path: Path) -> None:
    # Epoch 0 trains at lr 0.1 and checkpoints; the schedule then multiplies lr by 1e7.
    cfg = make_cfg([*SYNTH, "optimizer=sgd", "optimizer.lr=0.1", "scheduler=step",
                    "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=1e7",
                    "trainer.max_epochs=50"])
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+, lr=1000000.0"):
        train(cfg)
    s = _summary(tmp_path / "run")
    assert s["status"] == "diverged" and s["epochs"] == 1
    assert "lower optimizer.lr" in s["error"]
    assert s["best_epoch"] == 0 and Path(s["best_checkpoint"]).is_file()
    assert s["metrics"]["test/acc"] > 0.5  # the kept checkpoint was tested
    assert _hparams_session_status(tmp_path / "run") == "STATUS_FAILURE"


def _hparams_session_status(run: Path) -> str:
    """How the run's HParams session ended, as TensorBoard's tab reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status

    events = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG]
    return Status.Name(metadata.parse_session_end_info_plugin_data(content).status)


def test_a_run_that_diverges_in_its_first_epoch_names_no_checkpoint(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"epoch 0"):
        train(make_cfg([*SYNTH, "optimizer=sgd", "optimizer.lr=1e6"]))
    s = _summary(tmp_path / "run")
    assert s["status"] == "diverged"
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert s["best_checkpoint"] is None and s["last_checkpoint"] is None


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_mnist_few_batches_learns_well_above_chance(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=8",
                    "callbacks.progress_bar.refresh_rate=0"])
    train(cfg)
    s = _summary(tmp_path / "run")
    assert s["metrics"]["test/acc"] > 0.85  # chance is 0.10
    assert s["metrics"]["val/acc"] > 0.85


def test_tensorboard_has_every_metric_and_the_penalties_separately(make_cfg, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_cfg([*SYNTH, "model.l1=1e-4", "model.l2=1e-3", "trainer.max_epochs=2"]))
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"train/loss", "train/acc", "train/l1", "train/l2", "val/loss", "val/acc",
                "val/acc_best", "test/loss", "test/acc"}
    assert expected <= tags, expected - tags
    assert len(acc.Scalars("train/loss")) == 2  # once per epoch, not per step
    l1 = acc.Scalars("train/l1")[-1].value
    assert 0 < l1 < acc.Scalars("train/loss")[-1].value


def _steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard")).Reload()
    return [e.step for e in acc.Scalars(tag)]


def _tags(run: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"]


def test_tensorboard_steps_are_optimizer_steps_whatever_the_batches_per_call(make_cfg, tmp_path: Path) -> None:
    # Several optimizer steps per training_step call (data.batches_per_call) must neither put
    # the x-axis in calls nor thin train/loss_step out to Lightning's once-per-N-calls flush.
    from mlplab.curves import read_scalars

    common = [*SYNTH, "data.batches_per_call=8", "trainer.log_every_n_steps=5",
              "callbacks.early_stopping.patience=100", "callbacks.lr_monitor.logging_interval=step"]
    train(make_cfg([*common, "trainer.max_epochs=2"], run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    per_epoch = torch.load(last, weights_only=True)["global_step"] // 2
    assert per_epoch > 8  # several calls an epoch, the last one short
    assert _steps(tmp_path / "first", "val/acc") == [per_epoch - 1, 2 * per_epoch - 1]
    assert _steps(tmp_path / "first", "train/loss") == [per_epoch - 1, 2 * per_epoch - 1]
    assert _steps(tmp_path / "first", "train/loss_step") == list(range(4, 2 * per_epoch, 5))
    # The learning rate per step: at the first step of each call holding a multiple of 5.
    calls = [(e * per_epoch + c, min(e * per_epoch + c + 8, (e + 1) * per_epoch))
             for e in range(2) for c in range(0, per_epoch, 8)]
    lr_tag = next(t for t in _tags(tmp_path / "first") if t.startswith("lr-"))
    assert _steps(tmp_path / "first", lr_tag) == [a for a, b in calls if any((s + 1) % 5 == 0 for s in range(a, b))]
    # Each step-level point is paired with its epoch, as mlplab.curves places it.
    points = read_scalars(tmp_path / "first")["train/loss_step"]
    assert [p.epoch for p in points] == [p.step // per_epoch for p in points]

    # A resumed run goes on along the same axis.
    train(make_cfg([*common, "trainer.max_epochs=3", f"ckpt_path={last}"], run_dir=tmp_path / "resumed"))
    assert _steps(tmp_path / "resumed", "val/acc") == [3 * per_epoch - 1]
    third = [s for s in range(2 * per_epoch, 3 * per_epoch) if (s + 1) % 5 == 0]
    assert _steps(tmp_path / "resumed", "train/loss_step") == third


def test_early_stopping_is_reported_and_the_report_is_written(make_cfg, tmp_path: Path) -> None:
    # min_delta 10 makes every epoch "no improvement": stops after 1 + patience epochs.
    train(make_cfg([*SYNTH, "trainer.max_epochs=10", "callbacks.early_stopping.patience=1",
                    "callbacks.early_stopping.min_delta=10"]))
    s = _summary(tmp_path / "run")
    assert s["stopped_early"] is True and s["epochs"] == 2
    assert (tmp_path / "run" / "curves.png").is_file()
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()


def test_optimized_val_loss_is_the_best_epochs_not_the_last(make_cfg, tmp_path: Path) -> None:
    # Random labels: val/loss gets worse after its best epoch, and early stopping runs on.
    returned = train(make_cfg([*SYNTH, "data.kind=random_labels", "trainer.max_epochs=8",
                               "optimized_metric=val/loss"]))
    m = _summary(tmp_path / "run")["metrics"]
    assert m["val/loss"] > m["best/val/loss"]
    assert returned == m["best/val/loss"]


def test_val_size_zero_fits_every_epoch_and_tests_the_final_checkpoint(make_cfg, tmp_path: Path) -> None:
    # With validation, this early stopping would end the run after 2 epochs (see above).
    returned = train(make_cfg([*SYNTH, "data.val_size=0", "trainer.max_epochs=4",
                               "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=10"]))
    run = tmp_path / "run"
    s = _summary(run)
    assert s["status"] == "completed" and s["epochs"] == 4 and s["validation"] is False
    assert returned is None and s["metrics"]["val/acc_best"] is None  # nothing chosen on validation
    final = run / "checkpoints" / "final.ckpt"
    assert s["best_checkpoint"] == str(final) and not (run / "checkpoints" / "best.ckpt").exists()
    assert torch.load(final, weights_only=True)["epoch"] == 3 == s["best_epoch"]
    assert s["metrics"]["test/acc"] > 0.7  # 3 classes: chance is 1/3
    assert (run / "curves.png").is_file() and (run / "confusion_matrix.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "train/acc" in acc.Tags()["scalars"] and "val/acc" not in acc.Tags()["scalars"]


@pytest.mark.parametrize("flush", [False, True])
def test_flush_denormal_is_applied_for_the_run(make_cfg, flush: bool) -> None:
    # Denormal Adam state made late epochs 2x slower on CPU (docs/speed.md); a run must
    # leave torch in the mode its config asks for.
    torch.set_flush_denormal(not flush)
    try:
        train(make_cfg([*SYNTH, "trainer.max_epochs=1", "test=false", "report=false", f"flush_denormal={flush}"]))
        kept = (torch.tensor([1e-39]) * 1.0).item()
        assert (kept == 0.0) is flush
    finally:
        torch.set_flush_denormal(True)


def test_more_threads_than_cpus_are_warned_about(make_cfg, caplog) -> None:
    import os

    before = torch.get_num_threads()
    too_many = len(os.sched_getaffinity(0)) + 1
    try:
        with caplog.at_level("WARNING"):
            train(make_cfg([*SYNTH, "trainer.max_epochs=1", "test=false", "report=false", f"torch_threads={too_many}"]))
        assert f"torch_threads={too_many}: more than the {too_many - 1} CPUs" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_a_trainer_argument_lightning_refuses_is_one_line_naming_trainer(make_cfg) -> None:
    from mlplab.config import ConfigError

    with pytest.raises(ConfigError, match=r"^trainer: `Timer\(duration='soon'\)` is not a valid duration"):
        train(make_cfg([*SYNTH, "+trainer.max_time=soon"]))


@pytest.mark.parametrize(("override", "message"), [
    ("callbacks.lr_monitor.logging_interval=hour", "callbacks.lr_monitor: logging_interval should be `step` or `epoch`"),
    ("+callbacks.model_checkpoint.every_n_train_steps=-1",
     "callbacks.model_checkpoint: Invalid value for every_n_train_steps=-1"),
])
def test_a_callback_argument_lightning_refuses_is_one_line_naming_the_callback(make_cfg, override: str,
                                                                               message: str) -> None:
    # Was Hydra's four-line InstantiationException, and a run folder with a failed summary.json.
    from mlplab.config import ConfigError

    with pytest.raises(ConfigError) as err:
        train(make_cfg([*SYNTH, override]))
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_logger_none_trains_without_the_learning_rate_monitor(make_cfg, tmp_path: Path) -> None:
    # The default callbacks include LearningRateMonitor, which Lightning refuses without a logger.
    train(make_cfg([*SYNTH, "logger=none", "trainer.max_epochs=2", "scheduler=cosine", "report=false"]))
    summary = _summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_a_run_without_tensorboard_still_gets_the_checkpoint_figures(make_cfg, tmp_path: Path, logger: str) -> None:
    train(make_cfg([*SYNTH, f"logger={logger}", "trainer.max_epochs=1"]))
    run = tmp_path / "run"
    assert (run / "confusion_matrix.png").stat().st_size > 0
    assert not (run / "curves.png").exists()  # nothing to draw it from


@pytest.mark.parametrize("precision", ["64-true", "16-true"])
def test_true_precisions_train_and_draw_every_figure(make_cfg, tmp_path: Path, precision: str, caplog) -> None:
    # The figures fed the model float32 inputs whatever its dtype: 64-true ended in a
    # traceback, and the model graph was silently missing.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(make_cfg([*SYNTH, "trainer.max_epochs=1", f"trainer.precision={precision}"]))
    assert _summary(tmp_path / "run")["metrics"]["test/acc"] > 0.5  # 3 classes
    assert "not logged" not in caplog.text
    tags: dict[str, list[str]] = {"images": [], "graph": []}
    for f in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags["images"] += acc.Tags()["images"]
        tags["graph"].append(acc.Tags()["graph"])
    assert "val/confusion_matrix" in tags["images"] and any(tags["graph"])


def test_the_summary_names_tensorboard_only_when_it_was_written(make_cfg, tmp_path: Path, capsys) -> None:
    train(make_cfg([*SYNTH, "trainer.max_epochs=1", "logger=csv"]))
    out = capsys.readouterr().out
    assert "== mlplab run summary ==" in out and "tensorboard --logdir" not in out
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_summary_without_a_best_checkpoint_points_to_the_last_one(tmp_path: Path, capsys) -> None:
    # A run stopped before any validation has no best checkpoint, only last.ckpt: the summary
    # must say where that is rather than only "none".
    from omegaconf import OmegaConf

    from mlplab.training import _print_summary

    last = str(tmp_path / "checkpoints" / "last.ckpt")
    summary = {"status": "diverged", "error": "non-finite", "epochs": 0, "stopped_early": False,
               "validation": True, "best_epoch": None, "metrics": {}, "best_checkpoint": None,
               "last_checkpoint": last, "fit_seconds": 1.0, "run_dir": str(tmp_path)}
    _print_summary(summary, OmegaConf.create({}))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("checkpoint"))
    assert line.split() == ["checkpoint", "none", "(last:", f"{last})"]
    _print_summary({**summary, "best_checkpoint": "b.ckpt"}, OmegaConf.create({}))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("checkpoint"))
    assert line.split() == ["checkpoint", "b.ckpt"]


def test_trainer_debug_runs_the_whole_path_and_draws_no_report(make_cfg, tmp_path: Path, caplog) -> None:
    # fast_dev_run turns loggers off: the report then warned "is it a run directory trained
    # with logger=tensorboard?" about a run that was.
    with caplog.at_level("WARNING"):
        train(make_cfg([*SYNTH, "trainer=debug"]))
    assert _summary(tmp_path / "run")["status"] == "completed"
    assert "report not written" not in caplog.text and not list((tmp_path / "run").glob("*.png"))


def test_the_summary_quotes_a_run_dir_with_a_space(tmp_path: Path, capsys) -> None:
    import shlex

    from omegaconf import OmegaConf

    from mlplab.training import _print_summary

    run_dir = tmp_path / "my runs" / "r"
    (run_dir / "tensorboard").mkdir(parents=True)
    _print_summary({"status": "completed", "error": None, "epochs": 1, "stopped_early": False, "validation": True,
                    "best_epoch": 0, "metrics": {}, "best_checkpoint": None, "last_checkpoint": None,
                    "fit_seconds": 1.0, "run_dir": str(run_dir)}, OmegaConf.create({}))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tensorboard"))
    assert shlex.split(line.split(None, 1)[1]) == ["tensorboard", "--logdir", str(run_dir)]  # pastes as it stands


def test_the_summary_numbers_epochs_as_the_best_epoch_does(capsys) -> None:
    # "epochs run 11" beside "best epoch 10" read as the last-but-one epoch; it is the last.
    from omegaconf import OmegaConf

    from mlplab.training import _print_summary

    summary = {"status": "completed", "error": None, "epochs": 11, "stopped_early": True, "validation": True,
               "best_epoch": 10, "metrics": {}, "best_checkpoint": "b.ckpt", "last_checkpoint": None,
               "fit_seconds": 1.0, "run_dir": "r"}
    _print_summary({**summary, "metrics": {"best/val/loss": 0.25, "val/acc_best": 0.9}}, OmegaConf.create({}))
    lines = capsys.readouterr().out.splitlines()
    assert "epochs run    11, numbered 0–10 (stopped early)" in lines
    # Chosen by val/loss; val/acc_best may be another epoch's: the line said neither.
    assert "best epoch    10 (by val/loss 0.2500)  val/acc_best 0.9000 (highest of any epoch)" in lines
    _print_summary({**summary, "epochs": 1, "stopped_early": False, "best_epoch": 0}, OmegaConf.create({}))
    assert "epochs run    1 (epoch 0)" in capsys.readouterr().out.splitlines()
    _print_summary({**summary, "epochs": 0, "stopped_early": False, "best_epoch": None}, OmegaConf.create({}))
    assert "epochs run    0" in capsys.readouterr().out.splitlines()


def test_lightnings_adverts_are_dropped_and_its_information_kept(make_cfg, caplog) -> None:
    # Lightning 2.6 prints a "💡 Tip" for its cloud logger on every run (and one for its model
    # registry when checkpointing), and a note that our ModelSummary replaces its default one.
    with caplog.at_level("INFO"):
        train(make_cfg([*SYNTH, "trainer.max_epochs=1"]))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("GPU available:") for m in messages)
    assert not [m for m in messages if "Tip:" in m or "already configured with model summary" in m]
