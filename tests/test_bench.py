"""`python -m mlplab.bench`: bad arguments are one line and exit 2; the mlplab variant is timed
inside a real `train()` run."""

from __future__ import annotations

import json

import pytest

from conftest import DATA, have_data
from forkserver import run_python
from mlplab import bench


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-sizes", "0"], "--batch-sizes=0: each must be in [1, 55000]"),
        (["--batch-sizes", "12x"], "--batch-sizes='12x': expected comma-separated integers"),
        (["--epochs", "2"], "--epochs=2: need ≥ 4"),
        (["--variants", "plain,keras"], "--variants: unknown ['keras']"),
        (["--rounds", "0"], "--rounds=0: need ≥ 1"),
        (["--threads", "0"], "--threads=0: need ≥ 1"),
        (["--threads", "4097"], "--threads=4097: more than the "),
        # A repeated variant paired round 2's mlplab run with round 1's second plain run.
        (["--variants", "plain,mlplab,plain"], "--variants=plain,mlplab,plain: each variant at most once"),
        (["--batch-sizes", "128,128"], "--batch-sizes=128,128: each batch size at most once"),
        # These used to fail in the child after other variants had run, printing its traceback,
        # or (trainer=gpu) to be overridden silently and benchmark the CPU.
        (["--set", "data.batches_per_call=0"], "--set: data.batches_per_call=0: expected an integer > 0"),
        (["--set", "foo.bar=1"], "--set: foo.bar=1: not a config key"),
        # A misspelt key was "fixed by the bench"; the epochs pointed to other options.
        (["--set", "model.dropuot=0.1"], "--set: model.dropuot=0.1: not a config key; did you mean model.dropout?"),
        (["--set", "trainer.max_epochs=2"], "the bench fixes trainer.max_epochs (the same model, optimizer, batch size, "
                                            "epochs, device and precision in every variant); use --epochs"),
        (["--set", "foo"], "--set foo: expected KEY=VALUE"),
        (["--set", "trainer=gpu"], "--set=trainer=gpu: the bench fixes trainer"),
        (["--set", "model.dropout=0.5"], "--set=model.dropout=0.5: the bench fixes model.dropout"),
        # Only the mlplab variant would have run at bf16, against 32-bit loops.
        (["--set", "trainer.precision=bf16-mixed"], "the bench fixes trainer.precision"),
        (["--precision", "16-mixed"], "--precision: invalid choice: '16-mixed'"),
        # Each timed the mlplab variant on part of an epoch, or ended in a traceback after the runs.
        (["--set", "trainer.limit_train_batches=0.1"], "--set=trainer.limit_train_batches=0.1: the bench times whole "
                                                       "epochs of the same 55,000 training images"),
        (["--set", "data.val_size=0"], "--set=data.val_size=0: the bench times whole epochs"),
        (["--set", "+trainer.max_steps=100"], "--set=+trainer.max_steps=100: the bench times whole epochs"),
        (["--set", "torch_threads=1"], "--set=torch_threads=1: the bench fixes torch_threads"),
    ],
)
def test_bad_arguments_are_refused_with_the_argument_named(args: list[str], message: str) -> None:
    proc = run_python(["-m", "mlplab.bench", *args])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_set_takes_hydra_deletions() -> None:
    import torch

    from mlplab import bench

    assert bench.check_overrides(["~logger.tensorboard"], 128, 4, str(DATA), torch.device("cpu")) is None



def test_out_under_a_file_is_refused_before_any_work(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "results").write_text("not a directory")
    out = tmp_path / "results" / "bench.json"
    proc = run_python(["-m", "mlplab.bench", "--out", str(out)], timeout=60)
    assert proc.returncode == 2
    assert f"--out={out}: {tmp_path / 'results'} is a file, not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_out_never_replaces_a_file_other_than_an_earlier_bench_result(tmp_path) -> None:  # noqa: ANN001
    # --out pointed at a checkpoint replaced it with the bench's JSON after the whole bench ran.
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"weights")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for out, message in ((ckpt, "expected a .json file name"), (notes, "exists and is not an earlier bench's results")):
        proc = run_python(["-m", "mlplab.bench", "--out", str(out)], timeout=60)
        assert proc.returncode == 2 and f"--out={out}: {message}" in proc.stderr, proc.stderr
    assert ckpt.read_bytes() == b"weights" and notes.read_text() == '{"mine": 1}'
    earlier = tmp_path / "bench.json"
    earlier.write_text(json.dumps({"versions": {}, "results": [], "runs": []}))
    assert bench._earlier_report(earlier) and not bench._earlier_report(notes)


