"""Overlay the per-epoch curves of several runs in one PNG, read from their TensorBoard events.

    python -m mlplab.curves RUN_OR_SWEEP_DIR... --metric val/loss [--metric train/loss] --out X.png

Each path is a run directory or any directory above runs (a multirun sweep dir, outputs/):
every run below it with TensorBoard event files becomes one line per metric panel. Lines are
labelled by what differs between the runs (their `.hydra/overrides.yaml`), so the lines of a
sweep are named by the setting each job ran. A table of each run's last and best value is
printed; `--patience N` adds the epoch at which early stopping with that patience on
`--patience-metric` would have ended the run, replayed on the logged curve.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlplab.demos import figure_path_problem, save_figure_atomically

EVENT_GLOB = "events.out.tfevents.*"
# A directory with one of these is a run's root: what Hydra and train() write into each run.
RUN_MARKERS = (".hydra", "summary.json")


class CurvesError(ValueError):
    """One line: which path or metric, and what is wrong with it."""


@dataclass(frozen=True)
class Point:
    step: int
    epoch: int | None  # None where no `epoch` scalar accompanied the value
    value: float
    wall_time: float


@dataclass(frozen=True)
class Curve:
    run: Path
    label: str
    metric: str
    x: list[float]
    values: list[float]

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    def best(self) -> float | None:
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return None
        return min(finite) if metric_mode(self.metric) == "min" else max(finite)


def metric_mode(metric: str) -> str:
    return "min" if "loss" in metric or metric.endswith(("/l1", "/l2")) else "max"


def event_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob(EVENT_GLOB) if p.is_file())


def _scalar(value: Any) -> float | None:
    """A summary value's number: `simple_value` (old writers) or a rank-0 tensor (what
    torch's SummaryWriter writes for Lightning today)."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor" and value.metadata.plugin_data.plugin_name in ("", "scalars"):
        from tensorboard.util import tensor_util

        array = tensor_util.make_ndarray(value.tensor)
        return float(array) if array.size == 1 else None
    return None


def read_scalars(run_dir: str | os.PathLike[str]) -> dict[str, list[Point]]:
    """tag → points ordered by step, over every event file below `run_dir` (Lightning writes
    fit, test and hyperparameters to separate files, and a resumed run appends new ones).

    Lightning writes the `epoch` scalar last in each logging call at the same step, so a value
    takes the epoch of the next `epoch` event at its step. Mapping steps to epochs through a
    table instead would go wrong where the last step of one epoch and the first of the next
    share a step number. A (tag, step) written twice (a run resumed from an earlier
    checkpoint) keeps the later write.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    raw: list[tuple[float, int, str, float]] = []
    for path in event_files(Path(run_dir)):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                number = _scalar(value)
                if number is not None:
                    raw.append((event.wall_time, event.step, value.tag, number))
    raw.sort(key=lambda r: r[0])  # files interleave in time; order within a file is kept

    pending: dict[int, list[tuple[float, str, float]]] = defaultdict(list)
    latest: dict[tuple[str, int], Point] = {}
    for wall, step, tag, number in raw:
        if tag == "epoch":
            for p_wall, p_tag, p_value in pending.pop(step, []):
                latest[(p_tag, step)] = Point(step, int(number), p_value, p_wall)
            continue
        pending[step].append((wall, tag, number))
    for step, items in pending.items():
        for wall, tag, number in items:
            latest[(tag, step)] = Point(step, None, number, wall)

    out: dict[str, list[Point]] = defaultdict(list)
    for (tag, _), point in latest.items():
        out[tag].append(point)
    return {tag: sorted(points, key=lambda p: p.step) for tag, points in out.items()}


def epoch_axis(points: Sequence[Point], ends: Mapping[int, int] | None = None) -> list[float]:
    """x positions in epochs completed: a once-per-epoch metric of epoch e sits at e + 1; a
    metric logged several times per epoch (train/loss_step) is spread evenly inside (e, e + 1].
    A metric logged without its epoch (the learning rate) sits where its step falls between
    the ends of epochs (`ends`: epoch → its last step), so it shares the other panels' axis."""
    if any(p.epoch is None for p in points):
        return _steps_as_epochs([p.step for p in points], ends or {})
    by_epoch: dict[int, list[int]] = defaultdict(list)
    for p in points:
        by_epoch[p.epoch].append(p.step)  # type: ignore[index]
    x: list[float] = []
    for p in points:
        steps = by_epoch[p.epoch]  # type: ignore[index]
        if len(steps) == 1:
            x.append(p.epoch + 1.0)  # type: ignore[operator]
        else:
            rank = sorted(steps).index(p.step) + 1
            x.append(p.epoch + rank / len(steps))  # type: ignore[operator]
    return x


def epoch_ends(scalars: Mapping[str, Sequence[Point]]) -> dict[int, int]:
    """Each epoch's last logged step, over every metric logged with its epoch."""
    ends: dict[int, int] = {}
    for points in scalars.values():
        for p in points:
            if p.epoch is not None:
                ends[p.epoch] = max(ends.get(p.epoch, p.step), p.step)
    return ends


