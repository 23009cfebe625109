"""`python -m mlplab.inspect RUN_DIR [--split val|test] [--data-dir DIR]`"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.inspect",
        description="Write curves.png, confusion_matrix.png and misclassified.png into a run directory.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", choices=("val", "test"), default=None,
                        help="split the best checkpoint is evaluated on for the image panels (default: val, or "
                             "test for a run trained with data.val_size=0)")
    parser.add_argument("--data-dir", default=os.environ.get("MLPLAB_DATA_DIR"),
                        help="data root, if not where the run was trained (default: $MLPLAB_DATA_DIR or the run's own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    from mlplab.checkpoints import CheckpointError
    from mlplab.data.sources import DataError
    from mlplab.inspect.report import ReportError, write_report

    try:
        written = write_report(args.run_dir, args.split, args.data_dir)
    except (ReportError, CheckpointError, DataError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
