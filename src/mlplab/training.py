"""`train(cfg)`: build every object from the composed config, fit, test, summarise."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf

from mlplab import runlock
from mlplab.callbacks.guards import NonFiniteLossError
from mlplab.callbacks.interrupt import FinishFirst, GracefulInterrupt
from mlplab.checkpoints import AtomicCheckpointIO
from mlplab.config import ConfigError, ResumeRefused, check_sweeper, launcher_relaunches, validate

log = logging.getLogger(__name__)


def _container(node: Any) -> Any:
    """A config node as plain Python; plain values (a checkpoint's saved dicts) as they are."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """The three objects of a run, each from its config group."""
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        in_features=datamodule.n_features,
        n_classes=datamodule.n_classes,
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.scheduler) or None,
        _recursive_=False,
    )
    # What eval.py and predict.py need to rebuild the data side from the checkpoint alone.
    model.hparams["data"] = _container(cfg.data)
    model.hparams["class_names"] = list(datamodule.class_names)
    callbacks = [_instantiate(f"callbacks.{k}", c) for k, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c]
    loggers = [_instantiate(f"logger.{k}", c) for k, c in (cfg.get("logger") or {}).items() if c and "_target_" in c]
    if not loggers:  # it only writes to loggers, and Lightning refuses it without one
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    no_validation: dict[str, Any] = {}
    if not datamodule.has_validation:
        callbacks = _without_validation(callbacks)
        no_validation = {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    kinds = {type(c).__name__ for c in callbacks}
    try:
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            # Without these callbacks configured, Lightning would silently add its own defaults.
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
            enable_progress_bar=bool(kinds & {"TQDMProgressBar", "RichProgressBar"}),
            enable_model_summary="ModelSummary" in kinds or "RichModelSummary" in kinds,
            plugins=[AtomicCheckpointIO()],
            **no_validation,
        )
    except InstantiationException as err:
        # A Trainer argument config.py does not check: Lightning's own words, in one line.
        raise ConfigError(f"trainer: {_refusal(err)}") from None
    # As Lightning resolved it: its aliases ("bf16", 16) become "bf16-mixed", "16-mixed".
    model.use_precision(str(trainer.precision))
    return datamodule, model, trainer


def _refusal(err: InstantiationException) -> str:
    """The first line of what a constructor raised, without Hydra's wrapping."""
    cause = str(err.__cause__ or err).strip()
    return cause.splitlines()[0] if cause else type(err.__cause__).__name__


def _instantiate(key: str, node: Any) -> Any:
    """A callback or logger; a value its constructor refuses (one config.py does not check,
    e.g. callbacks.lr_monitor.logging_interval=hour) is one line naming the node, not Hydra's
    several and a run folder marked failed."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        raise ConfigError(f"{key}: {_refusal(err)}") from None


def _without_validation(callbacks: list[Any]) -> list[Any]:
    """`data.val_size=0` (a final fit on the whole training set): nothing to stop early on or
    to choose a checkpoint by, so early stopping goes and the checkpoint kept and tested is
    the final one, `checkpoints/final.ckpt`."""
    kept = []
    for c in callbacks:
        if isinstance(c, EarlyStopping):
            log.info("data.val_size=0: no validation split, so early stopping is off")
            continue
        if isinstance(c, ModelCheckpoint) and c.monitor is not None:
            c.monitor, c.filename = None, "final"
        kept.append(c)
    return kept


def job_threads(cfg: DictConfig) -> int | None:
    """Torch threads for this job: `torch_threads` if set; under a parallel launcher, the
    cores shared out between its `n_jobs`, so N jobs × threads does not oversubscribe."""
    if cfg.get("torch_threads"):
        return int(cfg.torch_threads)
    hc = HydraConfig.get()
    n_jobs = hc.launcher.get("n_jobs") if hc.mode == RunMode.MULTIRUN else None
    if not n_jobs or n_jobs == 1:
        return None
    cores = os.cpu_count() or 1
    if n_jobs < 0:  # joblib's convention: -1 = all cores, -2 = all but one, ...
        n_jobs = max(1, cores + 1 + n_jobs)
    return max(1, cores // n_jobs)


def skip_failing_nvml_probe() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (a CUDA check that cannot poison a
    fork); on a machine without NVML torch then dlopens libnvidia-ml afresh on every
    `cuda.is_available()`, which Adam calls on every step: ~100 µs a step, measured here.
    Without NVML torch falls back to the CUDA runtime's count anyway, so skip the probe."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        import ctypes

        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU has bf16 arithmetic in hardware (x86: AMX or AVX-512 BF16; Arm:
    `bf16`), from Linux's cpuinfo flags; None when it cannot tell."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return None
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})


def warn_slow_precision(trainer: L.Trainer) -> None:
    """bf16 autocast pays off on a CPU only with bf16 hardware; without it, bf16 matrix
    products are emulated and usually slower than 32-bit (docs/speed.md)."""
    precision = str(trainer.precision)
    if precision.startswith("bf16") and trainer.strategy.root_device.type == "cpu" and cpu_has_bf16() is False:
        log.warning("trainer.precision=%s on a CPU without bf16 hardware (AMX, AVX-512 BF16): its "
                    "matrix products are emulated and usually slower; trainer.precision=32-true is "
                    "likely faster here", precision)


def refuse_relaunch(trainer: L.Trainer) -> None:
    """In a multirun, the strategy Lightning resolved must not relaunch this script per rank
    (`devices: auto` on a machine with several GPUs becomes DDP; config.validate cannot know)."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    from mlplab.config import RELAUNCH_ADVICE, ConfigError

    if isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher):
        raise ConfigError(f"trainer.strategy={type(trainer.strategy).__name__} on {trainer.num_devices} devices "
                          f"× {trainer.num_nodes} nodes: {RELAUNCH_ADVICE}")


