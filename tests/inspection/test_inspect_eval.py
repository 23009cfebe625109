"""eval.py reproduces the test metrics printed at the end of training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import inspection_support as support
import pytest
import torch

from conftest import DATA, FAST
from mlplab.training import train

# Session fixtures shared by the inspection tests (the runs train once per session).
mnist_run = support.mnist_run
script = support.script


def test_eval_reproduces_training_test_accuracy(mnist_run: Path, script, tmp_path: Path) -> None:
    summary = json.loads((mnist_run / "summary.json").read_text())
    out = tmp_path / "eval"
    proc = script("eval.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}",
                  f"paths.data_dir={DATA}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["accuracy"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    assert result["loss"] == pytest.approx(summary["metrics"]["test/loss"], abs=1e-5)
    assert result["n"] == 10_000 and result["data"] == "mnist"
    assert sum(map(sum, result["confusion_matrix"])) == 10_000
    assert set(result["per_class_accuracy"]) == {str(d) for d in range(10)}
    for text in ("per-class accuracy", "confusion matrix", f"{result['accuracy']:.6f}", str(out / "eval.json")):
        assert text in proc.stdout


def test_eval_on_other_data_is_refused_in_one_line(mnist_run: Path, script, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = script("eval.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}", "data=fashion",
                  f"paths.data_dir={DATA}")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "trained on classes [0, 1, 2, 3, …], but data fashion has classes [T-shirt/top" in lines[0]
    assert not out.exists()
    # Synthetic data: the sizes that differ, not "data.mean: not an argument of SyntheticDataModule"
    # (the checkpoint's normalisation was laid over a group that has none).
    proc = script("eval.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}", "data=synthetic",
                  f"paths.data_dir={DATA}")
    assert proc.returncode == 1
    line, = proc.stderr.strip().splitlines()
    assert "the model takes 784 input features and predicts 10 classes, but data synthetic has 20" in line, line
    assert not out.exists()


def _synthetic_run(make_cfg, tmp_path: Path, *overrides: str) -> tuple[Path, dict]:  # noqa: ANN001
    """A tiny synthetic run in tmp_path/run: its checkpoints folder and its summary."""
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[16]", "report=false", *FAST, *overrides]))
    return tmp_path / "run" / "checkpoints", json.loads((tmp_path / "run" / "summary.json").read_text())


def test_a_final_fit_is_evaluated_on_test_and_refuses_val_in_one_line(make_cfg, script, tmp_path: Path) -> None:
    checkpoints, summary = _synthetic_run(make_cfg, tmp_path, "data.val_size=0")
    final = checkpoints / "final.ckpt"
    out = tmp_path / "eval"
    proc = script("eval.py", f"ckpt_path={final}", f"hydra.run.dir={out}", "split=val")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "split=val" in lines[0] and "data.val_size=0" in lines[0] and "use split=test" in lines[0]
    assert not (out / "eval.json").exists()
    proc = script("eval.py", f"ckpt_path={final}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["accuracy"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    # Naming the data group keeps the checkpoint's split: before, it took seed 42's hold-out,
    # 400 of whose rows this model was trained on.
    proc = script("eval.py", f"ckpt_path={final}", f"hydra.run.dir={tmp_path / 'eval2'}", "data=synthetic", "split=val")
    assert proc.returncode == 1 and "data.val_size=0" in proc.stderr and "Traceback" not in proc.stderr
    # The PNG report too: asked for the validation split, it drew the test split and said nothing.
    from mlplab.inspect.report import ReportError, write_report

    with pytest.raises(ReportError, match=r"^--split val: .*data.val_size=0.*use --split test$"):
        write_report(tmp_path / "run", "val")
    assert not list((tmp_path / "run").glob("*.png"))
    assert "confusion_matrix.png" in {p.name for p in write_report(tmp_path / "run")}  # the default: test
    # No validation chose an epoch: the curves drew a "best epoch" line at the last one.
    from mlplab.inspect.report import _curves_figure

    figure = _curves_figure(tmp_path / "run", summary)
    labels = [t.get_text() for ax in figure.axes for legend in [ax.get_legend()] if legend for t in legend.get_texts()]
    labels += [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert labels and not any("best epoch" in label for label in labels), labels


def test_a_chosen_data_group_keeps_the_checkpoints_seed_and_hold_out(make_cfg, script, tmp_path: Path) -> None:
    # Synthetic data is generated from the seed: another seed is another problem.
    checkpoints, summary = _synthetic_run(make_cfg, tmp_path, "seed=3")
    best = checkpoints / "best.ckpt"
    out = tmp_path / "eval"
    proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={out}", "data=synthetic")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["accuracy"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval2'}", "data=synthetic",
                  "split=val", "data.val_size=300")
    assert proc.returncode == 1 and "data.val_size=300" in proc.stderr and "trained on" in proc.stderr
    # Any setting that decides which samples are held out: the seed, or how synthetic data is
    # generated. Before, seed=7 scored 4,585 training images of a Fashion run as "val".
    for override, key, trained in (("seed=7", "data.seed=7", "data.seed=3"),
                                   ("data.test_size=500", "data.test_size=500", "data.test_size=400")):
        proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval3'}", "data=synthetic",
                      "split=val", override)
        assert proc.returncode == 1, proc.stdout[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}:") and trained in lines[0], proc.stderr
        assert not (tmp_path / "eval3").exists()
    # A setting that leaves the held-out samples as they are is accepted with split=val.
    proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval4'}", "data=synthetic",
                  "split=val", "data.eval_batch_size=7")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_seed_without_a_data_group_applies_to_the_checkpoints_data(make_cfg, script, tmp_path: Path) -> None:
    # It was silently ignored: the checkpoint's own problem was scored and labelled seed 5's.
    checkpoints, summary = _synthetic_run(make_cfg, tmp_path, "seed=3")
    best = checkpoints / "best.ckpt"
    scores = {}
    for name, extra in (("own", ["seed=5"]), ("group", ["data=synthetic", "seed=5"])):
        out = tmp_path / name
        proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={out}", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        scores[name] = json.loads((out / "eval.json").read_text())["accuracy"]
    assert scores["own"] == scores["group"] != pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    proc = script("eval.py", f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'val'}", "seed=5", "split=val")
    assert proc.returncode == 1 and "error: data.seed=5:" in proc.stderr and "data.seed=3" in proc.stderr


def test_a_chosen_data_groups_values_are_checked_as_train_checks_them(mnist_run: Path, script, tmp_path: Path) -> None:
    # data.std=0 used to exit 0 with loss nan, accuracy 0.1 in eval.json.
    for override, key in (("data.std=0", "data.std=0"), ("data.eval_batch_size=-5", "data.eval_batch_size=-5"),
                          ("data.data_dir=null", "data.data_dir=null"), ("torch_threads=-2", "torch_threads=-2")):
        out = tmp_path / "eval"
        proc = script("eval.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"hydra.run.dir={out}", "data=mnist",
                      f"paths.data_dir={DATA}", override)
        assert proc.returncode == 1, proc.stdout[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), proc.stderr
        assert not out.exists()


def _tiny_synthetic(make_cfg, run: Path, *overrides: str) -> Path:  # noqa: ANN001
    train(make_cfg(["data=synthetic", "model.hidden_sizes=[16]", "report=false", *FAST, *overrides], run_dir=run))
    return run / "checkpoints" / "best.ckpt"


def test_a_list_of_checkpoints_is_scored_by_their_mean_probability(make_cfg, script, tmp_path: Path) -> None:
    from mlplab import checkpoints
    from mlplab.evaluation import split_outputs

    # Seed 3's problem and hold-out, initialised apart.
    a = _tiny_synthetic(make_cfg, tmp_path / "a", "seed=3")
    b = _tiny_synthetic(make_cfg, tmp_path / "b", "seed=4", "data.seed=3")
    for split in ("test", "val"):
        out = tmp_path / f"eval_{split}"
        proc = script("eval.py", f"ckpt_path=[{a},{b}]", f"split={split}", f"hydra.run.dir={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads((out / "eval.json").read_text())
        # The same figures computed here from each member's own probabilities.
        probs = []
        for path, member in zip((a, b), result["checkpoints"], strict=True):
            loaded = checkpoints.load(path)
            dm = checkpoints.build_datamodule(path, loaded.data)
            dm.setup()
            p, y, _ = split_outputs(loaded.model, dm, split)
            assert member["checkpoint"] == str(path.resolve())
            assert member["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()), abs=1e-9)
            assert member["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)
            probs.append(p)
        mean = (probs[0] + probs[1]) / 2
        assert result["accuracy"] == pytest.approx(float((mean.argmax(1) == y).double().mean()), abs=1e-9)
        assert result["loss"] == pytest.approx(float(-mean[torch.arange(len(y)), y].log().mean()), rel=1e-5)
        assert result["n"] == len(y) and "checkpoint" not in result
        assert "an ensemble of 2 checkpoints" in proc.stdout and str(a) in proc.stdout and str(b) in proc.stdout
    # A pattern names the same two runs (a sweep's, typically); one that matches nothing is refused.
    out = tmp_path / "eval_glob"
    proc = script("eval.py", f"ckpt_path={tmp_path}/?/checkpoints/best.ckpt", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_pattern = json.loads((out / "eval.json").read_text())
    assert [m["checkpoint"] for m in by_pattern["checkpoints"]] == [str(a.resolve()), str(b.resolve())]
    assert by_pattern["accuracy"] == json.loads((tmp_path / "eval_test" / "eval.json").read_text())["accuracy"]
    # The two members really differ (else the test above could not tell a mean from one member).
    first, second = (checkpoints.load(p).model.state_dict() for p in (a, b))
    assert any(not torch.equal(first[k], second[k]) for k in first)


def _refused_in_one_line(script, tmp_path: Path, ckpt_path: str, split: str, words: list[str]) -> None:  # noqa: ANN001
    """Exit 1, one line naming the key (the first of `words`) and the rest of `words`, no eval directory."""
    out = tmp_path / "refused"
    proc = script("eval.py", f"ckpt_path={ckpt_path}", f"split={split}", f"hydra.run.dir={out}", f"paths.data_dir={DATA}")
    assert proc.returncode == 1, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {words[0]}"), proc.stderr
    for word in words[1:]:
        assert word in lines[0], lines[0]
    assert not out.exists()


def test_an_ensemble_scores_one_set_of_samples_or_refuses_in_one_line(make_cfg, script, tmp_path: Path) -> None:
    a = _tiny_synthetic(make_cfg, tmp_path / "a", "seed=3")
    other_split = _tiny_synthetic(make_cfg, tmp_path / "o", "seed=5")
    # Seed 3's labels, drawn from another problem: only the samples themselves tell them apart.
    other_problem = _tiny_synthetic(make_cfg, tmp_path / "p", "seed=3", "data.separability=3.0")
    final = _tiny_synthetic(make_cfg, tmp_path / "f", "seed=3", "data.val_size=0").parent / "final.ckpt"
    last = a.parent / "last.ckpt"
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    same_problem = _tiny_synthetic(make_cfg, tmp_path / "b", "seed=4", "data.seed=3")
    for name, source in (("a_best", a), ("a_last", last), ("b_best", same_problem)):
        shutil.copy(source, gathered / f"{name}.ckpt")
    for paths, split, words in (
        (f"[{a},{other_split}]", "val", ["ckpt_path:", "held out its validation split with data.seed=5", "data.seed=3", "split=test can"]),
        (f"[{a},{other_problem}]", "test", ["ckpt_path:", f"{other_problem} is scored on other test samples than {a}"]),
        (f"[{a},{final}]", "val", ["split=val:", f"{final} was trained on the whole training set", "use split=test"]),
        (f"[{a},{a}]", "test", ["ckpt_path:", f"{a} is given twice"]),
        (f"[{a},{last}]", "test", ["ckpt_path:", f"{last} and {a} are checkpoints of one run"]),
        (f"{tmp_path}/a/checkpoints/*.ckpt", "test", ["ckpt_path:", "last.ckpt and", "are checkpoints of one run"]),
        # Copied into one folder, one run's checkpoints are still one run's.
        (f"{gathered}/*.ckpt", "test", ["ckpt_path:", "a_last.ckpt and", "are checkpoints of one run"]),
        # Run folders were called "checkpoints of one run" (they share outputs/runs).
        (f"[{tmp_path / 'a'},{tmp_path / 'o'}]", "test", [f"ckpt_path={tmp_path / 'a'}: is a directory"]),
        (f"{tmp_path}/nothing/*.ckpt", "test", [f"ckpt_path={tmp_path}/nothing/*.ckpt: the pattern matches no file"]),
        # Quoted for Hydra, the list is one string, which reads as a glob character class.
        (f"'[{a},{other_split}]'", "test", [f"ckpt_path=[{a},{other_split}]: a string, not a list"]),
        (f"{tmp_path}/nothing.ckpt", "test", [f"ckpt_path={tmp_path}/nothing.ckpt: no such file"]),
        (f"[{a},{tmp_path}/nothing.ckpt]", "test", [f"ckpt_path={tmp_path}/nothing.ckpt: no such file"]),
    ):
        _refused_in_one_line(script, tmp_path, paths, split, words)
    # Other runs' checkpoints gathered in one folder make an ensemble: they were refused as one run's.
    proc = script("eval.py", f"ckpt_path=[{gathered}/a_best.ckpt,{gathered}/b_best.ckpt]", f"hydra.run.dir={tmp_path / 'g'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads((tmp_path / "g" / "eval.json").read_text())["checkpoints"]) == 2
    # predict.py takes one checkpoint, and says so (it reported an existing list as "no such file").
    out = tmp_path / "predict"
    proc = script("predict.py", f"ckpt_path=[{a},{other_split}]", f"inputs={a}", f"hydra.run.dir={out}")
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "error: ckpt_path: predict.py takes one checkpoint; src/eval.py 'ckpt_path=[a.ckpt,b.ckpt]' scores several "
        "as an ensemble"], proc.stderr
    proc = script("predict.py", f"ckpt_path={tmp_path}/nothing.ckpt", f"inputs={a}", f"hydra.run.dir={out}")
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [f"error: ckpt_path={tmp_path}/nothing.ckpt: no such file"], proc.stderr


def test_each_member_is_scored_with_its_own_normalisation(mnist_run: Path, make_cfg, script, tmp_path: Path) -> None:
    other = tmp_path / "other"
    proc = script("train.py", f"hydra.run.dir={other}", f"paths.data_dir={DATA}", *support.TINY, *support.RUNS["mnist"],
                  "data.mean=0.5", "data.std=0.5", "report=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    members = [mnist_run / "checkpoints" / "best.ckpt", other / "checkpoints" / "best.ckpt"]
    alone = []
    for i, ckpt in enumerate(members):
        proc = script("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / f'alone{i}'}", f"paths.data_dir={DATA}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        alone.append(json.loads((tmp_path / f"alone{i}" / "eval.json").read_text())["accuracy"])
    out = tmp_path / "both"
    proc = script("eval.py", f"ckpt_path=[{members[0]},{members[1]}]", f"hydra.run.dir={out}", f"paths.data_dir={DATA}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["accuracy"] for m in json.loads((out / "eval.json").read_text())["checkpoints"]] == alone
    # Scored with the first member's normalisation, the second would score otherwise.
    proc = script("eval.py", f"ckpt_path={members[1]}", f"hydra.run.dir={tmp_path / 'mixed'}", f"paths.data_dir={DATA}",
                  "data=mnist", "data.mean=0.1307", "data.std=0.3081")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "mixed" / "eval.json").read_text())["accuracy"] != alone[1]
    # Naming the data group alone keeps the network's own normalisation: it took the group's,
    # and `data=mnist data.tta.shift=1` scored views of wrongly scaled images.
    proc = script("eval.py", f"ckpt_path={members[1]}", f"hydra.run.dir={tmp_path / 'named'}", f"paths.data_dir={DATA}",
                  "data=mnist")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "named" / "eval.json").read_text())["accuracy"] == alone[1]
    _refused_in_one_line(script, tmp_path, f"[{members[0]},{_tiny_synthetic(make_cfg, tmp_path / 's', 'seed=3')}]",
                         "test", ["ckpt_path:", "must be trained on the same data", "mnist"])


def test_a_class_absent_from_the_split_is_null_in_strict_json(make_cfg, script, tmp_path: Path) -> None:
    # json.dumps wrote its accuracy as a bare NaN, which strict JSON readers refuse.
    checkpoints, _ = _synthetic_run(make_cfg, tmp_path, "data.n_classes=10", "data.test_size=8")
    out = tmp_path / "eval"
    proc = script("eval.py", f"ckpt_path={checkpoints / 'best.ckpt'}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in eval.json")

    result = json.loads((out / "eval.json").read_text(), parse_constant=refuse)
    per_class = result["per_class_accuracy"]
    assert None in per_class.values() and all(v is None or 0 <= v <= 1 for v in per_class.values())