def _steps_as_epochs(steps: Sequence[int], ends: Mapping[int, int]) -> list[float]:
    # Anchors (step, epochs completed): (0, 0) and the end of each epoch; between them linear,
    # beyond the last at the last epoch's pace. No epochs known: steps stay steps.
    if not ends:
        return [float(s) for s in steps]
    anchors = [(0, 0.0), *sorted((step, epoch + 1.0) for epoch, step in ends.items())]
    out = []
    for s in steps:
        i = min(max(bisect.bisect_left(anchors, (s, -math.inf)), 1), len(anchors) - 1)
        (x0, y0), (x1, y1) = anchors[i - 1], anchors[i]
        out.append(y0 + (s - x0) * (y1 - y0) / max(x1 - x0, 1))
    return out


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every run directory at or below the given paths that holds TensorBoard events, in
    natural order (job 10 after job 9), each once."""
    runs: dict[Path, None] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise CurvesError(f"{root}: no such directory")
        files = event_files(root) if root.is_dir() else []
        if not files:
            raise CurvesError(f"{root}: no TensorBoard event files ({EVENT_GLOB}) below it")
        found = sorted({_run_root(f, root) for f in files}, key=_natural)
        runs.update(dict.fromkeys(found))
    return list(runs)


def _run_root(event_file: Path, root: Path) -> Path:
    for parent in event_file.parents:
        if any((parent / m).exists() for m in RUN_MARKERS):
            return parent
        if parent == root:
            break
    # No Hydra run around it: the logger's folder (tensorboard/) sits in the run directory.
    folder = event_file.parent
    return folder.parent if folder != root and folder.name == "tensorboard" else folder


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    return {str(o).split("=", 1)[0].lstrip("+~"): str(o).split("=", 1)[-1] for o in items}


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Each run named by the overrides that differ between the runs: with one such key only
    its value, less a prefix all values share (`notes_optimizers_adam` → `adam`); runs that
    would share a name get where they are after it."""
    labels = _setting_labels(runs)
    twins = [i for i, name in enumerate(labels) if labels.count(name) > 1]
    if twins:
        tails = _path_tails([runs[i] for i in twins])
        for i, tail in zip(twins, tails, strict=True):
            labels[i] = f"{labels[i]} ({tail})"
    return labels


def _path_tails(runs: Sequence[Path]) -> list[str]:
    """The shortest distinct path tails."""
    for depth in range(1, 6):
        tails = ["/".join(r.resolve().parts[-depth:]) for r in runs]
        if len(set(tails)) == len(tails):
            return tails
    return [str(r) for r in runs]


def _setting_labels(runs: Sequence[Path]) -> list[str]:
    overrides = [_overrides(r) for r in runs]
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    if len(runs) > 1 and varying:
        if len(varying) == 1:
            values = [o.get(varying[0], "-") for o in overrides]
            prefix = os.path.commonprefix(values)
            prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
            if prefix and all(len(v) > len(prefix) for v in values):
                values = [v[len(prefix):] for v in values]
            return values
        # A key a run did not override is left out: it ran that key's config value.
        return [" ".join(f"{k}={o[k]}" for k in varying if k in o) or "(config defaults)"
                for o in overrides]
    # Nothing tells them apart but where they are.
    return _path_tails(runs)


def load_curves(runs: Sequence[Path], metrics: Sequence[str], labels: Sequence[str] | None = None,
                options: Mapping[str, str] | None = None) -> dict[str, list[Curve]]:
    """metric → one Curve per run that logged it; a metric no run logged is an error naming
    the tags that exist, since a typo would otherwise give an empty plot, and the option that
    asked for it (`options`: metric → option; default --metric)."""
    names = list(labels) if labels else run_labels(runs)
    if len(names) != len(runs):
        raise CurvesError(f"{len(names)} labels given for {len(runs)} runs")
    scalars = [read_scalars(r) for r in runs]
    ends = [epoch_ends(tags) for tags in scalars]
    out: dict[str, list[Curve]] = {}
    for metric in metrics:
        curves = []
        for run, name, tags, run_ends in zip(runs, names, scalars, ends, strict=True):
            points = tags.get(metric)
            if points:
                x = epoch_axis(points, run_ends)
                if metric.startswith("test/"):  # logged after the fit, at the count of epochs run
                    x = [v - 1 for v in x]
                curves.append(Curve(run, name, metric, x, [p.value for p in points]))
        if not curves:
            known = sorted({t for tags in scalars for t in tags if not t.startswith("_")})
            option = (options or {}).get(metric, "--metric")
            raise CurvesError(f"{option} {metric}: logged by none of the {len(runs)} runs; "
                              f"tags logged: {', '.join(known) or 'none'}")
        out[metric] = curves
    return out


