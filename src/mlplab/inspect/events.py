"""Per-epoch scalar curves from a run's TensorBoard event files, read with TensorBoard's
own `EventAccumulator` (the same reader the server uses)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

EVENT_GLOB = "events.out.tfevents.*"
CURVE_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc")


class ReportError(ValueError):
    """One line: the run directory and what is missing from it."""


def event_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob(EVENT_GLOB) if p.is_file())


def read_scalars(files: list[Path]) -> dict[str, list[tuple[float, int, float]]]:
    """tag → [(wall_time, step, value)] over every file (Lightning writes fit, test and
    hparams to separate files, and a resumed run appends new ones)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            out[tag].extend((e.wall_time, e.step, e.value) for e in acc.Scalars(tag))
    return out


def epoch_curves(scalars: dict[str, list[tuple[float, int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """tag → [(epoch, value)] for the train/val loss and accuracy. Lightning logs an `epoch`
    scalar at the step of every epoch-level metric, which maps steps to epochs; where an
    epoch was logged twice (a resumed run repeats it) the later write wins."""
    step_epoch: dict[int, int] = {}
    for _, step, value in sorted(scalars.get("epoch", [])):
        step_epoch.setdefault(step, int(value))
    curves: dict[str, list[tuple[int, float]]] = {}
    for tag in CURVE_TAGS:
        points = sorted(scalars.get(tag, []))
        by_epoch: dict[int, float] = {}
        for i, (_, step, value) in enumerate(points):
            by_epoch[step_epoch.get(step, i)] = value
        curves[tag] = sorted(by_epoch.items())
    return curves
