"""`python -m mlplab.sweeps DIR`: rebuild the leaderboard of a sweep directory.

Works on a sweep that is still running or was cut short: jobs without summary.json are listed
as `missing`, jobs not started yet are counted, and the finished ones are ranked. Exit 0 when a
report was written, 1 when DIR does not exist, holds no job directory at all (nothing to
report), or is not one sweep's (a folder above several).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mlplab.sweeps.jobs import find_job_dirs, resumed_in_place
from mlplab.sweeps.leaderboard import NoJobsError, report


def _not_one_sweep(path: Path) -> str | None:
    """Why the jobs under `path` are not one sweep's: a folder above sweeps (outputs/, a date)
    would merge all their jobs, whatever they swept, into one ranking, and write it there.
    A sweep's jobs are its direct subfolders (hydra.sweep.subdir is the job number); the basic
    sweeper's multirun.yaml also marks a sweep whose subdir nests them deeper."""
    if not path.is_dir() or (path / "multirun.yaml").is_file():
        return None
    jobs = [j for j in find_job_dirs(path) if j != path]
    homes = sorted({j.parent for j in jobs}, key=str)
    if not homes:
        return None  # a run (said by the caller), or nothing to report (said by `report`)
    if homes == [path]:
        # A day of single runs (outputs/runs/<date>) ranked as one sweep, unrelated data and all.
        singles = [j for j in jobs if _mode(j) == "RUN"]
        return (f"holds {len(singles)} single run{'s' if len(singles) > 1 else ''} (python src/train.py without -m), "
                "not a sweep's jobs; python -m mlplab.curves compares runs") if singles else None
    sweeps = [h for h in homes if h != path and not all(_mode(j) == "RUN" for j in jobs if j.parent == h)]
    if not sweeps:
        return "holds single runs, not a sweep's jobs; python -m mlplab.curves compares runs"
    if len(sweeps) == 1:
        return f"holds a sweep below it, not its jobs; give that one: {sweeps[0]}"
    return f"holds the jobs of {len(sweeps)} sweeps below it, not one sweep's; give one, e.g. {sweeps[-1]}"


def _mode(job: Path) -> str | None:
    """RUN or MULTIRUN, as Hydra recorded the job (None: not known)."""
    try:
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        if resumed_in_place(job, hydra):
            return None  # resume= rewrote hydra.yaml in RUN mode, a sweep's job or not
        return str(hydra["mode"])
    except Exception:  # noqa: BLE001 - a job without it is judged by where it lies
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.sweeps",
        description="Write leaderboard.csv/.md/.png into a Hydra multirun directory and print it.",
    )
    parser.add_argument("sweep_dir", help="e.g. outputs/multirun/2025-01-31/12-00-00")
    parser.add_argument("--no-plot", action="store_true", help="skip leaderboard.png")
    args = parser.parse_args(argv)
    if (Path(args.sweep_dir) / ".hydra" / "config.yaml").is_file():
        # A run's own directory, not a sweep's: a one-row leaderboard would be written into it.
        print(f"error: {args.sweep_dir}: a run directory, not a sweep; python -m mlplab.inspect "
              f"{args.sweep_dir} reports one run", file=sys.stderr)
        return 1
    if why := _not_one_sweep(Path(args.sweep_dir)):
        print(f"error: {args.sweep_dir}: {why}", file=sys.stderr)
        return 1
    try:
        _, text = report(args.sweep_dir, plot=not args.no_plot)
    except NoJobsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. a read-only sweep directory
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
