"""`mlplab.curves`: reading scalars back from TensorBoard event files, mapping them to epochs,
labelling runs, replaying early stopping, and the CLI's PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mlplab import curves
from mlplab.training import train

SYNTH = ["data=synthetic", "data.n_samples=1000", "data.val_size=200", "data.test_size=200",
         "model.hidden_sizes=[16]", "trainer=cpu", "callbacks.progress_bar.refresh_rate=0",
         "torch_threads=1"]


def _write_run(run: Path, points: list[tuple[int, int, dict[str, float]]],
               overrides: list[str] | None = None) -> None:
    """Events the way Lightning writes them: each call's metrics, then `epoch`, at one step."""
    writer = SummaryWriter(str(run / "tensorboard"))
    for step, epoch, metrics in points:
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        writer.add_scalar("epoch", epoch, step)
    writer.close()
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))


def test_scalars_map_to_epochs_even_where_two_epochs_share_a_step(tmp_path: Path) -> None:
    # Epoch 0 ends at step 9 and epoch 1's first step-level value is also at step 9: the
    # step alone cannot say which epoch each belongs to.
    _write_run(tmp_path, [
        (4, 0, {"train/loss_step": 2.0}),
        (9, 0, {"val/loss": 1.5, "val/acc": 0.4}),
        (9, 1, {"train/loss_step": 1.2}),
        (14, 1, {"train/loss_step": 1.0}),
        (19, 1, {"val/loss": 1.25, "val/acc": 0.5}),
    ])
    scalars = curves.read_scalars(tmp_path)
    assert [(p.step, p.epoch, p.value) for p in scalars["val/loss"]] == [(9, 0, 1.5), (19, 1, 1.25)]
    assert curves.epoch_axis(scalars["val/acc"]) == [1.0, 2.0]
    step_level = scalars["train/loss_step"]
    assert [p.epoch for p in step_level] == [0, 1, 1]
    assert curves.epoch_axis(step_level) == [1.0, 1.5, 2.0]
    assert "epoch" not in scalars


def test_a_metric_logged_without_its_epoch_is_placed_by_its_step_between_epoch_ends(tmp_path: Path) -> None:
    # The learning rate monitor logs no `epoch`: its points sat at x = step (0, 10, 20) on an
    # axis labelled "epoch", beside val/loss at 1 and 2.
    _write_run(tmp_path, [(9, 0, {"val/loss": 1.5}), (19, 1, {"val/loss": 1.25})])
    writer = SummaryWriter(str(tmp_path / "tensorboard"), filename_suffix=".lr")
    for step, lr in ((0, 0.1), (10, 0.05), (24, 0.01)):
        writer.add_scalar("lr-SGD", lr, step)
    writer.close()
    loaded = curves.load_curves([tmp_path], ["val/loss", "lr-SGD"])
    assert loaded["val/loss"][0].x == [1.0, 2.0]
    assert loaded["lr-SGD"][0].x == pytest.approx([0.0, 1.1, 2.5])  # past the last end: at its pace


def test_a_value_written_again_at_the_same_step_keeps_the_later_write(tmp_path: Path) -> None:
    _write_run(tmp_path, [(9, 0, {"val/loss": 1.5}), (19, 1, {"val/loss": 1.4})])
    # A resumed run that re-ran epoch 1 appends a second event file.
    writer = SummaryWriter(str(tmp_path / "tensorboard"), filename_suffix=".resumed")
    writer.add_scalar("val/loss", 1.3, 19)
    writer.add_scalar("epoch", 1, 19)
    writer.close()
    assert [p.value for p in curves.read_scalars(tmp_path)["val/loss"]] == pytest.approx([1.5, 1.3])


def test_sweep_jobs_are_found_in_natural_order_and_named_by_their_setting(tmp_path: Path) -> None:
    names = ["gd", "sgd1", "sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam",
             "extra1", "extra2", "extra3"]
    for i, name in enumerate(names):
        _write_run(tmp_path / str(i), [(0, 0, {"val/loss": float(i)})],
                   [f"experiment=notes_optimizers_{name}"])
    (tmp_path / "leaderboard.md").write_text("not a run")
    runs = curves.find_runs([tmp_path])
    assert [r.name for r in runs] == [str(i) for i in range(len(names))]
    assert curves.run_labels(runs) == names


