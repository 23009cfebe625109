"""The sweep report: jobs grouped into settings, ranked, written into the sweep directory.

A setting is a job's overrides minus `seed`; jobs that differ only in their seed are repeats of
one setting, summarised as mean ± std over the completed ones. The std is the sample standard
deviation (ddof=1, `statistics.stdev`): the seeds are a sample of the run-to-run noise, and
n is small. Overrides shared by every job are listed once above the table, not in every row.

Rows that have a value for the optimised metric come first, best first (higher first unless the
metric is a loss), those with a failed or diverged seed after those without; rows with none
(diverged, then failed, then missing) come last.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shlex
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlplab.sweeps.jobs import STATUSES, Job, key, read_jobs, resumed_in_place

TEST_METRIC = "test/acc"
COMMAND_PREFIX = "python src/train.py"
ERROR_WIDTH = 70  # in the Markdown/terminal table; the CSV keeps the whole message


class NoJobsError(Exception):
    """The directory holds no job directory (one with `.hydra/overrides.yaml`)."""


def maximize(metric: str) -> bool:
    return "loss" not in metric


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    def text(self, digits: int = 4) -> str:
        if not self.values:
            return "—"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Row:
    setting: tuple[str, ...]
    jobs: list[Job]
    metric: str
    rank: int | None = None

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "completed"]

    @property
    def score(self) -> Stat:
        return Stat(tuple(v for j in self.completed if (v := j.metric(self.metric)) is not None))

    @property
    def test_acc(self) -> Stat:
        return Stat(tuple(v for j in self.completed if (v := j.metric(TEST_METRIC)) is not None))

    @property
    def best_job(self) -> Job | None:
        scored = [j for j in self.completed if j.metric(self.metric) is not None]
        if not scored:
            return None
        sign = 1 if maximize(self.metric) else -1
        return max(scored, key=lambda j: sign * (j.metric(self.metric) or 0.0))

    @property
    def status(self) -> str:
        counts = {s: sum(j.status == s for j in self.jobs) for s in STATUSES}
        present = [(s, n) for s, n in counts.items() if n]
        if len(present) == 1:
            return present[0][0]
        return ", ".join(f"{n} {s}" for s, n in present)

    @property
    def error(self) -> str | None:
        return next((j.error for j in self.jobs if j.status != "completed" and j.error), None)

    @property
    def worst_status(self) -> int:
        return min(STATUSES.index(j.status) for j in self.jobs)

    @property
    def _described(self) -> list[Job]:
        # Epochs, early stops and fit time describe the jobs the metric averages; a row with
        # none completed shows how far its failed or diverged jobs got.
        return self.completed or self.jobs

    @property
    def epochs(self) -> str:
        e = sorted({j.summary["epochs"] for j in self._described if isinstance(j.summary.get("epochs"), int)})
        return "—" if not e else str(e[0]) if len(e) == 1 else f"{e[0]}–{e[-1]}"

    @property
    def stopped_early(self) -> str:
        ran = [j for j in self._described if "stopped_early" in j.summary]
        k = sum(bool(j.summary.get("stopped_early")) for j in ran)
        if not ran:
            return "—"
        if len(ran) == 1:
            return "yes" if k else "no"
        return f"{k}/{len(ran)}"

    @property
    def fit_seconds(self) -> float | None:
        s = [float(j.summary["fit_seconds"]) for j in self._described
             if isinstance(j.summary.get("fit_seconds"), (int, float))]
        return statistics.fmean(s) if s else None

    @property
    def seeds(self) -> list[str]:
        return [j.seed for j in self.jobs if j.seed is not None]


@dataclass
class Leaderboard:
    sweep_dir: Path
    metric: str
    rows: list[Row]
    jobs: list[Job]
    fixed: tuple[str, ...] = ()
    varying_keys: tuple[str, ...] = field(default=())
    planned: int | None = None  # jobs the sweep starts in all, where known (multirun.yaml)

    @property
    def maximize(self) -> bool:
        return maximize(self.metric)

    @property
    def best(self) -> Row | None:
        return self.rows[0] if self.rows and self.rows[0].rank == 1 else None

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATUSES if (n := sum(j.status == s for j in self.jobs))}

    def run_dirs(self, row: Row) -> str:
        return ", ".join(_relative(j.dir, self.sweep_dir) for j in row.jobs)


def _relative(path: Path, root: Path) -> str:
    try:
        rel = str(path.relative_to(root))
    except ValueError:
        return str(path)
    return rel if rel != "." else "."


def command(job: Job) -> str:
    """The shell command that reruns `job` as a single run.

    `sweep=...` is dropped: named grids (conf/sweep/) set only hydra.* keys (a test holds them
    to that), so the job's other overrides are its whole config, and keeping `sweep=` would
    turn the rerun back into a multirun.
    """
    args = [o for o in job.overrides if key(o) != "sweep"]
    return " ".join([COMMAND_PREFIX, *(shlex.quote(a) for a in args)])


def _setting(job: Job) -> tuple[str, ...]:
    return tuple(o for o in job.overrides if key(o) != "seed")


def group(jobs: Sequence[Job], metric: str) -> tuple[list[Row], tuple[str, ...]]:
    """Rows (unsorted) and the overrides every job shares, which no row needs to repeat."""
    # A job whose overrides.yaml is damaged has no known overrides: counting it as having none
    # would leave nothing shared, and every other row's label would repeat the fixed overrides.
    settings = [_setting(j) for j in jobs if j.overrides_read]
    common = set(settings[0]).intersection(*settings[1:]) if settings else set()
    fixed = tuple(o for o in settings[0] if o in common) if settings else ()
    by_setting: dict[tuple[tuple[str, ...], bool], list[Job]] = {}
    for job in jobs:
        setting = tuple(o for o in _setting(job) if o not in common)
        by_setting.setdefault((setting, job.overrides_read), []).append(job)
    return [Row(s, js, metric) for (s, _), js in by_setting.items()], fixed


def rank(rows: list[Row], order: dict[Path, int], metric: str) -> list[Row]:
    """Best first; ties go to the setting with more runs, then to the earlier job. A setting
    one of whose seeds failed or diverged ranks below every setting without such a seed,
    whatever the mean of its other seeds (scikit-learn's GridSearchCV ranks it last): a
    learning rate that diverges once in three is not the one to pick."""
    sign = -1 if maximize(metric) else 1

    def sort_key(row: Row) -> tuple[int, int, float, int, int]:
        first = min(order[j.dir] for j in row.jobs)
        score = row.score
        if score.n:
            broken = any(j.status in ("failed", "diverged") for j in row.jobs)
            return (0, int(broken), sign * (score.mean or 0.0), -score.n, first)
        return (1, 0, float(row.worst_status), 0, first)

    ranked = sorted(rows, key=sort_key)
    for i, row in enumerate(ranked, 1):
        row.rank = i if row.score.n else None
    return ranked


def _metric_of(jobs: Iterable[Job]) -> str:
    # Jobs normally agree; if optimized_metric itself was swept, the most common one wins, and
    # in a tie the first job's (a set's order changes with each process's string hashing).
    names = [j.optimized_metric for j in jobs]
    return max(names, key=names.count)


def build(sweep_dir: str | os.PathLike[str], metric: str | None = None) -> Leaderboard:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoJobsError(f"{sweep_dir}: " + ("a file, not a sweep directory" if sweep_dir.exists() else "no such directory"))
    jobs = list(read_jobs(sweep_dir))
    if not jobs:
        raise NoJobsError(
            f"{sweep_dir}: no job directories (none holds .hydra/overrides.yaml); expected a "
            "multirun directory such as outputs/multirun/<date>/<time>"
        )
    metric = metric or _metric_of(jobs)
    rows, fixed = group(jobs, metric)
    varying: list[str] = []
    for row in rows:
        varying += [key(o) for o in row.setting if key(o) not in varying]
    order = {j.dir: i for i, j in enumerate(jobs)}
    return Leaderboard(sweep_dir, metric, rank(rows, order, metric), jobs, fixed, tuple(varying), _planned(sweep_dir))


def _planned(sweep_dir: Path) -> int | None:
    from omegaconf import OmegaConf

    from mlplab.sweeps.preflight import planned_count

    # The basic sweeper writes multirun.yaml; Optuna's settings are in every trial's hydra.yaml,
    # except a trial's that resume= has since rewritten (Hydra's defaults: one job, basic sweeper).
    trials = sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))
    for path in [sweep_dir / "multirun.yaml", *trials]:
        try:
            config = OmegaConf.load(path)
            if path.name == "hydra.yaml" and resumed_in_place(path.parents[1], config.hydra):  # type: ignore[union-attr]
                continue
            return planned_count(config) if "hydra" in config else None  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - absent or damaged: the count is only a help
            continue
    return None


# --------------------------------------------------------------------------- rendering

_LONG_FLOAT = re.compile(r"^-?\d*\.\d{5,}(e-?\d+)?$|^-?\d+(\.\d+)?e-?\d+$")


def short(override: str) -> str:
    """Optuna's `optimizer.lr=0.0012345678901` reads as `optimizer.lr=0.001235` in a table."""
    k, _, v = override.partition("=")
    if _LONG_FLOAT.match(v):
        return f"{k}={float(v):.4g}"
    return override


def label(row: Row) -> str:
    if not any(j.overrides_read for j in row.jobs):
        return "(overrides unreadable)"
    return " ".join(short(o) for o in row.setting) or "(all jobs alike)"


def _clip(text: str | None, width: int = ERROR_WIDTH) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _seconds(s: float | None) -> str:
    return "—" if s is None else f"{s:.1f}"


def table(board: Leaderboard) -> list[list[str]]:
    seeds = any(r.seeds for r in board.rows)
    header = ["rank", "setting", "n", board.metric, f"{TEST_METRIC} (best ckpt)", "epochs",
              "stopped early", "fit s", "status", "run dir" + ("s" if seeds else "")]
    rows = [header]
    for r in board.rows:
        status = r.status + (f": {_clip(r.error)}" if r.error else "")
        rows.append([
            str(r.rank) if r.rank else "–", label(r), str(r.score.n), r.score.text(),
            r.test_acc.text(), r.epochs, r.stopped_early, _seconds(r.fit_seconds), status,
            board.run_dirs(r),
        ])
    return rows


def markdown_table(cells: list[list[str]]) -> str:
    cells = [[c.replace("|", "\\|") for c in row] for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    numeric = {0, 2}  # right-aligned: rank and n

    def line(row: list[str]) -> str:
        return "| " + " | ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def header_lines(board: Leaderboard) -> list[str]:
    counts = ", ".join(f"{n} {s}" for s, n in board.counts().items())
    direction = "higher" if board.maximize else "lower"
    n = len(board.jobs)
    # A sweep stopped part-way (Ctrl-C) or still running has not created all its job folders.
    later = board.planned - n if board.planned is not None and board.planned > n else 0
    lines = [
        f"{n} job{'s' if n != 1 else ''}: {counts}" + (f"; {later} more planned, not started" if later else ""),
        (f"metric: {board.metric} ({direction} is better); with several seeds: mean ± sample std "
         "(ddof=1) over the completed runs, n = runs averaged"),
    ]
    if board.fixed:
        lines.append("fixed for all jobs: " + " ".join(board.fixed))
    missing = board.counts().get("missing", 0)
    if missing:
        lines.append(f"{missing} job(s) without a readable summary.json (or .hydra/overrides.yaml): still "
                     "running, killed, crashed before writing one, or damaged; the finished jobs are ranked")
    return lines


def best_lines(board: Leaderboard) -> tuple[str | None, str | None]:
    row = board.best
    if row is None or row.best_job is None:
        return None, None
    n = f" (n={row.score.n})" if row.score.n > 1 else ""
    seed = f"; its best seed, {row.best_job.seed}, below" if row.score.n > 1 and row.best_job.seed else ""
    return f"best: {label(row)}: {board.metric} {row.score.text()}{n}{seed}", command(row.best_job)


def _nothing_ranked(board: Leaderboard) -> str:
    if any(j.status == "completed" for j in board.jobs):
        # e.g. data.val_size=0: no validation split, so no validation metric to rank by.
        return f"no completed job has {board.metric}: nothing to rank"
    return "no job completed: nothing to rank"


def render_text(board: Leaderboard) -> str:
    best, cmd = best_lines(board)
    lines = [f"== sweep leaderboard: {board.sweep_dir} ==", *header_lines(board), "",
             markdown_table(table(board)), ""]
    if best:
        lines += [best, f"reproduce: {cmd}"]
    else:
        lines.append(_nothing_ranked(board))
    return "\n".join(lines)


def render_markdown(board: Leaderboard) -> str:
    best, cmd = best_lines(board)
    lines = [f"# Sweep leaderboard: `{board.sweep_dir}`", ""]
    lines += [f"- {line}" for line in header_lines(board)]
    lines += ["", markdown_table(table(board)), ""]
    if best:
        lines += [best[0].upper() + best[1:], "", "```bash", cmd or "", "```"]
    else:
        text = _nothing_ranked(board)
        lines.append(text[0].upper() + text[1:] + ".")
    return "\n".join(lines) + "\n"


def _float(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(x)


def render_csv(board: Leaderboard) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = list(board.varying_keys)
    w.writerow(["rank", "setting", *keys, "n", "jobs", "metric", "mean", "std", "values",
                "test_acc_mean", "test_acc_std", "epochs", "stopped_early", "fit_seconds_mean",
                "status", "error", "seeds", "run_dirs", "command"])
    for r in board.rows:
        by_key = {key(o): o.split("=", 1)[1] for o in r.setting if "=" in o}
        best = r.best_job
        w.writerow([
            r.rank or "", " ".join(r.setting), *(by_key.get(k, "") for k in keys),
            r.score.n, len(r.jobs), board.metric, _float(r.score.mean), _float(r.score.std),
            ";".join(repr(v) for v in r.score.values), _float(r.test_acc.mean),
            _float(r.test_acc.std), r.epochs, r.stopped_early, _float(r.fit_seconds), r.status,
            r.error or "", ";".join(r.seeds), ";".join(_relative(j.dir, board.sweep_dir) for j in r.jobs),
            command(best or r.jobs[0]),
        ])
    return buf.getvalue()


def write_atomic(path: Path, data: str | bytes) -> None:
    """Readers (a second report, a user's pandas) never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)


def write(board: Leaderboard, plot: bool = True) -> list[Path]:
    """leaderboard.csv, leaderboard.md and (unless `plot` is false) leaderboard.png."""
    out = [board.sweep_dir / "leaderboard.csv", board.sweep_dir / "leaderboard.md"]
    write_atomic(out[0], render_csv(board))
    write_atomic(out[1], render_markdown(board))
    if plot:
        from mlplab.sweeps.plot import plot_png  # matplotlib only when a report is written

        png = board.sweep_dir / "leaderboard.png"
        write_atomic(png, plot_png(board))
        out.append(png)
    return out


def report(sweep_dir: str | os.PathLike[str], plot: bool = True) -> tuple[Leaderboard, str]:
    """Build, write and render: what the callback and `python -m mlplab.sweeps` both do."""
    board = build(sweep_dir)
    written = write(board, plot=plot)
    text = render_text(board) + "\nwrote " + ", ".join(p.name for p in written) + f" in {board.sweep_dir}"
    return board, text
