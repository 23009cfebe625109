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

from mlplab.sweeps.jobs import find_job_dirs
from mlplab.sweeps.leaderboard import NoJobsError, report


def _not_one_sweep(path: Path) -> str | None:
    """Why the jobs under `path` are not one sweep's: a folder above sweeps (outputs/, a date)
    would merge all their jobs, whatever they swept, into one ranking, and write it there.
    A sweep's jobs are its direct subfolders (hydra.sweep.subdir is the job number); the basic
    sweeper's multirun.yaml also marks a sweep whose subdir nests them deeper."""
    if not path.is_dir() or (path / "multirun.yaml").is_file():
        return None
    homes = sorted({j.parent for j in find_job_dirs(path) if j != path}, key=str)
    if not homes or homes == [path]:
        return None  # one sweep, a run (said by the caller), or nothing to report (said by `report`)
    sweeps = [h for h in homes if h != path]
    return (f"holds the jobs of {len(sweeps)} folder{'s' if len(sweeps) > 1 else ''} below it, not one sweep's; "
            f"give one, e.g. {sweeps[-1]}")


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