def early_stop_epoch(values: Sequence[float], patience: int, mode: str = "min",
                     min_delta: float = 0.0) -> int | None:
    """The epoch (1-based, epochs completed) after which Lightning's EarlyStopping with this
    patience would stop, given the monitored value at the end of each epoch; None if it
    would not stop within these epochs. Same rule: an improvement must beat the best by more
    than min_delta, and `patience` checks in a row without one stop the run."""
    best = math.inf if mode == "min" else -math.inf
    wait = 0
    for epoch, value in enumerate(values, start=1):
        if not math.isfinite(value):  # Lightning's check_finite: a NaN loss stops the run at once
            return epoch
        improved = value < best - min_delta if mode == "min" else value > best + min_delta
        if improved:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def plot(curves: dict[str, list[Curve]], out: str | os.PathLike[str], *, x_label: str = "epoch",
         log_y: bool = False, title: str | None = None) -> Path:
    """One panel per metric side by side, one line per run, the same colour for a run in
    every panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = list(curves.items())
    labels = list(dict.fromkeys(c.label for cs in curves.values() for c in cs))
    colours = {name: f"C{i % 10}" for i, name in enumerate(labels)}
    styles = {name: ("-", "--", ":", "-.")[i // 10 % 4] for i, name in enumerate(labels)}
    # The object API with its own Agg canvas: no pyplot, so no global backend is switched.
    fig = Figure(figsize=(5.2 * len(panels) + 1.8, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, cs) in zip(axes, panels, strict=True):
        for c in cs:
            few = len(c.x) <= 30
            ax.plot(c.x, c.values, styles[c.label], color=colours[c.label], label=c.label,
                    marker="o" if few else None, markersize=3, linewidth=1.4)
        ax.set_title(metric)
        ax.set_xlabel(x_label)
        if x_label == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        # Losses span decades between optimizers; accuracies sit in [0, 1] and stay linear.
        if log_y and metric_mode(metric) == "min" and all(v > 0 for c in cs for v in c.values):
            ax.set_yscale("log")
    seen: dict[str, Any] = {}
    for ax in axes:  # a run missing from the first panel still gets its legend entry
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(name, handle)
    if len(seen) > 1:  # one run needs no legend: the title says what it is
        fig.legend([seen[n] for n in labels if n in seen], [n for n in labels if n in seen],
                   loc="outside right upper", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return save_figure_atomically(fig, out, dpi=110)


def table(curves: dict[str, list[Curve]], patience: int | None = None,
          patience_metric: str = "val/loss") -> str:
    """A plain-text table: per run and metric, the points logged, last and best value."""
    rows = [("run", "metric", "points", "last", "best")]
    for metric, cs in curves.items():
        for c in cs:
            rows.append((c.label, metric, str(len(c.values)), _fmt(c.last), _fmt(c.best())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if patience is not None and patience_metric in curves:
        lines.append("")
        for c in curves[patience_metric]:
            stop = early_stop_epoch(c.values, patience, metric_mode(patience_metric))
            # Patience counts validations; with trainer.check_val_every_n_epoch > 1 they are
            # not epochs, so the epochs come from the points' places on the epoch axis.
            ran = f"{c.x[-1]:g}" if c.x else "0"
            what = (f"would stop after epoch {c.x[stop - 1]:g} of {ran}" if stop is not None
                    else f"would not stop within its {ran} epochs")
            lines.append(f"{c.label}: early stopping (patience {patience} on {patience_metric}) {what}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.curves",
        description="Overlay per-epoch TensorBoard curves of several runs into one PNG.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument("--metric", action="append", dest="metrics",
                        help="a logged scalar tag, e.g. val/loss; repeat for side-by-side panels "
                             "(default: val/loss)")
    parser.add_argument("--out", required=True, help="the figure to write; its suffix picks the format (.png, .pdf, .svg, …)")
    parser.add_argument("--label", action="append", dest="labels",
                        help="one per run, in the order the runs are listed (default: the "
                             "overrides that differ between them)")
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis for loss panels")
    parser.add_argument("--title")
    parser.add_argument("--patience", type=int,
                        help="also report where early stopping with this patience would stop")
    parser.add_argument("--patience-metric", default="val/loss")
    args = parser.parse_args(argv)
    metrics = args.metrics or ["val/loss"]
    if args.patience is not None and args.patience < 1:
        parser.error("--patience must be ≥ 1")
    if (problem := figure_path_problem(Path(args.out))) is not None:
        parser.error(f"--out={args.out}: {problem}")
    try:
        runs = find_runs(args.paths)
        wanted = metrics if args.patience is None or args.patience_metric in metrics \
            else [*metrics, args.patience_metric]
        curves = load_curves(runs, wanted, args.labels, options={args.patience_metric: "--patience-metric",
                                                                  **{m: "--metric" for m in metrics}})
        shown = {m: curves[m] for m in metrics}
        out = plot(shown, args.out, log_y=args.log_y, title=args.title)
    except (CurvesError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(table(curves, args.patience, args.patience_metric))
    print(f"\nwrote {out} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
