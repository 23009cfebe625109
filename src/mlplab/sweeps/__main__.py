"""`python -m mlplab.sweeps DIR`: rebuild the leaderboard of a sweep directory.

Works on a sweep that is still running or was cut short: jobs without summary.json are listed
as `missing` and the finished ones are ranked. Exit 0 when a report was written, 1 when DIR
does not exist or holds no job directory at all (nothing to report).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlplab.sweeps.leaderboard import NoJobsError, report


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
