"""The classifier steps its own optimizer, several batches per Lightning call: the result must
be the same run as one batch per call, with schedules, clipping and max_steps counted in
optimizer steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import FAST
from mlplab.training import build, train

# synthetic: 1200 training samples / batch 64 = 19 batches per epoch (the last one short).
SYNTH = ["data=synthetic", "model.hidden_sizes=[32]", "model.dropout=0.0", *FAST,
         "callbacks.early_stopping.patience=100", "report=false"]


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("extra", [[], ["optimizer=adamw", "scheduler=onecycle", "model.max_norm=1.0"]])
def test_grouped_calls_train_exactly_like_one_batch_per_call(make_cfg, tmp_path: Path, extra: list[str]) -> None:
    runs = {}
    for k in (1, 4, 64):
        run = tmp_path / f"k{k}"
        train(make_cfg([*SYNTH, *extra, f"data.batches_per_call={k}"], run_dir=run))
        runs[k] = _last(run)
    assert runs[1]["global_step"] == runs[4]["global_step"] == runs[64]["global_step"] == 3 * 19
    for k in (4, 64):
        for key, tensor in runs[1]["state_dict"].items():
            torch.testing.assert_close(runs[k]["state_dict"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_onecycle_spans_exactly_the_optimizer_steps_of_the_fit(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg([*SYNTH, "optimizer=adamw", "scheduler=onecycle", "data.batches_per_call=4"])
    train(cfg)
    sched = _last(tmp_path / "run")["lr_schedulers"][0]
    assert sched["total_steps"] == 3 * 19 and sched["last_epoch"] == 3 * 19
    lr = _last(tmp_path / "run")["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr < 1e-5  # annealed from max_lr 1e-3 to ~max_lr / (div_factor * final_div_factor)


@pytest.mark.parametrize(("scheduler", "length"), [
    # once an epoch: sized in epochs (in optimizer steps it stayed in its warm-up all run)
    (["scheduler=onecycle", "scheduler.interval=epoch"], 3),
    # every 2nd step: half the steps (with all of them it stopped half-way through its decay)
    (["scheduler=onecycle", "+scheduler.frequency=2"], 3 * 19 // 2),
    (["scheduler=cosine", "scheduler.interval=step", "+scheduler.frequency=2"], 3 * 19 // 2),
    (["scheduler=cosine", "+scheduler.frequency=2", "trainer.max_epochs=4"], 2),
], ids=["onecycle-epoch", "onecycle-every-2nd-step", "cosine-every-2nd-step", "cosine-every-2nd-epoch"])
def test_a_sized_schedule_runs_to_its_end_in_the_steps_it_is_stepped(scheduler: list[str], length: int, make_cfg,
                                                                      tmp_path: Path) -> None:
    train(make_cfg([*SYNTH, "optimizer=adamw", *scheduler]))
    last = _last(tmp_path / "run")
    sched = last["lr_schedulers"][0]
    assert sched.get("total_steps", sched.get("T_max")) == length and sched["last_epoch"] == length
    if "T_max" in sched:  # at its end, cosine is at eta_min (one-cycle's last step is past its last lr)
        assert last["optimizer_states"][0]["param_groups"][0]["lr"] < 1e-9


@pytest.mark.parametrize("scheduler", [
    # an epoch scheduler steps once per epoch
    ["scheduler=step", "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"],
    # plateau reads the validation metric: patience 0 and a threshold no epoch can beat halve lr
    # every epoch (stepping it without the metric would be a TypeError)
    ["scheduler=plateau", "scheduler.scheduler.patience=0", "+scheduler.scheduler.threshold=10.0"],
], ids=["step", "plateau"])
def test_epoch_schedulers_step_once_per_epoch(scheduler: list[str], make_cfg, tmp_path: Path) -> None:
    train(make_cfg([*SYNTH, "optimizer=sgd", "optimizer.lr=0.1", *scheduler]))
    lr = _last(tmp_path / "run")["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.1 * 0.5**3)


def test_max_steps_counts_optimizer_steps_not_calls(make_cfg, tmp_path: Path) -> None:
    # Epoch 0: calls of 8, 8 and 3 steps. Epoch 1 must stop inside its first call of 8.
    datamodule, model, trainer = build(make_cfg([*SYNTH, "data.batches_per_call=8", "+trainer.max_steps=24"]))
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 24


def test_gradient_clipping_bounds_every_step(make_cfg) -> None:
    cfg = make_cfg([*SYNTH, "optimizer=sgd", "optimizer.lr=1.0", "model.gradient_clip_val=1e-6",
                    "data.batches_per_call=4"])
    datamodule, model, trainer = build(cfg)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=datamodule)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    # Each of the 57 SGD steps moves the weights by at most lr × 1e-6 in L2 norm.
    assert 0 < moved.item() <= 57 * 1e-6 * 1.0001
