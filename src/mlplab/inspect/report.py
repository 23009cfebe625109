"""`write_report(run_dir)`: curves.png, confusion_matrix.png and misclassified.png of a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from mlplab.inspect.events import CURVE_TAGS, ReportError, epoch_curves, event_files, read_scalars
from mlplab.inspect.plots import (
    confusion_figure,
    curves_figure,
    misclassified_figure,
    most_confident_mistakes,
    save_png,
)
from mlplab.sweeps.jobs import find_job_dirs

log = logging.getLogger(__name__)
SPLIT_NAMES = {"val": "validation", "test": "test"}
N_MISCLASSIFIED = 24


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("%s: unreadable, curves drawn without best epoch / early-stop marks", path)
        return {}


def _run_name(run_dir: Path) -> str:
    # outputs/runs/<date>/<time> reads best as "<date>/<time>"; a custom dir as its own name.
    return "/".join(run_dir.resolve().parts[-2:])


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's saved config, unresolved (only literal values are used)."""
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        return cfg if isinstance(cfg, dict) else {}
    except Exception:  # noqa: BLE001 - a run dir copied without .hydra still gets its curves
        return {}


def _describe(cfg: dict[str, Any]) -> str:
    """e.g. "MNIST, MLP [256, 128] relu, Adam lr=0.001"."""
    def target(node: Any) -> str:
        return str(node.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(node, dict) else ""

    parts = []
    if data := target(cfg.get("data")).removesuffix("DataModule"):
        parts.append(data)
    model = cfg.get("model") or {}
    if "hidden_sizes" in model:
        k = model.get("members", 1)
        members = f" ×{k}" if isinstance(k, int) and k > 1 else ""
        b = model.get("blocks", 0)
        blocks = f" +{b} residual blocks" if isinstance(b, int) and b > 0 else ""
        parts.append(f"MLP {model['hidden_sizes']}{blocks} {model.get('activation', '')}{members}".strip())
    opt = cfg.get("optimizer") or {}
    if name := target(opt):
        parts.append(f"{name} lr={opt['lr']}" if "lr" in opt else name)
    return ", ".join(str(p) for p in parts)


def _best_checkpoint(run_dir: Path, summary: dict[str, Any]) -> Path | None:
    # The run dir's own first: a copied or moved run's summary still names the old place.
    given = summary.get("best_checkpoint")
    for path in (run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "final.ckpt",
                 Path(given) if given else None):
        if path is not None and path.is_file():
            return path
    return None


def _curves_subtitle(summary: dict[str, Any], stopped: bool) -> str:
    m = summary.get("metrics") or {}
    parts = []
    if summary.get("epochs") is not None:
        parts.append(f"{summary['epochs']} epochs" + (" (stopped early)" if stopped else ""))
    if m.get("val/acc_best") is not None:
        parts.append(f"best val acc {m['val/acc_best']:.2%}")
    if m.get("test/acc") is not None:
        validated = summary.get("validation", m.get("val/acc_best") is not None)  # absent from early summaries
        which = "best" if validated else "final"
        parts.append(f"test acc {m['test/acc']:.2%} ({which} checkpoint)")
    return ", ".join(parts)


def _stopped_early(run_dir: Path, summary: dict[str, Any]) -> bool:
    """summary.json's flag; a summary without one (an early version's) is guessed from a
    completed run that ended before trainer.max_epochs with no step or time limit set."""
    if "stopped_early" in summary:
        return bool(summary["stopped_early"])
    if summary.get("status") != "completed" or not isinstance(summary.get("epochs"), int):
        return False
    try:
        trainer = _config(run_dir)["trainer"]
        max_epochs = trainer["max_epochs"]
    except (KeyError, TypeError):  # without the config there is nothing to compare with
        return False
    if trainer.get("max_steps") not in (None, -1) or trainer.get("max_time") is not None:
        return False  # those limits end runs early too
    return isinstance(max_epochs, int) and 0 < summary["epochs"] < max_epochs


def _curves_figure(run_dir: Path, summary: dict[str, Any]) -> Figure:
    files = event_files(run_dir)
    if not files:
        raise ReportError(
            f"{run_dir}: no TensorBoard event files (events.out.tfevents.*) in this directory; "
            "is it a run directory trained with logger=tensorboard?"
        )
    scalars = read_scalars(files)
    curves = epoch_curves(scalars)
    if not any(curves.values()):
        # A truncated event file reads as one that ends early: an empty figure would pass for a report.
        tags = sorted(t for t in scalars if t != "epoch")
        status = summary.get("status")
        if status in ("diverged", "failed"):
            raise ReportError(f"{run_dir}: the run {status} before its first epoch's figures, so there are no "
                              f"curves to plot; its summary.json: {summary.get('error') or 'no error recorded'}")
        raise ReportError(f"{run_dir}: none of {', '.join(CURVE_TAGS)} in its TensorBoard event files "
                          f"(truncated?); tags logged: {', '.join(tags) or 'none'}")
    epochs = [e for tag in curves.values() for e, _ in tag]
    stopped = _stopped_early(run_dir, summary)
    stop = max(epochs) if stopped and epochs else None
    desc = _describe(_config(run_dir))
    title = f"run {_run_name(run_dir)}" + (f": {desc}" if desc else "")
    # A final fit (data.val_size=0) chose no epoch: its best_epoch is just the last.
    best = summary.get("best_epoch") if summary.get("validation", True) else None
    return curves_figure(curves, best, stop, title, _curves_subtitle(summary, stopped))


def _trained_data_dir(run_dir: Path, data: dict[str, Any]) -> str | None:
    """A relative `data_dir` as training read it: from the folder training ran in (Hydra's
    `runtime.cwd`), not from wherever inspect runs."""
    stored = data.get("data_dir")
    if not isinstance(stored, str) or Path(stored).is_absolute():
        return None
    try:
        import yaml

        cwd = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["cwd"]
    except Exception:  # noqa: BLE001 - without it the path stays relative to here
        return None
    return str(Path(cwd) / stored) if isinstance(cwd, str) and (Path(cwd) / stored).is_dir() else None


def _checkpoint_figures(run_dir: Path, ckpt: Path, split: str | None = None,
                        data_dir: str | None = None) -> list[tuple[str, Figure]]:
    """(file name, figure): the confusion matrix and, for image data, the most confidently
    misclassified images, of the best checkpoint on `split`."""
    from mlplab import checkpoints
    from mlplab.evaluation import confusion_matrix, split_outputs

    loaded = checkpoints.load(ckpt)
    dm = checkpoints.build_datamodule(ckpt, loaded.data, data_dir or _trained_data_dir(run_dir, loaded.data))
    if split is None:  # the default: validation, or test for a run that held nothing out
        split = "val" if dm.has_validation else "test"
    elif split == "val" and not dm.has_validation:
        raise ReportError(f"--split val: {run_dir} was trained on the whole training set (data.val_size=0), so it "
                          "has no validation split; use --split test")
    dm.setup()
    probs_t, y_t, _ = split_outputs(loaded.model, dm, split)
    probs, y = probs_t.numpy(), y_t.numpy()
    names = loaded.class_names
    where = f"{ckpt.name} (epoch {loaded.epoch}) on the {SPLIT_NAMES[split]} split"
    cm = confusion_matrix(probs_t.argmax(1), y_t, len(names))
    figures = [("confusion_matrix.png", confusion_figure(cm, names, f"Confusion matrix: {where}"))]
    if dm.image_shape is None:
        log.info("%s: no images (synthetic data), misclassified.png skipped", run_dir)
        return figures
    idx = most_confident_mistakes(probs, y, N_MISCLASSIFIED)
    pred = probs.argmax(1)
    images = dm.splits[split][0][idx].cpu().numpy()
    n_wrong = int((pred != y).sum())
    title = f"Most confidently misclassified: {where} ({len(idx)} of {n_wrong} errors)"
    fig = misclassified_figure(images, y[idx].tolist(), pred[idx].tolist(), probs[idx, pred[idx]].tolist(), names, title)
    figures.append(("misclassified.png", fig))
    return figures


def write_report(run_dir: Path, split: str | None = None, data_dir: str | None = None) -> list[Path]:
    """Write the report PNGs into `run_dir` and return their paths: curves.png from the event
    files, the confusion matrix and misclassified images from the best checkpoint, each when
    its source is there. Raises `ReportError` when there is neither, or when the event files
    hold no curve."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: " + ("a file, not a run directory" if run_dir.exists() else "no such run directory"))
    if split is not None and split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_NAMES)}, not {split!r}")
    jobs = [d for d in find_job_dirs(run_dir) if d != run_dir]
    if jobs:
        # A sweep folder: its jobs' event files would be drawn as one run's curves.
        sweep = (run_dir / "multirun.yaml").is_file() or (run_dir / "leaderboard.png").is_file()
        what = "a sweep directory" if sweep else "a folder of runs"
        raise ReportError(f"{run_dir}: {what} ({len(jobs)} {'jobs' if sweep else 'runs'}); give one "
                          f"{'job' if sweep else 'run'}'s directory, e.g. {jobs[0]}"
                          + (", or see leaderboard.png there" if sweep else ""))
    summary = _summary(run_dir)
    # Event files, checkpoint and data are all read before the first PNG is written: a report
    # refused over any of them leaves no fresh file behind that looks like a success.
    ckpt = _best_checkpoint(run_dir, summary)
    figures: list[tuple[str, Figure]] = []
    if event_files(run_dir) or ckpt is None:
        figures.append(("curves.png", _curves_figure(run_dir, summary)))  # refuses a run without events
    else:
        log.warning("%s: no TensorBoard event files (a run with logger=csv or logger=none), so no curves.png",
                    run_dir)
    if ckpt is None:
        log.warning("%s: no checkpoints/best.ckpt, so no confusion matrix or misclassified images", run_dir)
    else:
        figures += _checkpoint_figures(run_dir, ckpt, split, data_dir)
    return [save_png(fig, run_dir / name) for name, fig in figures]
