"""The entry point as a user runs it: its own process (forked, see forkserver.py), real signals sent to a
fresh interpreter, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, ROOT, have_data
from forkserver import run_python

QUIET = ["callbacks.progress_bar.refresh_rate=0", "trainer=cpu"]
SYNTH = ["data=synthetic", "model.hidden_sizes=[32]", *QUIET]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPLAB_DATA_DIR": str(DATA)}
    return run_python(["src/train.py", *args], env=env, timeout=600, **kw)


def popen(args: list[str], sigint_ignored: bool = False) -> subprocess.Popen:
    """`sigint_ignored`: as a script's background job starts (`python … &`): Ctrl-C cannot reach it."""
    env = {**os.environ, "MLPLAB_DATA_DIR": str(DATA)}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "src/train.py", *args], cwd=ROOT, env=env, preexec_fn=ignore,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.skipif(not have_data("fashion"), reason="Fashion-MNIST not provisioned (make data)")
def test_issue_command_adam_on_fashion(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run(["optimizer=adam", "data=fashion", "trainer.max_epochs=1", f"hydra.run.dir={out}", *QUIET])
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary(out)
    assert s["metrics"]["test/acc"] > 0.75  # 10 classes: chance is 0.10
    assert "== mlplab run summary ==" in r.stdout and f"tensorboard --logdir {out}" in r.stdout
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "train.log").is_file()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dropout=1.5", "error: model.dropout=1.5: expected a value in [0, 1)"),
        ("model.activation=[relu,tanh,relu]", "a per-layer list needs 1 entry (one per hidden layer)"),
        ("optimizer.lr=fast", "error: optimizer.lr='fast': expected a float"),
        ("data.n_classes=1", "error: data.n_classes=1: expected an integer ≥ 2"),
        # Issue 5's example. Lightning's own refusal came as five lines after the run dir was made.
        pytest.param("trainer=gpu", "error: trainer.accelerator='gpu': no such device on this machine",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ],
)
def test_bad_value_exits_1_with_one_line_and_no_run_dir(tmp_path: Path, override: str, message: str) -> None:
    out = tmp_path / "run"
    r = run([*SYNTH, override, f"hydra.run.dir={out}"])
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_misspelt_key_names_the_close_match(tmp_path: Path) -> None:
    # Hydra's own message took six lines and suggested `+model.dropuot=0.2`.
    r = run([*SYNTH, "model.dropuot=0.2", f"hydra.run.dir={tmp_path / 'run'}"])
    assert _one_error(r) == "error: model.dropuot=0.2: not a config key; did you mean model.dropout?"
    assert not (tmp_path / "run").exists()
    # In the saved config of a resumed run too.
    out = tmp_path / "done"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([f"resume={out}", "optimizer.lrr=0.1"])
    assert _one_error(r) == "error: optimizer.lrr=0.1: not a config key; did you mean optimizer.lr?"
    assert _files(out) == before
    # A key added with `+` may be set again: Hydra places it.
    r = run([*SYNTH, "+trainer.max_time=null", "trainer.max_time=null", "trainer.max_epochs=1",
             f"hydra.run.dir={tmp_path / 'added'}"])
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_argument_the_config_leaves_out_is_named_with_its_plus_form(tmp_path: Path) -> None:
    # "not a config key" read as "not supported" for real constructor arguments.
    cases = {
        "optimizer.amsgrad=true": "Adam takes it, added with +: +optimizer.amsgrad=true",
        "scheduler.frequency=2": "Lightning's scheduler entry takes it, added with +: +scheduler.frequency=2",
        "callbacks.early_stopping.verbose=true": "EarlyStopping takes it, added with +: "
                                                 "+callbacks.early_stopping.verbose=true",
    }
    for override, advice in cases.items():
        r = run([*SYNTH, "scheduler=cosine", override, f"hydra.run.dir={tmp_path / 'run'}"])
        group = override.split(".")[0]
        assert _one_error(r) == f"error: {override}: not set in conf/{group}; {advice}"
    assert not (tmp_path / "run").exists()
    # The advice works, and a typo still gets the close match.
    r = run([*SYNTH, "+optimizer.amsgrad=true", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'ok'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert _one_error(run([*SYNTH, "optimizer.amsgard=true"])) == "error: optimizer.amsgard=true: not a config key"


def test_an_option_that_does_not_exist_names_the_options(tmp_path: Path) -> None:
    # Hydra's own message ended with its search path.
    for args in ([*SYNTH, "optimizer=adamm"], ["-m", *SYNTH, "optimizer=adam,adamm", f"hydra.sweep.dir={tmp_path / 'sweep'}"]):
        r = run([*args, f"hydra.run.dir={tmp_path / 'run'}"])
        assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
        assert _one_error(r) == ("error: " + ("sweep not started: " if "-m" in args else "") +
            "optimizer=adamm: not an option of optimizer: adadelta, adagrad, adam, adamw, momentum, "
            "rmsprop, sgd; did you mean optimizer=adam?")


def test_several_values_without_multirun_say_to_add_m(tmp_path: Path) -> None:
    # Hydra's own message took five lines; the grid-search commands are copied without -m.
    r = run([*SYNTH, "optimizer.lr=1e-3,1e-2", f"hydra.run.dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
    assert _one_error(r) == ("error: optimizer.lr=1e-3,1e-2: several values are a sweep; add -m to run one job "
                             "each (python src/train.py -m …), or write a list as [a,b]")


def test_a_hydra_option_that_does_not_exist_names_the_options(tmp_path: Path) -> None:
    # Hydra's groups are not folders of conf/: its own message took 12 lines, search path and all.
    r = run(["-m", *SYNTH, "hydra/launcher=joblb", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert not (tmp_path / "sweep").exists()
    assert _one_error(r) == ("error: sweep not started: hydra/launcher=joblb: not an option of hydra/launcher: "
                             "basic, joblib, submitit_local, submitit_slurm; did you mean hydra/launcher=joblib?")
    from mlplab.cli import unknown_overrides

    assert unknown_overrides(["train.py", "hydra/sweeper=optuna", "hydra/launcher=joblib"], ROOT / "conf",
                             "train") == []


def test_a_trainer_key_that_is_a_model_setting_here_points_to_it(tmp_path: Path) -> None:
    r = run([*SYNTH, "trainer.gradient_clip_val=1.0", f"hydra.run.dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
    assert _one_error(r) == ("error: trainer.gradient_clip_val=1.0: not a config key: clipping is "
                             "a model setting here: use model.gradient_clip_val")
    # It advised +trainer.enable_checkpointing=false, which train() then silently overrode.
    from mlplab.cli import unknown_overrides

    assert unknown_overrides(["train.py", "trainer.enable_checkpointing=false"], ROOT / "conf", "train") == [
        "trainer.enable_checkpointing=false: not a config key: checkpointing follows callbacks.model_checkpoint "
        "(=null: no checkpoints)"]


def test_resume_shorthand_continues_in_the_same_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=2", f"hydra.run.dir={out}"]).returncode == 0
    events_before = set((out / "tensorboard").glob("events.out.tfevents.*"))
    r = run([f"resume={out}", "trainer.max_epochs=4"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(out)["epochs"] == 4
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    assert events_before < set((out / "tensorboard").glob("events.out.tfevents.*"))  # appended
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_last_checkpoint_follows_every_epoch_not_only_improving_ones(tmp_path: Path) -> None:
    # Random labels: validation stops improving early, and Lightning 2.6's own ModelCheckpoint
    # then left last.ckpt at the best epoch, so a resume repeated the epochs after it.
    out = tmp_path / "run"
    r = run([*SYNTH, "data.kind=random_labels", "trainer.max_epochs=8", f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    epochs, best = summary(out)["epochs"], summary(out)["best_epoch"]
    assert best < epochs - 1  # the run went on past its best epoch
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epochs - 1
    assert torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == best
    r = run([f"resume={out}", f"trainer.max_epochs={epochs + 1}", "callbacks.early_stopping.patience=100"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epochs


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "train.log"}


def test_a_new_run_never_writes_into_a_directory_holding_another(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([*SYNTH, "trainer.max_epochs=2", "seed=7", f"hydra.run.dir={out}"])
    assert r.returncode == 1 and "holds another run already" in r.stderr and "Traceback" not in r.stderr
    assert _files(out) == before  # config, checkpoints, summary, events: all the first run's
    notes = tmp_path / "notes"  # not a run: it was called one
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    r = run([*SYNTH, f"hydra.run.dir={notes}"])
    assert _one_error(r) == f"error: hydra.run.dir={notes}: holds other files already; choose another directory"
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("script", ["eval", "predict"])
def test_eval_and_predict_never_write_into_a_training_run(tmp_path: Path, script: str) -> None:
    # They replaced the run's .hydra/ with their own config: the run could no longer be resumed.
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((4, 20), dtype=np.float32))
    args = [f"ckpt_path={out}/checkpoints/best.ckpt", f"hydra.run.dir={out}"]
    if script == "predict":
        args.append(f"inputs={inputs}")
    r = run_python([f"src/{script}.py", *args], timeout=300)
    assert r.returncode == 1 and "holds another run already" in r.stderr and "Traceback" not in r.stderr
    assert _files(out) == before


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_default_directory_taken_in_the_same_second_gets_a_suffix(tmp_path: Path, mode: str) -> None:
    # Three runs started together (a shell loop with `&`) share one timestamp; each gets its own.
    from omegaconf import OmegaConf

    from mlplab.cli import RunDirGuard

    taken = tmp_path / "runs" / "12-00-00"
    dirs = []
    for _ in range(3):
        cfg = OmegaConf.create({"hydra": {mode: {"dir": str(taken)}, "overrides": {"hydra": []}}, "ckpt_path": None})
        getattr(RunDirGuard(), f"on_{'multi' if mode == 'sweep' else ''}run_start")(cfg)
        dirs.append(cfg.hydra[mode].dir)
    assert dirs == [str(taken), f"{taken}-2", f"{taken}-3"] and all(Path(d).is_dir() for d in dirs)


def test_a_reused_sweep_dir_is_refused_before_any_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *SYNTH, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert run(args).returncode == 0
    before = _files(sweep)
    r = run(args)
    assert r.returncode == 1 and "holds another sweep's jobs already (2: 0, 1)" in r.stderr
    assert _files(sweep) == before
    # Each kind of directory named as what it holds (a run was "another sweep's jobs (1: .)",
    # a sweep "another run").
    r = run([*SYNTH, f"hydra.run.dir={sweep}"])
    assert r.returncode == 1 and f"error: hydra.run.dir={sweep}: holds other runs already;" in r.stderr
    single = sweep / "0"
    r = run([*args[:-1], f"hydra.sweep.dir={single}"])
    assert r.returncode == 1 and f"error: hydra.sweep.dir={single}: holds a run already, which this sweep" in r.stderr
    assert _files(sweep) == before


def test_a_failed_resume_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=2", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([f"resume={out}", "trainer.max_epochs=4", "model.dropout=1.5"])  # a typo'd value
    assert r.returncode == 1 and "model.dropout=1.5" in r.stderr and "Traceback" not in r.stderr
    assert _files(out) == before  # summary still `completed`, config still dropout 0.1
    assert "refused: ConfigError: model.dropout=1.5" in (out / "train.log").read_text()
    r = run([f"resume={out}", "scheduler=cosine"])  # a group cannot be switched: one line
    assert r.returncode == 1 and "would switch the config group 'scheduler'" in r.stderr
    assert _files(out) == before
    # It trained into the other directory, as ckpt_path= does.
    r = run([f"resume={out}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path / 'other'}"])
    assert r.returncode == 1 and "hydra.run.dir cannot be given with it" in r.stderr
    assert _files(out) == before and not (tmp_path / "other").exists()


def test_resume_keeps_the_overrides_that_made_the_run(tmp_path: Path) -> None:
    # overrides.yaml reproduces the run and names its leaderboard row: not `ckpt_path=...`.
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=2", "optimizer.lr=0.01", f"hydra.run.dir={out}"]).returncode == 0
    r = run([f"resume={out}", "trainer.max_epochs=3"])
    assert r.returncode == 0, r.stderr[-2000:]
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer.lr=0.01" in overrides and "trainer.max_epochs=3" in overrides
    assert "trainer.max_epochs=2" not in overrides and "ckpt_path" not in overrides


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_resume_cannot_change_the_length_of_a_sized_schedule(tmp_path: Path, scheduler: str) -> None:
    # OneCycleLR restored with its old total_steps raised mid-epoch ("Tried to step 39 times");
    # cosine restored with its old T_max warmed the learning rate up again.
    out = tmp_path / "run"
    assert run([*SYNTH, f"scheduler={scheduler}", "trainer.max_epochs=2", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([f"resume={out}", "trainer.max_epochs=4"])
    assert r.returncode == 1 and "cannot change the length of its schedule" in r.stderr
    assert "Traceback" not in r.stderr and _files(out) == before


def test_a_refused_ckpt_path_resume_leaves_no_new_run_and_the_old_one_as_it_was(tmp_path: Path) -> None:
    # Refused only once Lightning has restored the checkpoint: a new directory was left with a
    # copied best.ckpt and a `failed` summary, and in place the finished run became `failed`
    # with the refused command's config.
    out, new = tmp_path / "run", tmp_path / "new"
    args = [*SYNTH, "scheduler=onecycle"]
    assert run([*args, "trainer.max_epochs=2", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    for target in (new, out):
        r = run([*args, "trainer.max_epochs=4", f"ckpt_path={out}/checkpoints/last.ckpt", f"hydra.run.dir={target}"])
        assert r.returncode == 1 and "cannot change the length of its schedule" in r.stderr
        assert "Traceback" not in r.stderr
        assert not new.exists() and _files(out) == before


def test_a_resume_with_nothing_left_to_train_is_refused_and_the_run_kept(tmp_path: Path) -> None:
    # Lightning returned at once, and testing again rewrote summary.json without its
    # validation figures (val/acc_best null: a sweep's leaderboard lost the run's score).
    out, steps = tmp_path / "run", tmp_path / "steps"
    assert run([*SYNTH, "trainer.max_epochs=2", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([f"resume={out}"])
    assert r.returncode == 1 and "nothing to train, the run already reached trainer.max_epochs=2" in r.stderr
    assert "Traceback" not in r.stderr and _files(out) == before
    # Named as typed, and refused before the Trainer is built (its device lines came first).
    assert f"error: resume={out.resolve()}: nothing to train" in r.stderr
    assert "GPU available" not in r.stderr + r.stdout and "Restoring states" not in r.stderr + r.stdout
    assert f"resume={out.resolve()}: nothing to train" in (out / "train.log").read_text()
    # ckpt_path= into a new directory: named as typed, and no directory left.
    new = tmp_path / "new"
    r = run([*SYNTH, "trainer.max_epochs=2", f"ckpt_path={out}/checkpoints/last.ckpt", f"hydra.run.dir={new}"])
    assert r.returncode == 1 and f"error: ckpt_path={out}/checkpoints/last.ckpt: nothing to train" in r.stderr
    assert not new.exists() and _files(out) == before
    # Ends inside epoch 0, before its validation: Lightning's early stopping raised for the
    # missing val/loss.
    r = run([*SYNTH, "trainer.max_epochs=3", "+trainer.max_steps=5", f"hydra.run.dir={steps}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(steps / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    r = run([f"resume={steps}", "trainer.max_epochs=5"])
    assert r.returncode == 1 and "already reached trainer.max_steps=5; give a larger trainer.max_steps" in r.stderr
    assert "Restoring states" not in r.stdout + r.stderr  # refused before the Trainer was built


def test_a_run_early_stopping_ended_is_refused_unless_given_more_patience(tmp_path: Path) -> None:
    # Its patience used up, the resume trained one more epoch and stopped again, rewriting the run.
    out = tmp_path / "run"
    args = [*SYNTH, "data.kind=random_labels", "optimizer.lr=0.01", "trainer.max_epochs=30",
            "callbacks.early_stopping.patience=1", f"hydra.run.dir={out}"]
    assert run(args).returncode == 0 and summary(out)["stopped_early"]
    before, epochs = _files(out), summary(out)["epochs"]
    assert _one_error(run([f"resume={out}"])) == (
        f"error: resume={out.resolve()}: nothing to train, early stopping ended the run (val/loss had not improved "
        "for 1 validation); give a larger callbacks.early_stopping.patience to continue it")
    assert _files(out) == before
    r = run([f"resume={out}", "callbacks.early_stopping.patience=3"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(out)["epochs"] > epochs


def test_a_finished_run_validated_every_other_epoch_is_refused_and_kept(tmp_path: Path) -> None:
    # Its last.ckpt was saved at the last validation, before the epoch was counted: the resume
    # was let through, trained nothing, and rewrote the summary (failed), config and last.ckpt.
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    assert _one_error(run([f"resume={out}"])).startswith(
        f"error: resume={out.resolve()}: nothing to train, the run already reached trainer.max_epochs=2")
    assert _files(out) == before


def test_ctrl_c_in_a_resume_drops_the_summary_of_the_call_before(tmp_path: Path) -> None:
    # The old summary named the previous call's figures as the run's, though its best.ckpt
    # may since have been replaced; a sweep's leaderboard showed it as completed.
    out = tmp_path / "run"
    args = [*SYNTH, "data.n_samples=400000", "data.val_size=1000", "data.test_size=1000"]
    assert run([*args, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    assert summary(out)["status"] == "completed"
    events = len(list((out / "tensorboard").glob("events.out.tfevents.*")))
    proc = popen([f"resume={out}", "trainer.max_epochs=3"])
    _wait_for(lambda: len(list((out / "tensorboard").glob("events.out.tfevents.*"))) > events, proc)
    time.sleep(2.0)  # inside the resumed epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Resume with" in err
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not (out / "summary.json").exists()
    assert "trainer.max_epochs=3" in (out / ".hydra" / "overrides.yaml").read_text()


def test_ckpt_path_into_a_new_directory_keeps_the_best_checkpoint_so_far(tmp_path: Path) -> None:
    # Random labels at a high lr: validation loss is best early, then only rises. Lightning
    # forgot the best score in a new directory, so a later, worse epoch was kept and tested.
    args = [*QUIET, "data=synthetic", "data.kind=random_labels", "model.hidden_sizes=[128]", "model.dropout=0.0",
            "optimizer.lr=0.01", "callbacks.early_stopping.patience=20", "report=false"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert run([*args, "trainer.max_epochs=4", f"hydra.run.dir={first}"]).returncode == 0
    r = run([*args, "trainer.max_epochs=8", f"ckpt_path={first}/checkpoints/last.ckpt", f"hydra.run.dir={second}"])
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = summary(first), summary(second)
    assert b["epochs"] == 8 and b["best_epoch"] == a["best_epoch"] < 3
    assert b["metrics"]["best/val/loss"] == a["metrics"]["best/val/loss"]
    assert b["metrics"]["test/acc"] == a["metrics"]["test/acc"]  # the same checkpoint tested
    assert (first / "checkpoints" / "best.ckpt").is_file()  # copied, not moved


def test_resume_refuses_a_changed_optimizer_and_applies_a_new_patience(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # min_delta 10: no epoch improves, so patience 1 stops after 2 epochs.
    assert run([*SYNTH, "trainer.max_epochs=10", "callbacks.early_stopping.patience=1",
                "callbacks.early_stopping.min_delta=10", f"hydra.run.dir={out}"]).returncode == 0
    assert summary(out)["epochs"] == 2 and summary(out)["stopped_early"]
    before = _files(out)
    r = run([f"resume={out}", "optimizer.lr=0.5"])  # restored optimizer state would override it
    assert r.returncode == 1 and "optimizer.lr=0.5 here, 0.001 in the checkpoint" in r.stderr
    assert _files(out) == before
    # A whole group is named by its class (its config dict was printed).
    r = run([*SYNTH, "scheduler=cosine", "trainer.max_epochs=10", f"ckpt_path={out}/checkpoints/last.ckpt",
             f"hydra.run.dir={tmp_path / 'new'}"])
    assert r.returncode == 1 and ": scheduler: CosineAnnealingLR here, none in the checkpoint; a resumed run" in r.stderr
    assert not (tmp_path / "new").exists() and _files(out) == before
    # Another monitored metric started early stopping and the best checkpoint afresh, while
    # best.ckpt had been chosen by the old one.
    r = run([f"resume={out}", "trainer.max_epochs=5", "callbacks.early_stopping.monitor=val/acc",
             "callbacks.early_stopping.mode=max"])
    assert _one_error(r) == (f"error: resume={out}: callbacks.early_stopping monitors val/acc (max) here, val/loss "
                             "(min) in the checkpoint; a resumed run keeps the metric it was judged by (start a new "
                             "run to change it)")
    assert _files(out) == before
    r = run([f"resume={out}", "trainer.max_epochs=5", "callbacks.early_stopping.patience=100"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(out)["epochs"] == 5  # Lightning restored patience 1 and stopped at once
    assert not summary(out)["stopped_early"]  # it ran to max_epochs: the old stop is history


def test_resume_keeps_interpolations_in_the_runs_overrides_verbatim(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=2", "callbacks.early_stopping.patience=${trainer.max_epochs}",
                f"hydra.run.dir={out}"]).returncode == 0
    r = run([f"resume={out}", "trainer.max_epochs=3"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "callbacks.early_stopping.patience=${trainer.max_epochs}" in (out / ".hydra" / "overrides.yaml").read_text()


def test_resume_of_a_non_run_directory_is_refused(tmp_path: Path) -> None:
    r = run([f"resume={tmp_path}"])
    assert r.returncode == 1 and "not a run directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("model: [unclosed", ".hydra/config.yaml is unreadable (expected ',' or ']', but got '<stream end>' at line 2)"),
    ("", ".hydra/config.yaml is damaged: it has no model section"),  # blamed the keys given with it
    ("- a", ".hydra/config.yaml is damaged: it has no model section"),  # Hydra's 3 lines
])
def test_resume_of_a_run_with_a_damaged_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    fake = tmp_path / "run"
    (fake / ".hydra").mkdir(parents=True)
    (fake / "checkpoints").mkdir()
    (fake / "checkpoints" / "last.ckpt").write_bytes(b"kept")
    (fake / ".hydra" / "config.yaml").write_text(text + "\n")
    assert _one_error(run([f"resume={fake}", "trainer.max_epochs=5"])) == f"error: resume={fake}: {message}"
    assert (fake / "checkpoints" / "last.ckpt").read_bytes() == b"kept"


def test_a_run_being_trained_cannot_be_resumed_by_another_process(tmp_path: Path) -> None:
    # Two resume= of one run both trained: one crashed replacing the other's last.ckpt, and the
    # run's curves held an epoch twice.
    from mlplab import runlock

    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    runlock.hold(out)  # as the training process does, for as long as it trains
    before = _files(out)
    try:
        assert _one_error(run([f"resume={out}", "trainer.max_epochs=2"])) == (
            f"error: resume={out}: is being trained by another process (pid {os.getpid()}); wait for it to end, "
            f"or continue from its last checkpoint in a new folder: ckpt_path={out / 'checkpoints' / 'last.ckpt'}")
        assert _files(out) == before
        # In place with ckpt_path=: Hydra rewrote the run's config before the lock was tried.
        last = out / "checkpoints" / "last.ckpt"
        assert _one_error(run([*SYNTH, "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={out}"])) == (
            f"error: ckpt_path={last}: is being trained by another process (pid {os.getpid()}); wait for it to "
            f"end, or continue from its last checkpoint in a new folder: ckpt_path={last}")
        assert _files(out) == before
    finally:
        runlock.release(out)
    # A run from before run.lock existed: a refused resume leaves none behind.
    (out / ".hydra" / "run.lock").unlink()
    before = _files(out)
    for args in ([f"resume={out}"], [f"resume={out}", "optimizer.lrr=1"], [f"resume={out}", "optimizer=sgd"]):
        assert run(args).returncode == 1 and _files(out) == before, args
    assert run([f"resume={out}", "trainer.max_epochs=2"]).returncode == 0  # a lock goes with its process


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_sigint_finishes_the_step_saves_last_and_exits_nonzero(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = popen([*SYNTH, "data.n_samples=400000", "data.val_size=1000", "data.test_size=1000",
                  "trainer.max_epochs=20", f"hydra.run.dir={out}"])
    _wait_for(lambda: (out / "tensorboard").is_dir(), proc)
    time.sleep(2.0)  # well inside epoch 0
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"Resume with: python src/train.py resume={out}" in err
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] > 0 and last["epoch"] == 0
    assert not list(out.rglob("*.tmp")) and not (out / "summary.json").exists()
    # Interrupted again while resumed: the run's overrides survive (Lightning exits through
    # SystemExit, past the success path that used to merge them).
    proc = popen([f"resume={out}", "callbacks.early_stopping.patience=30"])
    _wait_for(lambda: len(list((out / "tensorboard").glob("events.out.tfevents.*"))) > 1, proc)
    time.sleep(2.0)  # inside the resumed epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Resume with" in err
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    assert "data.n_samples=400000" in overrides and "callbacks.early_stopping.patience=30" in overrides
    assert "ckpt_path" not in overrides


def test_an_output_place_that_cannot_hold_a_run_is_one_line(tmp_path: Path) -> None:
    # Hydra turned the callback's OSError into a warning and then failed itself: 4-5 tracebacks.
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    for override, message in ((f"paths.output_root={blocker}", "cannot create the run's directory (Not a directory)"),
                              (f"hydra.run.dir={blocker}", "a file, where the run's directory would go")):
        r = run([*SYNTH, override])
        assert _one_error(r).endswith(message + "; set paths.output_root (or hydra.run.dir, hydra.sweep.dir) to a "
                                      + ("writable folder" if "create" in message else "folder")), r.stderr
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_after_training_lets_the_test_and_summary_finish(tmp_path: Path, sig: int) -> None:
    # Lightning's handler was back by the test: the trained run was left without summary.json,
    # and resume= refused it (nothing left to train), so it could never get one. SIGTERM
    # stopped the test and exited 0.
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    out = tmp_path / "run"
    proc = popen([*QUIET, "data=synthetic", "model.hidden_sizes=[2048,2048]", "data.n_samples=202000",
                  "data.val_size=1000", "data.test_size=200000", "trainer.max_epochs=1",
                  "+trainer.limit_train_batches=2", f"hydra.run.dir={out}"])
    _wait_for(lambda: (out / "checkpoints" / "last.ckpt").is_file(), proc)  # the one epoch is over
    time.sleep(0.5)  # testing 200,000 samples on a 2048-2048 network
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert f"Stopped by {name} after training had finished; the test and summary.json were completed first" in err
    assert "Traceback" not in err
    done = summary(out)
    assert done["status"] == "completed" and done["metrics"]["test/acc"] > 0.5


@pytest.mark.parametrize("sig, sigint_ignored", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                                 (signal.SIGTERM, True)])
def test_ctrl_c_or_sigterm_before_training_leaves_no_run_and_no_traceback(tmp_path: Path, sig: int,
                                                                           sigint_ignored: bool) -> None:
    # A SIGTERM left .hydra/ and train.log behind, a folder neither resume= nor a new run could use.
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    out = tmp_path / "run"
    proc = popen([*SYNTH, f"hydra.run.dir={out}"], sigint_ignored)
    _wait_for(lambda: (out / "train.log").is_file(), proc)  # Hydra has started the job: imports follow
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    # In Hydra's code or in the job's imports and data set-up, as the signal falls: one line either way.
    assert err.strip().splitlines()[-1:] in ([f"error: interrupted ({name})"],
                                             [f"error: interrupted{' (SIGTERM)' if name == 'SIGTERM' else ''}; "
                                              "nothing was kept (no checkpoint yet)"]), err
    assert "Traceback" not in err and not out.exists()


def test_sigterm_mid_epoch_saves_last_and_says_how_to_resume(tmp_path: Path) -> None:
    # `kill`, `docker stop`, a scheduler's time limit: Lightning stopped the run and exited 0,
    # with no checkpoint before the first epoch's end and not a word.
    out = tmp_path / "run"
    proc = popen([*SYNTH, "data.n_samples=400000", "data.val_size=1000", "data.test_size=1000",
                  "trainer.max_epochs=20", f"hydra.run.dir={out}"], sigint_ignored=True)
    _wait_for(lambda: (out / "tensorboard").is_dir(), proc)
    time.sleep(2.0)  # well inside epoch 0
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert "Interrupted (SIGTERM) during epoch 0" in err and f"Resume with: python src/train.py resume={out}" in err
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] > 0 and last["epoch"] == 0
    assert not (out / "summary.json").exists()


def test_a_ctrl_c_in_the_last_validation_is_passed_on_once_training_ends() -> None:
    # No batch was left to act on it: the run ended with exit 0 as if no Ctrl-C had come.
    from mlplab.callbacks.interrupt import FinishFirst, GracefulInterrupt

    graceful, after = GracefulInterrupt(), FinishFirst()
    graceful.after = after
    graceful._requested = True
    graceful.on_train_end(None, None)  # type: ignore[arg-type]
    assert after.armed and after.requested


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_mnist_run(tmp_path: Path) -> None:
    args = [*QUIET, "trainer.max_epochs=3", "trainer.limit_train_batches=19", "model.dropout=0.0",
            "callbacks.early_stopping.patience=10", "deterministic=true"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run([*args, f"hydra.run.dir={full}"]).returncode == 0
    proc = popen([*args, f"hydra.run.dir={killed}"])
    last = killed / "checkpoints" / "last.ckpt"

    def epoch_one_started() -> bool:
        try:
            return last.is_file() and torch.load(last, weights_only=True)["epoch"] == 0
        except Exception:  # the rename may land between exists() and load()
            return False

    _wait_for(epoch_one_started, proc)
    time.sleep(0.3)  # into epoch 1
    proc.kill()
    proc.communicate()
    for ckpt in (killed / "checkpoints").iterdir():  # everything written is loadable
        torch.load(ckpt, weights_only=True)
    r = run([f"resume={killed}"])
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = summary(full), summary(killed)
    assert a["epochs"] == b["epochs"] == 3
    assert abs(a["metrics"]["test/acc"] - b["metrics"]["test/acc"]) <= 0.003


@pytest.mark.parametrize("kind", ["missing", "garbage", "other_architecture"])
def test_bad_resume_checkpoint_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    ckpt = tmp_path / "x.ckpt"
    if kind == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all" * 10)
    elif kind == "other_architecture":
        src = tmp_path / "src"
        assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={src}"]).returncode == 0
        ckpt = src / "checkpoints" / "last.ckpt"
    out = tmp_path / "run"
    r = run([*SYNTH, "model.hidden_sizes=[48]", f"ckpt_path={ckpt}", f"hydra.run.dir={out}"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith(f"error: ckpt_path={ckpt}: "), last  # the key the user typed, then the file
    if kind == "missing":  # refused before the Trainer (and its device lines) is built
        assert lines == [f"error: ckpt_path={ckpt}: no such file"], r.stderr
    if kind == "other_architecture":
        assert "another network" in last
    assert not (out / "summary.json").exists()


def test_options_from_a_users_own_config_dir_are_not_refused(tmp_path: Path) -> None:
    # The one-line check sees only conf/; Hydra also searches --config-dir.
    mine = tmp_path / "conf" / "optimizer"
    mine.mkdir(parents=True)
    (mine / "myadam.yaml").write_text("_target_: torch.optim.Adam\n_partial_: true\nlr: 0.01\n")
    r = run(["--config-dir", str(tmp_path / "conf"), *SYNTH, "optimizer=myadam", "trainer.max_epochs=1",
             f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(tmp_path / "run")["status"] == "completed"


def test_a_resume_keeps_its_data_and_its_hold_out(tmp_path: Path) -> None:
    # Both were accepted: the best score so far (and best.ckpt, the one to beat) stayed the
    # other data's, or validation scored samples the run had trained on.
    out, new = tmp_path / "run", tmp_path / "new"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    before = _files(out)
    r = run([f"resume={out}", "seed=5", "trainer.max_epochs=2"])
    assert _one_error(r) == (f"error: resume={out.resolve()}: data.seed=5 here, 42 in the checkpoint; a resumed run "
                             "keeps its validation hold-out (another would contain samples it has trained on)")
    r = run([*SYNTH, "data.separability=3.0", "trainer.max_epochs=2", f"ckpt_path={out}/checkpoints/last.ckpt",
             f"hydra.run.dir={new}"])
    assert "error: " in r.stderr and "data.separability=3.0 here, 0.5 in the checkpoint" in r.stderr.splitlines()[-1]
    assert r.returncode == 1 and not new.exists() and _files(out) == before
    # Another batch size leaves the samples as they are.
    r = run([f"resume={out}", "data.batch_size=32", "trainer.max_epochs=2"])
    assert r.returncode == 0, r.stderr[-2000:]
    if not (have_data("mnist") and have_data("fashion")):
        pytest.skip("MNIST or Fashion-MNIST not provisioned (make data)")
    mnist = tmp_path / "mnist"
    tiny = [*QUIET, "model.hidden_sizes=[16]", "trainer.limit_train_batches=2", "report=false"]
    assert run([*tiny, "trainer.max_epochs=1", f"hydra.run.dir={mnist}"]).returncode == 0
    r = run([*tiny, "data=fashion", "trainer.max_epochs=2", f"ckpt_path={mnist}/checkpoints/last.ckpt",
             f"hydra.run.dir={new}"])
    assert r.returncode == 1 and not new.exists()
    assert r.stderr.splitlines()[-1] == (f"error: ckpt_path={mnist}/checkpoints/last.ckpt: trained on MNISTDataModule, "
                                         "this config has FashionMNISTDataModule; a resumed run keeps its data (start "
                                         "a new run, without ckpt_path, for other data)")


def test_a_refused_run_leaves_no_folder_it_made(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    r = run([*SYNTH, "model.dropout=1.5", f"paths.output_root={out}"])
    assert _one_error(r) == "error: model.dropout=1.5: expected a value in [0, 1)"
    assert not out.exists()  # runs/<date>/, then outputs/runs/, were left behind, empty
    r = run_python(["src/eval.py", f"ckpt_path={tmp_path}/none.ckpt", f"paths.output_root={out}"])
    assert _one_error(r) == f"error: ckpt_path={tmp_path}/none.ckpt: no such file"
    assert not out.exists()
    # Folders that were there before stay, and so does whatever they hold.
    (out / "evals" / "mine").mkdir(parents=True)
    r = run_python(["src/eval.py", f"ckpt_path={tmp_path}/none.ckpt", f"paths.output_root={out}"])
    assert r.returncode == 1 and [p.name for p in (out / "evals").iterdir()] == ["mine"]


def test_a_key_of_an_unselected_group_asks_for_the_group(tmp_path: Path) -> None:
    # eval.py has no data group unless one is chosen: "not a config key" did not say so.
    r = run_python(["src/eval.py", f"ckpt_path={tmp_path}/x.ckpt", "data.tta.shift=1", f"paths.output_root={tmp_path}"])
    assert _one_error(r) == ("error: data.tta.shift=1: no data group is selected here; choose one first "
                             "(data=<option> data.tta.shift=1; options: fashion, mnist, synthetic)")


def test_the_one_line_check_lets_every_valid_override_through() -> None:
    # Each of these was refused, or crashed, in a first version of the check.
    from mlplab.cli import unknown_overrides

    conf = ROOT / "conf"
    for argv in (["trainer.default_root_dir=/tmp/x"],  # its default is ${hydra:...}: read, it raised
                 ["-m", "optimizer=adam, sgd"], ['optimizer="sgd"'],  # Hydra's grammar, not split(",")
                 ["-m", "optimizer=glob(ad*)"], ["-m", "optimizer=choice(adam,sgd)"],
                 # keys of a swept group belong to each option, not to the default one
                 ["-m", "optimizer=sgd,momentum", "optimizer.nesterov=true"], ["data=choice(synthetic)", "data.n_features=9"],
                 ["logger=[tensorboard,csv]"], ["optimizer=${oc.env:MLPLAB_NO_SUCH_VAR,adam}"],
                 ["--cfg", "job", "data=synthetic"], ["-p", "model", "--cfg", "job"],  # a flag's value is no override
                 ["+trainer.max_time=null", "trainer.max_time=00:00:01:00"], ["~callbacks.early_stopping"],
                 ["experiment=fashion_best", "data.augment.erase=0.2"], ["-m", "sweep=lr_dropout", "seed=1,2"]):
        assert unknown_overrides(["train.py", *argv], conf, "train") == [], argv
    # One message for a missing option, not a second for its keys checked against another option.
    assert unknown_overrides(["train.py", "optimizer=sgdd", "optimizer.momentum=0.9"], conf, "train") == [
        "optimizer=sgdd: not an option of optimizer: adadelta, adagrad, adam, adamw, momentum, rmsprop, sgd; "
        "did you mean optimizer=sgd?"]
    # A Lightning Trainer argument that conf/trainer does not list is added with +, as Hydra said.
    assert unknown_overrides(["train.py", "trainer.max_steps=5"], conf, "train") == [
        "trainer.max_steps=5: not in conf/trainer; a Lightning Trainer argument is added with +: +trainer.max_steps=5"]
    # A top-level key the config lacks, added with +, was read by nothing: `+seeed=1,2` ran and
    # ranked the default seed twice as two settings. A group added with + is a selection.
    assert unknown_overrides(["train.py", "-m", "+seeed=1,2"], conf, "train") == [
        "+seeed=1,2: adds a top-level key that nothing reads; did you mean seed=1,2?"]
    assert unknown_overrides(["eval.py", "++splt=val"], conf, "eval") == [
        "++splt=val: adds a top-level key that nothing reads; did you mean split=val?"]
    assert unknown_overrides(["train.py", "++seed=3"], conf, "train") == []
    assert unknown_overrides(["train.py", "+experiment=fashion_best"], conf, "train") == [
        "+experiment=fashion_best: experiment is in this config already (unset by default); select an option "
        "without +: experiment=fashion_best"]
    # Hydra's own answers took 2-4 lines and named no experiment (or, for syntax, no override).
    assert unknown_overrides(["train.py", "regularizer=l2"], conf, "train") == [
        "regularizer=l2: no regularizer group in this config; experiment=notes_regularisers brings one, or add it "
        "with +regularizer=l2"]
    assert unknown_overrides(["train.py", "experiment=notes_regularisers", "regularizer=l2"], conf, "train") == []
    assert unknown_overrides(["train.py", "+optimizer=sgd"], conf, "train") == [
        "+optimizer=sgd: optimizer is in this config already (by default optimizer=adam); select an option "
        "without +: optimizer=sgd"]
    # eval.py composed a training group added with + and ignored it; without +, it pointed to an
    # experiment, which eval.py has no group for either.
    for sel in ("+optimizer=sgd", "optimizer=sgd", "experiment=fashion_best"):
        group = sel.lstrip("+").split("=")[0]
        assert unknown_overrides(["eval.py", "ckpt_path=x.ckpt", sel], conf, "eval") == [
            f"{sel}: eval.py has no {group} group (its groups: data); the model and how it was trained come from the "
            "checkpoint"]
    assert unknown_overrides(["predict.py", "+model=mlp"], conf, "predict") == [
        "+model=mlp: predict.py has no model group (it takes no config group); the model and how it was trained "
        "come from the checkpoint"]
    assert unknown_overrides(["eval.py", "data=fashion"], conf, "eval") == []
    assert unknown_overrides(["train.py", "data=synthetic", "model.hidden_sizes=[64,64"], conf, "train") == [
        "model.hidden_sizes=[64,64: not an override Hydra can read (no viable alternative at input '[64,64'); the "
        "form is key=value, a list as key=[a,b] (quoted for the shell)"]


def test_hydra_flags_still_work(tmp_path: Path) -> None:
    r = run(["-sc", "install=bash"])
    assert r.returncode == 0 and "hydra_bash_completion" in r.stdout, r.stderr[-2000:]
    r = run(["--config-path", str(ROOT / "conf"), "--cfg", "job", "data=synthetic"])
    assert r.returncode == 0 and "SyntheticDataModule" in r.stdout, r.stderr[-2000:]


def test_a_validated_run_may_be_continued_as_a_final_fit(tmp_path: Path) -> None:
    # Its hold-out is trained on from then on, and nothing validates: no samples to keep apart.
    out, final = tmp_path / "run", tmp_path / "final"
    assert run([*SYNTH, "trainer.max_epochs=1", f"hydra.run.dir={out}"]).returncode == 0
    r = run([*SYNTH, "trainer.max_epochs=2", "data.val_size=0",
             f"ckpt_path={out}/checkpoints/last.ckpt", f"hydra.run.dir={final}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(final)["epochs"] == 2 and not summary(final)["validation"]
    # A synthetic problem's seed draws the data itself, not only the hold-out.
    r = run([*SYNTH, "trainer.max_epochs=2", "data.val_size=0", "seed=7", f"ckpt_path={out}/checkpoints/last.ckpt",
             f"hydra.run.dir={tmp_path / 'other'}"])
    assert r.returncode == 1 and "data.seed=7 here, 42 in the checkpoint" in r.stderr


def test_resume_given_twice_or_empty_is_one_line(tmp_path: Path) -> None:
    # The last one won silently; an empty one meant the current folder.
    r = run([f"resume={tmp_path}/a", f"resume={tmp_path}/b"])
    assert _one_error(r) == f"error: resume={tmp_path}/a resume={tmp_path}/b: resume= continues one run; give it once"
    r = run(["resume="])
    assert _one_error(r) == "error: resume=: expected a run directory, e.g. resume=outputs/runs/<date>/<time>"


def test_a_swept_resume_is_one_line_whose_command_sweeps_from_the_run(tmp_path: Path) -> None:
    # Hydra read the overrides placed after resume='s as stray arguments: an 8-line usage, exit 2.
    import shlex

    base = tmp_path / "base"
    assert run([*SYNTH, "trainer.max_epochs=2", "report=false", f"hydra.run.dir={base}"]).returncode == 0
    before = {p: p.stat().st_mtime for p in base.rglob("*")}
    r = run(["-m", f"resume={base}", "trainer.max_epochs=3,4"])
    line = _one_error(r)
    assert line.startswith(f"error: resume={base}: continues one run, so it cannot be swept;"), line
    assert {p: p.stat().st_mtime for p in base.rglob("*")} == before
    command = shlex.split(line.split(": python src/train.py ", 1)[1])
    assert command[0] == "-m" and f"ckpt_path={base}/checkpoints/last.ckpt" in command
    r = run([*command, f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert [summary(tmp_path / "sweep" / job)["epochs"] for job in ("0", "1")] == [3, 4]


def test_a_run_killed_before_its_summary_is_finished_by_resume(tmp_path: Path) -> None:
    # SIGKILL or out of memory between the last epoch and summary.json: resume= refused it
    # ("nothing to train") and nothing else could ever write its summary.
    out = tmp_path / "run"
    assert run([*SYNTH, "trainer.max_epochs=3", "report=false", f"hydra.run.dir={out}"]).returncode == 0
    written = summary(out)
    (out / "summary.json").unlink()  # as the kill left it
    r = run([f"resume={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    finished = summary(out)
    assert finished["status"] == "completed" and finished["epochs"] == 3
    assert finished["best_epoch"] == written["best_epoch"]
    for key in ("val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"):
        assert finished["metrics"][key] == pytest.approx(written["metrics"][key], rel=1e-6), key
    # With its summary, the run is left as it is.
    r = run([f"resume={out}"])
    assert r.returncode == 1 and "nothing to train" in r.stderr
    assert summary(out) == finished
