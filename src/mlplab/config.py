"""Validation of the composed config, before any data is loaded or file written.

Two layers: every key of a `_target_` node must be an argument of that target (so config and
code cannot drift, and a typo'd `+model.dropuot=0.2` names its close match), with the value
of the argument's default type; then the range rules a signature cannot express.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mlplab.models.classifier import LOSSES
from mlplab.models.mlp import ACTIVATIONS, INITS, NORMS

# What may choose: a checkpoint, early stopping, a schedule or a sweep's winner. Test metrics
# are reported, never chosen by.
VAL_METRICS = ("val/acc_best", "val/acc", "val/loss")
IMAGE_TRAIN_SIZE = 60_000
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """One line naming the key, the value and what is allowed."""


class ResumeRefused(ConfigError):
    """A resume that cannot go on, found once Lightning has restored the checkpoint but before
    the first step: nothing was trained, so the run is left (or removed) as it was."""


def _kwargs_taker(fn: Any) -> Any:
    """The one callable a target's `**kwargs` are passed on to, where it is known: Lightning's
    TensorBoardLogger hands them to its SummaryWriter."""
    from lightning.fabric.loggers import tensorboard

    if not (isinstance(fn, type) and issubclass(fn, tensorboard.TensorBoardLogger)):
        return None
    if tensorboard._TENSORBOARD_AVAILABLE:  # the writer it picks when it opens (its `experiment`)
        from torch.utils.tensorboard import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    return SummaryWriter


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={show(value)}: {allowed}")


def show(value: Any) -> str:
    """A config value as the user would write it in an override."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"  # as the user wrote it
    return repr(value) if isinstance(value, str) else str(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_signature(path: str, node: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Keys of a `_target_` node must be arguments of the target, values of the default's type."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        fn = get_method(target)
    except Exception as err:  # hydra wraps import errors in several types
        raise ConfigError(f"{path}._target_={target!r}: cannot be imported ({type(err).__name__})") from None
    params = dict(inspect.signature(fn).parameters)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    taker = _kwargs_taker(fn) if takes_kwargs else None
    if taker is not None:
        # Its extra keys go to `taker` only when the run starts: a typo there was a traceback mid-fit.
        more = inspect.signature(taker).parameters
        params = {k: p for k, p in {**params, **more}.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in more.values())
    for key, value in node.items():
        if key.startswith("_") or key in extra:
            continue
        if key not in params:
            if takes_kwargs:
                continue
            close = difflib.get_close_matches(key, [p for p in params if p != "self"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}.{key}: not an argument of {target}{hint}")
        default = params[key].default
        # Lists (per-layer values) are checked by the range rules below.
        if value is None or default in (inspect.Parameter.empty, None) or isinstance(value, ListConfig):
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                _fail(f"{path}.{key}", value, "expected true or false")
        elif isinstance(default, (int, float)) and not _is_number(value):
            _fail(f"{path}.{key}", value, "expected an integer" if isinstance(default, int) else "expected a float")


def _check_model(m: Mapping[str, Any]) -> None:
    sizes = m.get("hidden_sizes", [])
    if not isinstance(sizes, (list, ListConfig)) or not all(
        _is_int(s) and s > 0 for s in sizes
    ):
        _fail("model.hidden_sizes", sizes, "expected a list of positive integers, e.g. [256,128]")
    n = len(sizes)

    def per_layer(key: str, ok: Any, allowed: str) -> None:
        value = m.get(key)
        values = list(value) if isinstance(value, (list, ListConfig)) else [value]
        if isinstance(value, (list, ListConfig)) and len(values) != n:
            _fail(f"model.{key}", value, f"a per-layer list needs {n} {'entry' if n == 1 else 'entries'} (one per hidden layer)")
        for v in values:
            if not ok(v):
                _fail(f"model.{key}", value, allowed)

    per_layer("activation", lambda v: v in ACTIVATIONS, f"expected one of {', '.join(ACTIVATIONS)}")
    per_layer("dropout", lambda v: _is_number(v) and 0 <= v < 1, "expected a value in [0, 1)")
    for key, allowed in (("norm", NORMS), ("init", INITS), ("loss", LOSSES)):
        if m.get(key) not in allowed:
            _fail(f"model.{key}", m.get(key), f"expected one of {', '.join(allowed)}")
    for key in ("input_dropout", "label_smoothing"):
        if not (_is_number(m.get(key, 0)) and 0 <= m.get(key, 0) < 1):
            _fail(f"model.{key}", m.get(key), "expected a value in [0, 1)")
    for key in ("l1", "l2", "mixup_alpha"):
        if not (_is_number(m.get(key, 0)) and m.get(key, 0) >= 0):
            _fail(f"model.{key}", m.get(key), "expected a number ≥ 0")
    blocks = m.get("blocks", 0)
    if not (_is_int(blocks) and blocks >= 0):
        _fail("model.blocks", blocks, "expected an integer ≥ 0 (0: no residual blocks)")
    if blocks and not n:
        _fail("model.blocks", blocks, "residual blocks take the last hidden layer's width: give model.hidden_sizes at least one entry")
    members = m.get("members", 1)
    if not (_is_int(members) and members >= 1):
        _fail("model.members", members, "expected an integer ≥ 1 (1: a single MLP)")
    if m.get("max_norm") is not None and not (_is_number(m["max_norm"]) and m["max_norm"] > 0):
        _fail("model.max_norm", m["max_norm"], "expected null or a number > 0")
    if m.get("gradient_clip_val") is not None and not (_is_number(m["gradient_clip_val"]) and m["gradient_clip_val"] > 0):
        _fail("model.gradient_clip_val", m["gradient_clip_val"], "expected null or a number > 0")
    if m.get("ema_decay") is not None and not (_is_number(m["ema_decay"]) and 0 < m["ema_decay"] < 1):
        _fail("model.ema_decay", m["ema_decay"], "expected null or a value in (0, 1), e.g. 0.999")
    if m.get("gradient_clip_algorithm", "norm") not in ("norm", "value"):
        _fail("model.gradient_clip_algorithm", m.get("gradient_clip_algorithm"), "expected norm or value")
    if m.get("init") == "normal" and not (_is_number(m.get("init_std")) and m["init_std"] > 0):
        _fail("model.init_std", m.get("init_std"), "expected a number > 0")


def check_threads(value: Any) -> None:
    """`torch_threads` of train, eval and predict: null (torch's default) or a count."""
    if value is not None and not (_is_int(value) and value >= 1):
        _fail("torch_threads", value, "expected null (torch's default) or an integer ≥ 1")


def _check_seed(key: str, seed: Any) -> None:
    # Lightning's seed_everything and numpy accept [0, 2^32 - 1]; torch.Generator any int.
    if not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        _fail(key, seed, f"expected an integer in [0, {MAX_SEED}]")


def check_data(d: Mapping[str, Any]) -> None:
    """The `data` node (train, and `src/eval.py` with a data group named on its command line)."""
    check_signature("data", d)
    for key in ("batch_size", "batches_per_call"):
        if not (_is_int(d.get(key)) and d[key] > 0):
            _fail(f"data.{key}", d.get(key), "expected an integer > 0")
    if not (_is_int(d.get("val_size")) and d["val_size"] >= 0):
        _fail("data.val_size", d.get("val_size"), "expected an integer ≥ 0 (0: train on the whole training set)")
    if d.get("eval_batch_size") is not None and not (
        _is_int(d["eval_batch_size"]) and d["eval_batch_size"] > 0
    ):
        _fail("data.eval_batch_size", d["eval_batch_size"], "expected null or an integer > 0")
    _check_seed("data.seed", d.get("seed"))
    if "n_samples" in d:  # synthetic
        from mlplab.data.synthetic import KINDS

        if d.get("kind") not in KINDS:
            _fail("data.kind", d.get("kind"), f"expected one of {', '.join(KINDS)}")
        for key, low in (("n_classes", 2), ("n_features", 1), ("n_samples", 1), ("test_size", 1)):
            if not (isinstance(d.get(key), int) and d[key] >= low):
                _fail(f"data.{key}", d.get(key), f"expected an integer ≥ {low}")
        if d["test_size"] >= d["n_samples"]:
            _fail("data.test_size", d["test_size"], f"must be smaller than data.n_samples={d['n_samples']}")
        if not _is_number(d.get("separability", 0.5)):
            _fail("data.separability", d.get("separability"), "expected a number")
        train = d["n_samples"] - d["test_size"]
        if d["val_size"] >= train:
            _fail("data.val_size", d["val_size"],
                  f"must be smaller than the {train} samples left after data.test_size")
    else:
        if not (isinstance(d.get("data_dir"), str) and d["data_dir"]):
            _fail("data.data_dir", d.get("data_dir"), "expected the path of the data root, e.g. data")
        if d["val_size"] >= IMAGE_TRAIN_SIZE:
            _fail("data.val_size", d["val_size"], f"must be smaller than the {IMAGE_TRAIN_SIZE}-image training set")
        if not _is_number(d.get("mean", 0.0)):
            _fail("data.mean", d.get("mean"), "expected a number")
        if not (_is_number(d.get("std", 1)) and d.get("std", 1) > 0):
            _fail("data.std", d.get("std"), "expected a number > 0")
        _check_augment(d.get("augment") or {})
        _check_tta(d.get("tta") or {})


def _check_augment(a: Mapping[str, Any]) -> None:
    if not isinstance(a, (Mapping, DictConfig)):
        _fail("data.augment", a, "expected a mapping of augmentation settings, e.g. {shift: 2}")
    check_signature("data.augment", {"_target_": "mlplab.data.augment.Augment", **a})
    if not (isinstance(a.get("shift", 0), int) and 0 <= a.get("shift", 0) <= 8):
        _fail("data.augment.shift", a.get("shift"), "expected an integer in [0, 8]")
    for key, high in (("rotate", 180), ("shear", 60)):
        if not (_is_number(a.get(key, 0)) and 0 <= a.get(key, 0) <= high):
            _fail(f"data.augment.{key}", a.get(key), f"expected degrees in [0, {high}]")
    if not (_is_number(a.get("scale", 0)) and 0 <= a.get("scale", 0) < 1):
        _fail("data.augment.scale", a.get("scale"), "expected a value in [0, 1)")
    if not (_is_number(a.get("elastic_alpha", 0)) and a.get("elastic_alpha", 0) >= 0):
        _fail("data.augment.elastic_alpha", a.get("elastic_alpha"), "expected a number ≥ 0 (pixels)")
    if not (_is_number(a.get("erase", 0)) and 0 <= a.get("erase", 0) <= 1):
        _fail("data.augment.erase", a.get("erase"), "expected a probability in [0, 1]")
    # Beyond the image's width the smoothed field is one uniform shift (and its kernel huge).
    if not (_is_number(a.get("elastic_sigma", 4.0)) and 0 < a.get("elastic_sigma", 4.0) <= 28):
        _fail("data.augment.elastic_sigma", a.get("elastic_sigma"), "expected a number in (0, 28] (pixels)")


def _check_tta(t: Mapping[str, Any]) -> None:
    if not isinstance(t, (Mapping, DictConfig)):
        _fail("data.tta", t, "expected a mapping of test-time views, e.g. {shift: 1}")
    check_signature("data.tta", {"_target_": "mlplab.data.augment.TestViews", **t})
    shift = t.get("shift", 0)
    if not (_is_int(shift) and 0 <= shift <= 8):
        _fail("data.tta.shift", shift, "expected an integer in [0, 8]")


def _check_optimizer(o: Mapping[str, Any]) -> None:
    # torch checks these only when the optimizer is built, with a traceback after the run
    # directory exists; its own ranges.
    if not (_is_number(o.get("lr")) and o["lr"] > 0):
        _fail("optimizer.lr", o.get("lr"), "expected a number > 0")
    for key in ("weight_decay", "momentum", "eps", "alpha", "lr_decay", "dampening"):
        if key in o and not (_is_number(o[key]) and o[key] >= 0):
            _fail(f"optimizer.{key}", o[key], "expected a number ≥ 0")
    if "rho" in o and not (_is_number(o["rho"]) and 0 <= o["rho"] <= 1):
        _fail("optimizer.rho", o["rho"], "expected a number in [0, 1]")
    # torch reads any string as true (fused="maybe" ran fused).
    for key in ("nesterov", "amsgrad", "fused", "foreach", "maximize", "capturable", "differentiable", "centered",
                "decoupled_weight_decay"):
        if o.get(key) is not None and not isinstance(o[key], bool):
            _fail(f"optimizer.{key}", o[key], "expected true or false" + (" (or null: torch chooses)"
                                                                          if key in ("fused", "foreach") else ""))
    if o.get("nesterov") and not (o.get("momentum", 0) > 0 and o.get("dampening", 0) == 0):
        _fail("optimizer.nesterov", True, f"needs optimizer.momentum > 0 and optimizer.dampening=0 (momentum "
              f"{o.get('momentum', 0)}, dampening {o.get('dampening', 0)})")
    betas = o.get("betas", (0.9, 0.999))
    if not (isinstance(betas, (list, tuple, ListConfig)) and len(betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        _fail("optimizer.betas", betas, "expected two numbers in [0, 1), e.g. [0.9,0.999]")


def _check_schedule(s: Mapping[str, Any]) -> None:
    """torch's ranges for the shipped schedules' arguments: checked only once the schedule is
    built, and StepLR's step_size=0 ended in a ZeroDivisionError at the first epoch."""
    name = str(s.get("_target_", "")).rsplit(".", 1)[-1]
    positive_ints = {"StepLR": ("step_size",), "CosineAnnealingLR": ("T_max",), "OneCycleLR": ("total_steps",)}
    for key in positive_ints.get(name, ()):
        if s.get(key) is not None and not (_is_int(s[key]) and s[key] >= 1):
            _fail(f"scheduler.scheduler.{key}", s[key], "expected an integer ≥ 1")
    for key in ("gamma", "div_factor", "final_div_factor"):
        if key in s and not (_is_number(s[key]) and s[key] > 0):
            _fail(f"scheduler.scheduler.{key}", s[key], "expected a number > 0")
    if "factor" in s and not (_is_number(s["factor"]) and 0 < s["factor"] < 1):
        _fail("scheduler.scheduler.factor", s["factor"], "expected a number in (0, 1): the learning rate's cut")
    if "pct_start" in s and not (isinstance(s["pct_start"], float) and 0 <= s["pct_start"] <= 1):
        _fail("scheduler.scheduler.pct_start", s["pct_start"], "expected a float in [0, 1] (torch refuses 1; write 1.0)")
    for key in ("patience", "cooldown"):
        if key in s and not (_is_int(s[key]) and s[key] >= 0):
            _fail(f"scheduler.scheduler.{key}", s[key], "expected an integer ≥ 0")
    if "eta_min" in s and not (_is_number(s["eta_min"]) and s["eta_min"] >= 0):
        _fail("scheduler.scheduler.eta_min", s["eta_min"], "expected a number ≥ 0")
    if "max_lr" in s and not (_is_number(s["max_lr"]) and s["max_lr"] > 0):
        _fail("scheduler.scheduler.max_lr", s["max_lr"], "expected a number > 0 (the peak learning rate)")
    if "anneal_strategy" in s and s["anneal_strategy"] not in ("cos", "linear"):
        _fail("scheduler.scheduler.anneal_strategy", s["anneal_strategy"], "expected cos or linear")
    for key in ("three_phase", "cycle_momentum"):
        if key in s and not isinstance(s[key], bool):
            _fail(f"scheduler.scheduler.{key}", s[key], "expected true or false")


def _check_cycled_momentum(o: Mapping[str, Any], s: Mapping[str, Any], resumed: bool = False) -> None:
    """OneCycleLR's `cycle_momentum` (torch's default) sets the optimizer's momentum, or
    Adam's beta1, at every step: an optimizer without either (Adagrad, Adadelta) failed with a
    traceback once the run had started, and plain SGD or RMSprop (momentum 0) silently trained
    with momentum 0.85-0.95."""
    target = str(o.get("_target_", ""))
    try:
        params = inspect.signature(get_method(target)).parameters
    except Exception:  # noqa: BLE001 - not importable: check_signature has named it
        return
    cycle = f"{s.get('base_momentum', 0.85)}-{s.get('max_momentum', 0.95)}"
    off = "+scheduler.scheduler.cycle_momentum=false"
    if "momentum" not in params and "betas" not in params:
        _fail("scheduler.scheduler.cycle_momentum", True, f"{target.rsplit('.', 1)[-1]} has no momentum for "
              f"OneCycleLR to cycle; set {off}")
    momentum = o.get("momentum", params["momentum"].default if "momentum" in params else None)
    if "betas" not in params and momentum == 0 and not resumed:
        _fail("optimizer.momentum", momentum, f"OneCycleLR would replace it at every step, cycling it over {cycle} "
              f"(cycle_momentum); set {off} to train without momentum")


def _precisions() -> tuple[str, ...]:
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )

    return (*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS))


# Lightning's lr_scheduler config keys beside the scheduler itself (`_step_schedulers` reads them).
SCHEDULER_KEYS = ("scheduler", "interval", "frequency", "monitor", "strict", "name")


def _check_scheduler_keys(node: Any) -> None:
    """The scheduler group's own keys: Lightning's config took an unknown one with a TypeError
    mid-run, and frequency=0 divided by zero at the first step."""
    if not isinstance(node, (Mapping, DictConfig)):
        return
    for key in node:
        if key not in SCHEDULER_KEYS:
            close = difflib.get_close_matches(str(key), SCHEDULER_KEYS, n=1)
            _fail(f"scheduler.{key}", node[key], f"not a key of the scheduler group (its keys: {', '.join(SCHEDULER_KEYS)})"
                  + (f"; did you mean scheduler.{close[0]}?" if close else ""))
    if not node.get("scheduler") and (given := [k for k in node if node[k] is not None]):
        _fail(f"scheduler.{given[0]}", node[given[0]], "has no effect without a schedule; choose one first "
              "(scheduler=cosine, onecycle, step or plateau)")
    frequency = node.get("frequency")
    if frequency is not None and not (_is_int(frequency) and frequency >= 1):
        _fail("scheduler.frequency", frequency, "expected an integer ≥ 1 (step the schedule every N intervals)")
    if node.get("strict") is not None and not isinstance(node["strict"], bool):
        _fail("scheduler.strict", node["strict"], "expected true or false")


def _check_trainer(t: Mapping[str, Any]) -> None:
    from mlplab.cli import MOVED_KEYS

    # Added with +, these were passed to the Trainer and silently replaced by train()'s own.
    for key in ("enable_checkpointing", "enable_progress_bar", "enable_model_summary", "logger", "callbacks", "plugins"):
        if key in t:
            _fail(f"trainer.{key}", t[key], MOVED_KEYS[f"trainer.{key}"])
    precision = t.get("precision")
    if precision is not None and str(precision) not in _precisions():
        _fail("trainer.precision", precision, f"expected one of {', '.join(_precisions())}")
    # Classifier steps its optimizer itself (several batches per Lightning call), where
    # Lightning's own clipping and accumulation do not apply.
    if t.get("gradient_clip_val"):
        _fail("trainer.gradient_clip_val", t["gradient_clip_val"],
              "clipping is a model setting here: use model.gradient_clip_val (and model.gradient_clip_algorithm)")
    if t.get("accumulate_grad_batches", 1) != 1:
        _fail("trainer.accumulate_grad_batches", t["accumulate_grad_batches"],
              "not supported (the classifier steps its optimizer itself); use a larger data.batch_size")
    # Lightning takes 0 as "skip the loop": a fit that trains nothing was reported as completed
    # (testing the untrained network), and one without validation crashed in early stopping.
    if t.get("limit_train_batches") is not None and t["limit_train_batches"] == 0:
        _fail("trainer.limit_train_batches", 0, "expected > 0 (0 trains nothing)")
    if t.get("limit_val_batches") is not None and t["limit_val_batches"] == 0:
        _fail("trainer.limit_val_batches", 0, "expected > 0 (early stopping and the best checkpoint need "
              "validation); data.val_size=0 trains without a validation split")
    # Lightning refuses these only once the Trainer is built (a Hydra error of 7-9 lines and a
    # failed run folder), or not at all (check_val_every_n_epoch=0 divides by zero in epoch 0).
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = t.get(key)
        if value is not None and not (_is_int(value) and value >= 0 or _is_number(value) and 0 <= value <= 1):
            _fail(f"trainer.{key}", value, "expected a fraction in [0, 1] or a number of batches ≥ 1")
    for key, least in (("check_val_every_n_epoch", 1), ("num_nodes", 1), ("log_every_n_steps", 1),
                       ("num_sanity_val_steps", -1), ("min_epochs", 0), ("min_steps", 0), ("max_steps", -1)):
        value = t.get(key)
        if value is not None and not (_is_int(value) and value >= least):
            _fail(f"trainer.{key}", value, f"expected an integer ≥ {least}"
                  + (" (-1: no limit)" if key == "max_steps" else " (-1: all)" if key == "num_sanity_val_steps" else ""))
    if t.get("max_steps") == 0:
        _fail("trainer.max_steps", 0, "expected -1 (no limit) or ≥ 1 (0 trains nothing)")
    # Lightning lets the maximum win without a word, so a run asked to train at least N epochs stops sooner.
    for least, most in (("min_epochs", "max_epochs"), ("min_steps", "max_steps")):
        low, high = t.get(least), t.get(most)
        if _is_int(low) and _is_int(high) and high >= 1 and low > high:
            _fail(f"trainer.{least}", low, f"expected ≤ trainer.{most} ({high})")
    interval = t.get("val_check_interval")
    if interval is not None and not (_is_int(interval) and interval >= 1 or _is_number(interval) and 0 < interval <= 1):
        _fail("trainer.val_check_interval", interval, "expected a fraction of an epoch in (0, 1] or a number of "
              "training batches ≥ 1")
    _check_devices(t)


def _check_devices(t: Mapping[str, Any]) -> None:
    """Names Lightning knows, and a device count it can use."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    accelerator = t.get("accelerator")
    accelerators = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    if isinstance(accelerator, str) and accelerator not in accelerators:
        close = difflib.get_close_matches(accelerator, accelerators, n=1)
        _fail("trainer.accelerator", accelerator, f"expected one of {', '.join(accelerators)}"
              + (f"; did you mean {close[0]}?" if close else ""))
    strategy = t.get("strategy")
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if isinstance(strategy, str) and strategy not in strategies:
        close = difflib.get_close_matches(strategy, strategies, n=1)
        _fail("trainer.strategy", strategy, "not a strategy Lightning knows (e.g. auto, ddp)"
              + (f"; did you mean {close[0]}?" if close else ""))
    devices = t.get("devices")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, ListConfig)):
        ok = len(devices) > 0 and all(_is_int(d) and d >= 0 for d in devices)
    elif isinstance(devices, str):
        ok = devices == "auto" or all(p.strip().isdigit() for p in devices.split(",") if p.strip())
    else:
        ok = devices is None or _is_int(devices) and (devices >= 1 or devices == -1)
    if not ok:
        _fail("trainer.devices", t.get("devices"), "expected auto, a count ≥ 1 (-1: all), or a list of device "
              "indices")


def _direction(metric: Any) -> str | None:
    """max for an accuracy, min for a loss: which way a monitored metric improves."""
    return {"acc": "max", "loss": "min"}.get(str(metric or "").rsplit("/", 1)[-1].split("_")[0])


def _check_callbacks(c: Mapping[str, Any]) -> None:
    for name, node in c.items():
        if not isinstance(node, (Mapping, DictConfig)):
            continue
        check_signature(f"callbacks.{name}", node)
        if "mode" in node and node["mode"] not in ("min", "max"):
            _fail(f"callbacks.{name}.mode", node["mode"], "expected min or max")
        if "monitor" in node and node["monitor"] not in VAL_METRICS:
            _fail(f"callbacks.{name}.monitor", node["monitor"],
                  f"expected one of {', '.join(VAL_METRICS)} (the test set chooses nothing)")
        direction = _direction(node.get("monitor"))
        if direction and node.get("mode", direction) != direction:
            # Otherwise the worst epoch is kept as best.ckpt and tested, and early stopping
            # stops while the metric still improves.
            better = "higher" if direction == "max" else "lower"
            _fail(f"callbacks.{name}.mode", node.get("mode"), f"{node['monitor']} is better when {better}: expected {direction}")
        if "min_delta" in node and not (_is_number(node["min_delta"]) and node["min_delta"] >= 0):
            # Negative, a worse value would count as an improvement.
            _fail(f"callbacks.{name}.min_delta", node["min_delta"], "expected a number ≥ 0 (the least change that "
                  "counts as an improvement)")
        if "patience" in node and not (isinstance(node["patience"], int) and node["patience"] >= 0):
            _fail(f"callbacks.{name}.patience", node["patience"], "expected an integer ≥ 0")
        if "max_depth" in node and not (_is_int(node["max_depth"]) and node["max_depth"] >= -1):
            # Lightning's ModelSummary refused it only once the fit had started, with a traceback.
            _fail(f"callbacks.{name}.max_depth", node["max_depth"], "expected an integer ≥ -1 (-1: every layer, 0: none)")
        if node.get("every_n_epochs") is not None and not (_is_int(node["every_n_epochs"]) and node["every_n_epochs"] >= 0):
            _fail(f"callbacks.{name}.every_n_epochs", node["every_n_epochs"], "expected an integer ≥ 0 (0: never)")
        filename = node.get("filename")
        # Checkpoint names must stay inside checkpoints/: no separators, no parent references.
        if filename is not None and ("/" in str(filename) or "\\" in str(filename) or ".." in str(filename)):
            _fail(f"callbacks.{name}.filename", filename, "a file name without '/', '\\' or '..'")
        top_k = node.get("save_top_k")
        if top_k not in (None, 0, 1) and "{" not in str(filename or "{"):
            # One name for every kept checkpoint: each epoch replaced the last, and the last
            # epoch, not the best, was tested as "best".
            _fail(f"callbacks.{name}.save_top_k", top_k, f"every kept checkpoint would be the one file {filename}.ckpt; "
                  f"keep 1, or name them apart, e.g. callbacks.{name}.filename='{filename}-{{epoch}}'")


# Strategies whose launcher re-runs `sys.argv` for each rank: inside a Hydra multirun every
# rank would start the whole sweep again (Lightning issue #11300). `auto` becomes DDP with more
# than one device; `devices: auto` on a multi-GPU machine is caught once the trainer is built
# (`training.refuse_relaunch`).
_RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false",
                           "fsdp", "deepspeed")
RELAUNCH_ADVICE = ("cannot run inside a Hydra multirun (Lightning relaunches each rank from the command "
                   "line, issue #11300); run the grid with hydra/launcher=submitit_slurm (one job per "
                   "node, DDP inside the job) or as separate single runs")


# Lightning's strategies whose ranks are new processes (`_MultiProcessingLauncher`): they send
# back the weights, the best checkpoint's path and the metrics, nothing else, so the summary
# would get the epoch count, early stopping, divergence and a resume's step wrong.
_SPAWNING_STRATEGY_PREFIXES = ("ddp_spawn", "ddp_fork", "ddp_notebook")
SPAWN_ADVICE = ("ranks started as new processes do not report the run's state (epochs, early stopping, "
                "divergence) back to the summary; use trainer=ddp (strategy=ddp), and in a multirun "
                "hydra/launcher=submitit_slurm or separate single runs")


def launcher_relaunches(launcher_target: Any) -> bool:
    """Whether DDP inside a job of this Hydra launcher would relaunch the job's script per rank
    (repeating the sweep). Under SLURM, srun starts every rank and Lightning launches nothing;
    submitit_local and the local launchers have no such environment."""
    return "SlurmLauncher" not in str(launcher_target or "")


def _several_devices(t: Mapping[str, Any]) -> bool:
    devices, nodes = t.get("devices", 1), t.get("num_nodes", 1)
    if isinstance(nodes, int) and nodes > 1:
        return True
    if isinstance(devices, (list, ListConfig)):
        return len(devices) > 1
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    return isinstance(devices, int) and (devices > 1 or devices == -1)


def _device_available(accelerator: str) -> bool:
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

    return {
        "gpu": lambda: CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available,
        "mps": MPSAccelerator.is_available,
        "tpu": XLAAccelerator.is_available,
    }.get(accelerator, lambda: True)()


def check_sweeper(cfg: DictConfig, sweeper: Mapping[str, Any]) -> None:
    """An Optuna study optimises a validation metric; without a validation split it would have
    nothing to choose by (the test set must not choose), so every trial would fail. Its
    direction must be the metric's: maximising val/loss reports the worst trial as best."""
    if "optuna" not in str(sweeper.get("_target_", "")):
        return
    metric = cfg.get("optimized_metric")
    if cfg.data.get("val_size") == 0:
        _fail("data.val_size", 0, f"the Optuna sweeper optimises {metric}, and without a "
              "validation split there is nothing to choose by (the test set must not choose)")
    direction = sweeper.get("direction")
    direction = getattr(direction, "name", direction)  # the plugin's default is its Direction enum
    if direction not in ("minimize", "maximize"):
        _fail("hydra.sweeper.direction", direction, "expected minimize or maximize")
    better = _direction(metric)
    if better and direction != better + "imize":
        _fail("hydra.sweeper.direction", direction,
              f"optimized_metric={metric} is better when {'higher' if better == 'max' else 'lower'}: "
              f"expected {better}imize")


def validate(cfg: DictConfig, multirun: bool = False, here: bool = True) -> None:
    """Raise `ConfigError` for the first invalid key of the composed config. `multirun`: in a
    sweep whose launcher relaunches (see `launcher_relaunches`). `here`: the run will execute
    on this machine, so its accelerator must exist here (not so for a SLURM sweep's jobs,
    submitted from a login node)."""
    try:
        _validate(cfg, multirun)
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        if here and not _device_available(accelerator):
            _fail("trainer.accelerator", accelerator, "no such device on this machine; use trainer=cpu, "
                  "or trainer.accelerator=auto to take a GPU where there is one")
    except InterpolationResolutionError as err:
        # e.g. callbacks.early_stopping=null: model_checkpoint.monitor is ${..early_stopping.monitor}.
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: cannot be resolved ({str(err).splitlines()[0]}); set it directly") from None


def _validate(cfg: DictConfig, multirun: bool) -> None:
    _check_seed("seed", cfg.get("seed"))  # first: data.seed follows it, and would be named instead
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) and strategy.startswith(_SPAWNING_STRATEGY_PREFIXES):
        _fail("trainer.strategy", strategy, SPAWN_ADVICE)
    if multirun:
        strategy = cfg.trainer.get("strategy")
        if strategy in _RELAUNCHING_STRATEGIES:
            _fail("trainer.strategy", strategy, RELAUNCH_ADVICE)
        if strategy in (None, "auto") and _several_devices(cfg.trainer):
            _fail("trainer.devices", cfg.trainer.get("devices"),
                  f"more than one device (trainer.num_nodes={cfg.trainer.get('num_nodes', 1)}) means DDP, which "
                  + RELAUNCH_ADVICE)
    check_signature("model", cfg.model, extra=())
    _check_model(cfg.model)
    precision = str(cfg.trainer.get("precision"))
    if cfg.model.get("ema_decay") is not None and precision in ("bf16-true", "16-true"):
        # The average moves by (1 - decay) of its gap to the live weights a step: at 8 or 11
        # bits of mantissa that rounds to nothing, and evaluation would run a frozen early net.
        _fail("model.ema_decay", cfg.model.ema_decay, f"the weight average cannot move in {precision}'s 16-bit "
              f"weights; use trainer.precision={precision.replace('true', 'mixed')}")
    check_data(cfg.data)
    check_signature("optimizer", cfg.optimizer)
    _check_optimizer(cfg.optimizer)
    _check_scheduler_keys(cfg.get("scheduler"))
    if cfg.get("scheduler") and cfg.scheduler.get("scheduler"):
        check_signature("scheduler.scheduler", cfg.scheduler.scheduler)
        _check_schedule(cfg.scheduler.scheduler)
        monitor = cfg.scheduler.get("monitor")
        if monitor is not None and monitor not in VAL_METRICS:
            _fail("scheduler.monitor", monitor,
                  f"expected one of {', '.join(VAL_METRICS)} (logged every epoch; the test set chooses nothing)")
        direction = _direction(monitor)
        plateau = str(cfg.scheduler.scheduler.get("_target_", "")).endswith("ReduceLROnPlateau")
        mode = cfg.scheduler.scheduler.get("mode", "min" if plateau else None)  # torch's default
        if direction and mode in ("min", "max") and mode != direction:
            # ReduceLROnPlateau would cut the learning rate while accuracy still improves.
            _fail("scheduler.scheduler.mode", mode,
                  f"{monitor} is better when {'higher' if direction == 'max' else 'lower'}: expected {direction}")
        if cfg.data.val_size == 0 and monitor is not None and str(monitor).startswith("val/"):
            _fail("scheduler.monitor", monitor, "needs a validation split, and data.val_size=0 has none; "
                  "use a schedule that needs no metric (scheduler=onecycle, cosine or step)")
        target = str(cfg.scheduler.scheduler.get("_target_", ""))
        sized = {"OneCycleLR": "total_steps", "CosineAnnealingLR": "T_max"}.get(target.rsplit(".", 1)[-1])
        if target.endswith("OneCycleLR") and cfg.scheduler.scheduler.get("cycle_momentum", True) is not False:
            # A resume keeps the schedule it was trained with (a changed one is refused).
            _check_cycled_momentum(cfg.optimizer, cfg.scheduler.scheduler, resumed=bool(cfg.get("ckpt_path")))
        interval = cfg.scheduler.get("interval", "epoch")
        if sized and cfg.scheduler.scheduler.get(sized) is None and cfg.trainer.get("max_epochs") == -1:
            # Stepped once an epoch, it is sized in epochs: with max_steps alone cosine's T_max
            # was 1, and the learning rate alternated between lr and eta_min every epoch.
            if interval == "epoch":
                _fail("trainer.max_epochs", -1, f"{target.rsplit('.', 1)[-1]} steps once an epoch and needs the "
                      "number of epochs: set trainer.max_epochs (or scheduler.interval=step with +trainer.max_steps)")
            if (cfg.trainer.get("max_steps") or -1) <= 0:
                _fail("trainer.max_epochs", -1, f"{target.rsplit('.', 1)[-1]} needs the length of the fit: "
                      "set trainer.max_epochs (or +trainer.max_steps)")
        if interval not in ("epoch", "step"):
            _fail("scheduler.interval", interval, "expected epoch or step")
        if plateau and interval == "step":
            # Stepped after every optimizer step, it read a metric no validation had logged yet.
            _fail("scheduler.interval", interval, "ReduceLROnPlateau steps on a validation metric, once a "
                  "validation: expected epoch")
    check_signature("trainer", cfg.trainer)
    _check_trainer(cfg.trainer)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and not (isinstance(max_epochs, int) and (max_epochs >= 1 or max_epochs == -1)):
        _fail("trainer.max_epochs", max_epochs, "expected an integer ≥ 1 (or -1 for no limit)")
    _check_callbacks(cfg.get("callbacks") or {})
    for name, node in (cfg.get("logger") or {}).items():
        check_signature(f"logger.{name}", node)
    if cfg.get("optimized_metric") not in VAL_METRICS:
        _fail("optimized_metric", cfg.get("optimized_metric"),
              f"expected one of {', '.join(VAL_METRICS)} (the test set chooses nothing)")
    check_threads(cfg.get("torch_threads"))
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not (isinstance(ckpt, str) and ckpt.strip()):
        _fail("ckpt_path", ckpt, "expected the path of a checkpoint to continue from, or null to start afresh")
    # A string such as `test=no` would read as true where the code asks `if cfg.test`.
    for key in ("flush_denormal", "test", "report"):
        if not isinstance(cfg.get(key, True), bool):
            _fail(key, cfg.get(key), "expected true or false")
    if not (isinstance(cfg.get("deterministic", False), bool) or cfg.get("deterministic") == "warn"):
        _fail("deterministic", cfg.get("deterministic"), "expected true, false or warn (Lightning's deterministic)")