def test_out_that_is_a_directory_is_refused_before_any_work(tmp_path) -> None:  # noqa: ANN001
    proc = run_python(["-m", "mlplab.bench", "--out", str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    assert f"--out={tmp_path}: a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu_is_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_python(["-m", "mlplab.bench", "--device", "cuda"])
    assert proc.returncode == 1
    assert "no CUDA device is available" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_mlplab_variant_times_every_epoch_of_a_real_run() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        r = bench.run_one("mlplab", 4096, 4, str(DATA), "cpu", ["callbacks.progress_bar.refresh_rate=0"], threads=1)
    finally:
        torch.set_num_threads(before)
    assert r["threads"] == 1
    assert len(r["all_epoch_seconds"]) == 4  # one per epoch, validation included, none for testing
    assert all(t > 0 for t in r["all_epoch_seconds"])
    assert r["epoch_seconds"] == pytest.approx(sorted(r["all_epoch_seconds"][1:])[1], abs=1e-3)
    assert r["samples_per_second"] == pytest.approx(55000 / r["epoch_seconds"], rel=1e-2)


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_precision_bf16_runs_both_loops_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    dtypes: list[torch.dtype] = []
    real = torch.autocast

    class Recorded(real):  # Lightning's plugin and the plain loop both enter torch.autocast
        def __init__(self, device_type: str, dtype: torch.dtype | None = None, **kwargs: object) -> None:
            dtypes.append(dtype)
            super().__init__(device_type, dtype=dtype, **kwargs)

    monkeypatch.setattr(torch, "autocast", Recorded)
    before = torch.get_num_threads()
    try:
        for variant in ("plain", "mlplab"):
            dtypes.clear()
            r = bench.run_one(variant, 4096, 4, str(DATA), "cpu", ["callbacks.progress_bar.refresh_rate=0"],
                              threads=1, precision="bf16-mixed")
            assert r["precision"] == "bf16-mixed"
            # Training and validation in each of the 4 epochs (mlplab enters it once per call
            # of several batches, the plain loop once per batch).
            assert len(dtypes) >= 2 * 4 and set(dtypes) == {torch.bfloat16}, variant
    finally:
        torch.set_num_threads(before)


def _run(variant: str, seconds: float) -> dict:
    return {"variant": variant, "batch_size": 128, "epoch_seconds": seconds, "all_epoch_seconds": [seconds] * 4,
            "samples_per_second": 55000 / seconds, "peak_memory_mb": 900.0, "device": "cpu", "threads": 2}


def test_rounds_are_combined_by_medians_of_paired_ratios() -> None:
    # The machine is twice as slow in round 2: each round's own ratio stays 1.1, while the
    # ratio of overall medians would be 1.4 / 1.0.
    runs = [_run("plain", 1.0), _run("mlplab", 1.1), _run("plain", 2.0), _run("mlplab", 2.2),
            _run("plain", 0.9), _run("mlplab", 1.4), _run("torchvision", 9.0),
            _run("plain_fused", 1.0), _run("plain_fused", 1.7), _run("plain_fused", 1.0)]
    rows = {r["variant"]: r for r in bench.combine(runs)}
    assert rows["plain"]["epoch_seconds"] == 1.0 and rows["mlplab"]["epoch_seconds"] == 1.4
    assert rows["mlplab"]["round_ratios"] == [1.1, 1.1, pytest.approx(1.556, abs=1e-3)]
    assert rows["mlplab"]["ratio"] == 1.1
    assert rows["mlplab"]["round_ratios_fused"] == [1.1, pytest.approx(1.294, abs=1e-3), 1.4]
    assert rows["mlplab"]["ratio_fused"] == pytest.approx(1.294, abs=1e-3)
    assert rows["torchvision"]["ratio"] == pytest.approx(9.0 / 1.1, abs=1e-3)  # paired with round 1
    table = bench.table(list(rows.values()))
    assert "| 128 | mlplab | 1.400 | 39286 | 900 | 1.10 (1.10–1.56) | 1.29 (1.10–1.40) |  |" in table


@pytest.mark.skipif(not have_data("mnist"), reason="MNIST not provisioned (make data)")
def test_a_relative_data_dir_means_the_callers_folder(tmp_path) -> None:  # noqa: ANN001
    # The variants run as child processes in the repository root; they must read the same
    # files the parent checked, not a `d/` relative to the repository.
    (tmp_path / "d").symlink_to(DATA, target_is_directory=True)
    proc = run_python(["-m", "mlplab.bench", "--epochs", "4", "--rounds", "1", "--batch-sizes", "256",
                       "--variants", "plain", "--data-dir", "d", "--out", str(tmp_path / "b.json")],
                      cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "b.json").read_text())["runs"][0]["variant"] == "plain"