def refuse_spawned_ranks(trainer: L.Trainer) -> None:
    """Any strategy config.validate does not know by name whose ranks Lightning starts as new
    processes (see `config.SPAWN_ADVICE`; a Strategy object given as `_target_`, for one)."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    from mlplab.config import SPAWN_ADVICE, ConfigError

    if isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        start = getattr(trainer.strategy, "_start_method", None)
        raise ConfigError(f"trainer.strategy={type(trainer.strategy).__name__}"
                          + (f" (start method {start})" if start else "") + f": {SPAWN_ADVICE}")


def _end_distributed(trainer: L.Trainer) -> None:
    """Close the process group after the run's last collective; every rank calls it at the same
    point. Lightning does so at exit for NCCL only; a gloo group left to interpreter shutdown
    sometimes aborts its rank ("terminate called without an active exception"), and Lightning's
    launcher then kills every rank."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        trainer.strategy.barrier("mlplab.end")  # passes device_ids under NCCL
        torch.distributed.destroy_process_group()


def _existing(path: Path) -> str | None:
    """The path if the file is there: a run that diverged in its first epoch saved none."""
    return str(path) if path.is_file() else None


class _DropLightningNoise(logging.Filter):
    """Lightning 2.6's adverts for its cloud services (on every run), and its note that our own
    ModelSummary replaces its default one: neither is something a user can act on."""

    NOISE = ("💡 Tip:", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def _quiet_lightning() -> None:
    """Lightning's console output, once and only where it says something true here."""
    # Lightning adds its own console handler; Hydra's root handlers already print and write
    # train.log, so without this every Lightning message appears twice.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningNoise) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningNoise())
    # Lightning counts training_step calls, each of `data.batches_per_call` optimizer steps:
    # against log_every_n_steps (train/loss_step is logged by step), and to decide that a
    # resume starts mid-epoch (`TensorBatches` resumes exactly there anyway).
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    # Under DDP: val/ and test/ are torchmetrics' compute(), which all-reduces already.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/")
    # Lightning 2.6 uses a torch.utils._pytree class that torch 2.14 deprecates.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def _refuse_taken_checkpoint_dir(cfg: DictConfig) -> None:
    """A checkpoint folder named outside the run (`callbacks.model_checkpoint.dirpath`) that
    holds another run's checkpoints: a second run overwrote the first's best.ckpt, which that
    run's summary still named. Only the run continuing from one of them may write there."""
    node = (cfg.get("callbacks") or {}).get("model_checkpoint")
    dirpath = node.get("dirpath") if node else None
    if not dirpath or not Path(str(dirpath)).is_dir():
        return
    folder = Path(str(dirpath)).resolve()
    held = sorted(p.name for p in folder.glob("*.ckpt"))
    ckpt = cfg.get("ckpt_path")
    if held and not (ckpt and Path(str(ckpt)).resolve().parent == folder):
        raise ConfigError(f"callbacks.model_checkpoint.dirpath={folder}: holds another run's checkpoints "
                          f"({', '.join(held[:3])}), which this run would overwrite; choose an empty folder, or "
                          "leave the default (the run's own checkpoints/)")


def _unsummarised(cfg: DictConfig, run_dir: Path) -> bool:
    """A resume in place of a run without summary.json: killed (SIGKILL, out of memory) before
    it was written, or stopped mid-training. One that trained to its end is finished, not refused."""
    return run_dir.resolve() in Path(str(cfg.ckpt_path)).resolve().parents and not (run_dir / "summary.json").exists()


def _refuse_finished(cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """A resume whose run already reached the trainer's limit, refused before the Trainer is
    built (its device and restore lines would come first). Lightning's own test, as in its
    `_FitLoop.done`: epochs processed against max_epochs, optimizer steps against max_steps."""
    max_steps = cfg.trainer.get("max_steps", -1)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is None:  # Lightning's default
        max_epochs = 1000 if max_steps == -1 and cfg.trainer.get("max_time") is None else -1
    processed = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {}).get("processed")
    if max_steps != -1 and int(ckpt.get("global_step", 0)) >= max_steps:
        limit = f"trainer.max_steps={max_steps}"
    elif max_epochs != -1 and processed is not None and processed >= max_epochs:
        limit = f"trainer.max_epochs={max_epochs}"
    else:
        return
    raise ResumeRefused(_nothing_to_train(cfg.ckpt_path, limit))


def _refuse_stopped_early(cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """A resume of a run early stopping ended, with no more patience: it trained one more epoch
    and stopped again, rewriting the run. After the checks that name a changed setting."""
    stopping = (cfg.get("callbacks") or {}).get("early_stopping")
    state = next((v for k, v in (ckpt.get("callbacks") or {}).items() if k.startswith("EarlyStopping")), None)
    if stopping and isinstance(state, dict) and state.get("stopped_epoch", 0) > 0 \
            and int(state.get("wait_count", 0)) >= int(stopping.get("patience", 0)):
        wait = int(state["wait_count"])
        raise ResumeRefused(
            f"ckpt_path={cfg.ckpt_path}: nothing to train, early stopping ended the run ({stopping.get('monitor')} "
            f"had not improved for {wait} validation{'s' if wait != 1 else ''}); give a larger "
            "callbacks.early_stopping.patience to continue it")


def _check_same_monitors(path: str, ckpt: dict[str, Any], trainer: L.Trainer) -> None:
    """Early stopping and the best checkpoint go on judging by the metric they were trained
    with: Lightning keys their saved state by monitor and mode, so with another one it started
    afresh while best.ckpt, the one tested, had been chosen by the old metric."""
    import ast

    from mlplab.checkpoints import CheckpointError

    saved: dict[str, dict[str, Any]] = {}
    for key in ckpt.get("callbacks") or {}:
        kind, _, args = str(key).partition("{")
        if kind in ("EarlyStopping", "ModelCheckpoint") and args:
            with contextlib.suppress(ValueError, SyntaxError):
                saved.setdefault(kind, ast.literal_eval("{" + args))
    for callback in trainer.callbacks:
        if not isinstance(callback, (EarlyStopping, ModelCheckpoint)) or not callback.monitor:
            continue
        theirs = saved.get(type(callback).__qualname__)
        if theirs and (theirs.get("monitor"), theirs.get("mode")) != (callback.monitor, callback.mode):
            name = "early_stopping" if isinstance(callback, EarlyStopping) else "model_checkpoint"
            raise CheckpointError(
                f"ckpt_path={path}: callbacks.{name} monitors {callback.monitor} ({callback.mode}) here, "
                f"{theirs.get('monitor')} ({theirs.get('mode')}) in the checkpoint; a resumed run keeps the metric "
                "it was judged by (start a new run to change it)")


def _check_resumable(path: str, ckpt: dict[str, Any], model: L.LightningModule) -> int:
    """Refuse a checkpoint for another network, or with another optimizer or schedule, with
    one line before Lightning would fail with a traceback or silently restore the old state.
    `ckpt` comes from `read_checkpoint` (`weights_only`). Returns its global step."""
    from mlplab.checkpoints import CheckpointError

    state = ckpt["state_dict"]
    # The optimizer's and the schedule's state are restored with the weights, and would
    # silently win over a changed setting (a new lr) or break on another optimizer's state.
    saved = ckpt.get("hyper_parameters") or {}
    for group in ("optimizer", "scheduler"):
        theirs, mine = saved.get(group), model.hparams.get(group)
        if group in saved and _container(theirs) != _container(mine):
            changed = _first_difference(_container(theirs), _container(mine), group)
            raise CheckpointError(
                f"ckpt_path={path}: {changed}; a resumed run keeps the optimizer and schedule it "
                "was trained with (their state is restored); start a new run to change them")
    _check_same_data(path, saved.get("data"), model.hparams.get("data"))
    ours = model.state_dict()
    for key, tensor in ours.items():
        theirs = state.get(key)
        if theirs is None or tuple(theirs.shape) != tuple(tensor.shape):
            found = "missing" if theirs is None else list(theirs.shape)
            raise CheckpointError(
                f"ckpt_path={path}: a checkpoint of another network ({key}: {found} in the file, "
                f"{list(tensor.shape)} in this config); resume with the config it was trained with "
                "(resume=RUN_DIR does that)"
            )
    return int(ckpt.get("global_step", 0))


def _check_same_data(path: str, theirs: Any, mine: Any) -> None:
    """A resumed run keeps its data and its hold-out: on other data the best score so far (and
    the best checkpoint, kept as the one to beat) would be another dataset's; with another
    hold-out, validation would score samples the run has trained on."""
    from mlplab.checkpoints import CheckpointError
    from mlplab.config import show
    from mlplab.data.base import holdout_difference

    if not isinstance(theirs, dict) or not isinstance(mine, dict):  # a checkpoint from before the record
        return
    if theirs.get("_target_") != mine.get("_target_"):
        name = lambda d: str(d.get("_target_")).rsplit(".", 1)[-1]  # noqa: E731
        raise CheckpointError(
            f"ckpt_path={path}: trained on {name(theirs)}, this config has {name(mine)}; a resumed run "
            "keeps its data (start a new run, without ckpt_path, for other data)")
    if mine.get("val_size") == 0:  # a final fit: no hold-out to keep, its samples are trained on now
        from hydra.utils import get_class

        # An image dataset's seed only draws the hold-out; a synthetic problem's generates the data.
        drawn_by_seed = hasattr(get_class(str(mine["_target_"])), "dataset")
        dropped = ("val_size", "seed") if drawn_by_seed else ("val_size",)
        mine, theirs = ({k: v for k, v in d.items() if k not in dropped} for d in (mine, theirs))
    key = holdout_difference(mine, theirs)
    if key is not None:
        raise CheckpointError(
            f"ckpt_path={path}: data.{key}={show(mine.get(key))} here, {show(theirs.get(key))} in the checkpoint; "
            "a resumed run keeps its validation hold-out (another would contain samples it has trained on)")


def _limit_reached(trainer: L.Trainer) -> str:
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"trainer.max_steps={trainer.max_steps}"
    return f"trainer.max_epochs={trainer.max_epochs}"


def _nothing_to_train(path: str, limit: str) -> str:
    """Why a resume would end without a step: its run already reached the trainer's limit."""
    return (f"ckpt_path={path}: nothing to train, the run already reached {limit}; give a larger "
            f"{limit.split('=')[0]} to continue it (src/eval.py ckpt_path=... tests a checkpoint again)")


def _first_difference(theirs: Any, mine: Any, key: str) -> str:
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for k in [*theirs, *(k for k in mine if k not in theirs)]:
            if theirs.get(k) != mine.get(k):
                return _first_difference(theirs.get(k), mine.get(k), f"{key}.{k}")
    if isinstance(theirs, dict) or isinstance(mine, dict):  # a whole group: its class, not its dict
        return f"{key}: {_brief(mine)} here, {_brief(theirs)} in the checkpoint"
    return f"{key}={mine!r} here, {theirs!r} in the checkpoint"


def _brief(group: Any) -> str:
    """An optimizer or scheduler config by its class (a scheduler's is one level down)."""
    if not isinstance(group, dict):
        return "none" if group is None else repr(group)
    target = group.get("_target_") or (group.get("scheduler") or {}).get("_target_")
    return str(target).rsplit(".", 1)[-1] if target else repr(group)


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def train(cfg: DictConfig) -> float | None:
    """Fit and test one configuration; return `cfg.optimized_metric` for sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with FinishFirst() as finishing:
            result = _train(cfg, finishing)
    finally:
        runlock.release(run_dir)
    from mlplab.cli import SigtermAsInterrupt

    if SigtermAsInterrupt.received and not finishing.requested:  # under DDP, in the test: noted, not acted on
        finishing.requested, finishing.signal = True, "SIGTERM"
    if finishing.requested:  # a sweep stops here, as asked, with this job complete
        print(f"Stopped by {finishing.signal} after training had finished; the test and summary.json were completed "
              "first", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return result


def _train(cfg: DictConfig, finishing: FinishFirst) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    validate(cfg, multirun=multirun and launcher_relaunches(hc.launcher.get("_target_")))
    check_sweeper(cfg, hc.sweeper)
    _quiet_lightning()
    skip_failing_nvml_probe()
    run_dir = Path(hc.runtime.output_dir)
    runlock.hold(run_dir)
    _refuse_taken_checkpoint_dir(cfg)
    threads = job_threads(cfg)
    if threads:
        torch.set_num_threads(threads)
        if threads > (usable := len(os.sched_getaffinity(0))):
            log.warning("torch_threads=%d: more than the %d CPUs this process may use; the extra threads "
                        "only contend for them", threads, usable)
    # Adam's first moment of a weight with zero gradient decays into the denormal range and
    # stays there (x * 0.9 rounds back to x); CPU arithmetic on denormals is ~5× slower
    # (docs/speed.md).
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))
    L.seed_everything(cfg.seed, workers=True)
    resumed: dict[str, Any] = {}  # the checkpoint a ckpt_path= resumes
    if cfg.get("ckpt_path"):
        from mlplab.checkpoints import CheckpointError, as_key, read_checkpoint

        try:  # before building the Trainer, whose device lines would come first
            resumed = read_checkpoint(cfg.ckpt_path)
        except CheckpointError as err:
            raise as_key("ckpt_path", err) from None
        if not _unsummarised(cfg, run_dir):
            _refuse_finished(cfg, resumed)
    datamodule, model, trainer = build(cfg)
    for callback in trainer.callbacks:
        if isinstance(callback, GracefulInterrupt):
            callback.after = finishing
    refuse_spawned_ranks(trainer)
    if multirun:
        refuse_relaunch(trainer)
    warn_slow_precision(trainer)
    resumed_at = _check_resumable(cfg.ckpt_path, resumed, model) if cfg.get("ckpt_path") else None
    if cfg.get("ckpt_path"):
        _check_same_monitors(cfg.ckpt_path, resumed, trainer)
        if not _unsummarised(cfg, run_dir):
            _refuse_stopped_early(cfg, resumed)
    del resumed  # Lightning reads the file again; the optimizer state need not stay in memory
    if trainer.world_size > 1 and trainer.global_rank == 0 and hasattr(datamodule, "prepare_data"):
        # Before fit launches the other ranks: a damaged file is then one line and no run
        # folder, as on one device, not a traceback from a rank left waiting for rank 0.
        datamodule.prepare_data()

    started = time.time()
    status, error = "completed", None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except NonFiniteLossError as err:
        status, error = "diverged", str(err)
        if trainer.is_global_zero:  # every rank stops together; one line is enough
            log.error(error)
    except ResumeRefused:  # the schedule check: every rank refuses at the same point
        _end_distributed(trainer)
        raise
    finishing.arm()  # as GracefulInterrupt did, if the run has one
    fit_seconds = time.time() - started + model.fit_seconds_before  # a resumed run's: the whole run's
    unsummarised = False
    if resumed_at is not None and status == "completed" and trainer.global_step == resumed_at:
        # Lightning returns at once. A run with a summary keeps it: testing again would rewrite
        # it without its validation figures (no epoch ran to give them). One killed between its
        # last epoch and its summary (SIGKILL, out of memory) is finished here instead: tested,
        # with the validation figures its last epoch logged.
        unsummarised = _unsummarised(cfg, run_dir)
        if not unsummarised:
            _end_distributed(trainer)
            raise ResumeRefused(_nothing_to_train(cfg.ckpt_path, _limit_reached(trainer)))
        log.info("%s trained to its end but has no summary.json (stopped before it was written): testing its best "
                 "checkpoint and writing it", run_dir)

    ckpt = _checkpoint_callback(trainer)
    best_path = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    metrics: dict[str, float | None] = {
        k: _float(trainer.callback_metrics.get(k)) for k in ("val/loss", "val/acc", "val/acc_best")
    }
    if unsummarised or (cfg.get("ckpt_path") and datamodule.has_validation):
        # A resumed call whose epochs had no validation (trainer.check_val_every_n_epoch) logged
        # none: the run's figures are those its last validation logged.
        metrics.update(_last_logged(run_dir, [k for k, v in metrics.items() if v is None]))
    best_so_far = float(model.val_acc_best.max_value)  # restored with the checkpoint; -inf before any
    if metrics["val/acc_best"] is None and datamodule.has_validation and math.isfinite(best_so_far):
        metrics["val/acc_best"] = best_so_far
    if ckpt is not None and ckpt.best_model_score is not None:
        metrics[f"best/{ckpt.monitor}"] = float(ckpt.best_model_score)
    best_epoch = _best_epoch(best_path)
    # Before testing: trainer.test(ckpt_path=best) restores the callbacks' state saved in that
    # checkpoint, which resets EarlyStopping.stopped_epoch.
    early = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    stopped_early = bool(early is not None and early.stopped_epoch > 0)
    if cfg.get("test") and (status == "completed" or best_path):
        try:
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
        except SIGTERMException:
            if trainer.world_size > 1 or not finishing.requested:
                raise
            # Lightning's own SIGTERM handler stops a test part-way; FinishFirst has taken the
            # signal as a request to finish first, so the test runs again (a second one stops it).
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    _end_distributed(trainer)

    summary = {
        "status": status,
        "error": error,
        "epochs": trainer.current_epoch,
        "stopped_early": stopped_early,
        "validation": datamodule.has_validation,
        "best_epoch": best_epoch,
        "metrics": metrics,
        "best_checkpoint": best_path,
        "last_checkpoint": _existing(Path(ckpt.dirpath) / "last.ckpt") if ckpt is not None and ckpt.save_last else None,
        "fit_seconds": round(fit_seconds, 2),
        "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:
        _log_hparams(trainer, cfg, metrics, failed=status != "completed")
        _write_json(run_dir / "summary.json", summary)
        if cfg.get("report", True) and not trainer.fast_dev_run:  # fast_dev_run logs nothing to draw from
            _write_report(run_dir)
        _print_summary(summary, cfg)
    if status != "completed":
        raise NonFiniteLossError(error)
    # The best epoch's value when the checkpoint chose by this metric (the last epoch's is
    # `patience` epochs past it), as for the test metrics, which are the best checkpoint's.
    return metrics.get(f"best/{cfg.optimized_metric}", metrics.get(cfg.optimized_metric))


def _last_logged(run_dir: Path, tags: list[str]) -> dict[str, float]:
    """Each tag's last value in the run's TensorBoard events (none without them)."""
    from mlplab.curves import read_scalars

    try:
        scalars = read_scalars(run_dir)
    except Exception:  # noqa: BLE001 - informational: the summary is written without them
        return {}
    return {tag: scalars[tag][-1].value for tag in tags if scalars.get(tag)}


def _best_epoch(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - the summary must not fail over an informational field
        return None


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float | None], failed: bool) -> None:
    """Hyperparameters with real results, for TensorBoard's HParams tab (not `hp_metric=-1`).
    A diverged run's session ends as a failure, so the tab's status filter can leave it out."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    choices = HydraConfig.get().runtime.choices
    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        params = {
            "data": choices.get("data"),
            "optimizer": choices.get("optimizer"),
            "scheduler": choices.get("scheduler"),
            **{f"model.{k}": str(v) if isinstance(v, list) else v
               for k, v in _container(cfg.model).items() if not k.startswith("_")},
            **{f"optimizer.{k}": v for k, v in _container(cfg.optimizer).items()
               if not k.startswith("_") and isinstance(v, (int, float, str, bool))},
            "data.batch_size": cfg.data.batch_size,
            "trainer.precision": str(trainer.precision),
            "seed": cfg.seed,
        }
        params = {k: ("None" if v is None else v) for k, v in params.items()}
        results = {f"hparams/{k.replace('/', '_')}": v for k, v in metrics.items() if v is not None}
        # Session start/end only, no per-run experiment summary: TensorBoard then takes the union
        # of all runs' hyperparameters, so a sweep's HParams tab shows every swept column.
        logger.hparams.update(params)
        logger.log_metrics(results, step=0)
        _, start, end = hparams(params, results)
        writer = logger.experiment._get_file_writer()
        if failed:
            _mark_failed(end)
        writer.add_summary(start)
        writer.add_summary(end)
        logger.finalize("success")


def _mark_failed(end: Any) -> None:
    """torch's `hparams` always ends a session with STATUS_SUCCESS."""
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    plugin = end.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(plugin.content)
    data.session_end_info.status = Status.Value("STATUS_FAILURE")
    plugin.content = data.SerializeToString()


def _write_report(run_dir: Path) -> None:
    """PNG report of the run; a plotting problem must never fail a finished run."""
    from mlplab.inspect.report import write_report

    try:
        for path in write_report(run_dir):
            log.info("wrote %s", path)
    except Exception as err:  # noqa: BLE001
        log.warning("report not written: %s", err)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _print_summary(s: dict[str, Any], cfg: DictConfig) -> None:
    m = s["metrics"]

    def fmt(key: str) -> str:
        return "n/a" if m.get(key) is None else f"{m[key]:.4f}"

    monitor = next((k.removeprefix("best/") for k in m if k.startswith("best/")), None)

    lines = [
        f"status        {s['status']}" + (f" ({s['error']})" if s["error"] else ""),
        # Numbered as Lightning, TensorBoard and the checkpoints number them, so "best epoch 7" reads right.
        f"epochs run    {s['epochs']}" + (f", numbered 0–{s['epochs'] - 1}" if s["epochs"] > 1
                                             else " (epoch 0)" if s["epochs"] == 1 else "")
        + (" (stopped early)" if s["stopped_early"] else ""),
        # The checkpoint kept is chosen by its monitor (val/loss by default); val/acc_best is the
        # highest val/acc of any epoch, what sweeps rank by: not necessarily the same epoch's.
        f"best epoch    {'none' if s['best_epoch'] is None else s['best_epoch']}"
        + (f" (by {monitor} {fmt('best/' + monitor)})" if monitor else "")
        + f"  val/acc_best {fmt('val/acc_best')} (highest of any epoch)"
        if s.get("validation", True) else f"final epoch   {s['best_epoch']}  (data.val_size=0: no validation)",
        f"test          loss {fmt('test/loss')}  acc {fmt('test/acc')}",
        f"checkpoint    {s['best_checkpoint'] or 'none'}"
        + (f" (last: {s['last_checkpoint']})" if not s["best_checkpoint"] and s["last_checkpoint"] else ""),
        f"run dir       {s['run_dir']}",
        *([f"tensorboard   tensorboard --logdir {shlex.quote(s['run_dir'])}"]
          if (Path(s["run_dir"]) / "tensorboard").is_dir() else []),
        f"fit time      {s['fit_seconds']:.1f} s",
    ]
    print("\n".join(["", "== mlplab run summary ==", *lines]), flush=True)