def test_labels_fall_back_to_paths_and_name_only_what_differs(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _write_run(a, [(0, 0, {"val/loss": 1.0})], ["seed=1", "optimizer=sgd"])
    _write_run(b, [(0, 0, {"val/loss": 1.0})], ["seed=1", "optimizer=sgd"])
    assert curves.run_labels([a, b]) == ["a/run", "b/run"]
    _write_run(b, [(0, 0, {"val/loss": 1.0})], ["seed=2", "optimizer=sgd", "model.l2=0.1"])
    # Keys in sorted order; one a run did not override is left out of its label.
    assert curves.run_labels([a, b]) == ["seed=1", "model.l2=0.1 seed=2"]
    # The same command run twice beside another: the twins shared a label, a colour and a legend entry.
    c = tmp_path / "c" / "run"
    _write_run(c, [(0, 0, {"val/loss": 1.0})], ["seed=1", "optimizer=sgd"])
    assert curves.run_labels([a, b, c]) == ["seed=1 (a/run)", "model.l2=0.1 seed=2", "seed=1 (c/run)"]
    # Two sweeps of the same grid: every run had a twin, and none was told apart.
    d = tmp_path / "d" / "run"
    _write_run(d, [(0, 0, {"val/loss": 1.0})], ["seed=2", "optimizer=sgd", "model.l2=0.1"])
    assert curves.run_labels([a, b, c, d]) == ["seed=1 (a/run)", "model.l2=0.1 seed=2 (b/run)", "seed=1 (c/run)",
                                               "model.l2=0.1 seed=2 (d/run)"]


def test_patience_is_replayed_in_epochs_when_validation_skips_epochs() -> None:
    # trainer.check_val_every_n_epoch=2: "would stop after epoch 4 of 5" for a run of 10 epochs.
    c = curves.Curve(Path("run"), "run", "val/loss", [2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 1.1, 1.2, 1.3, 1.4])
    assert "would stop after epoch 8 of 10" in curves.table({"val/loss": [c]}, 3)


def test_test_metrics_sit_at_the_last_epoch(tmp_path: Path) -> None:
    # Logged after the fit at the count of epochs run, they were drawn one epoch past the end.
    _write_run(tmp_path / "r", [(10, 0, {"val/loss": 1.0}), (20, 1, {"val/loss": 0.9}), (20, 2, {"test/acc": 0.8})])
    loaded = curves.load_curves([tmp_path / "r"], ["val/loss", "test/acc"])
    assert loaded["val/loss"][0].x == [1.0, 2.0] and loaded["test/acc"][0].x == [2.0]


@pytest.mark.parametrize(("values", "patience", "mode", "expected"), [
    ([1.0, 0.9, 0.95, 0.96, 0.97, 0.5], 3, "min", 5),   # 3 checks without a new best
    ([1.0, 0.9, 0.95, 0.8, 0.85, 0.86], 3, "min", None),  # the count restarts at each best
    ([1.0, 1.0, 1.0], 2, "min", 3),                      # equal is not an improvement
    ([0.5, 0.6, 0.55], 1, "max", 3),
    ([1.0, float("nan"), 0.5], 3, "min", 2),             # check_finite: a NaN stops at once
])
def test_early_stop_epoch_follows_lightnings_rule(values: list[float], patience: int, mode: str,
                                                  expected: int | None) -> None:
    assert curves.early_stop_epoch(values, patience, mode) == expected


def test_two_real_runs_read_back_as_logged_and_plot_to_a_png(make_cfg, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Logged twice, to TensorBoard and CSV: the CSV is the independent record to compare with.
    for name, lr in (("slow", "0.003"), ("fast", "0.03")):
        train(make_cfg([*SYNTH, "logger=[tensorboard,csv]", "trainer.max_epochs=4", "optimizer=sgd",
                        f"optimizer.lr={lr}"], run_dir=tmp_path / name))
    runs = [tmp_path / "slow", tmp_path / "fast"]
    loaded = curves.load_curves(runs, ["val/loss", "val/acc"], labels=["slow", "fast"])
    for run, c_loss, c_acc in zip(runs, loaded["val/loss"], loaded["val/acc"], strict=True):
        rows = [r for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("val/loss")]
        assert [float(r["val/loss"]) for r in rows] == pytest.approx(c_loss.values, rel=1e-6)
        assert [float(r["val/acc"]) for r in rows] == pytest.approx(c_acc.values, rel=1e-6)
        assert c_loss.x == [1.0, 2.0, 3.0, 4.0]
        summary = json.loads((run / "summary.json").read_text())
        assert c_loss.last == pytest.approx(summary["metrics"]["val/loss"], rel=1e-6)

    out = tmp_path / "docs" / "curves.png"
    assert curves.main([str(r) for r in runs] + ["--metric", "val/loss", "--metric", "val/acc",
                                                   "--out", str(out), "--patience", "3"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 200
        img.verify()
    printed = capsys.readouterr().out
    assert "val/loss" in printed and "early stopping (patience 3 on val/loss)" in printed


def test_cli_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "run", [(0, 0, {"val/loss": 1.0})])
    out = tmp_path / "x.png"
    assert curves.main([str(tmp_path / "run"), "--metric", "val/lss", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "val/lss" in err and "val/loss" in err and len(err.strip().splitlines()) == 1
    assert curves.main([str(tmp_path / "run"), "--out", str(out), "--patience", "2", "--patience-metric", "val/lss"]) == 1
    assert "--patience-metric val/lss: logged by none" in capsys.readouterr().err  # it said --metric
    assert curves.main([str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert not out.exists()
    # --out is checked before anything is read: a directory named a temp file in its error.
    for bad, why in ((tmp_path, "is a directory"), (tmp_path / "x.txt", "cannot save a figure as '.txt'")):
        with pytest.raises(SystemExit) as exit_:
            curves.main([str(tmp_path / "run"), "--metric", "val/loss", "--out", str(bad)])
        assert exit_.value.code == 2 and f"--out={bad}: {why}" in capsys.readouterr().err


def test_the_out_suffix_picks_the_format(tmp_path: Path) -> None:
    # A .pdf name used to hold PNG bytes.
    _write_run(tmp_path / "run", [(0, 0, {"val/loss": 1.0}), (1, 1, {"val/loss": 0.5})])
    out = tmp_path / "curves.pdf"
    assert curves.main([str(tmp_path / "run"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF")
