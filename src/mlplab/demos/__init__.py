"""Small standalone demos from the course notes, each runnable with `python -m`.

Kept free of torch and matplotlib imports so the helpers below stay cheap to load.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line on stderr (exit 2), without the usage block.

    The demos have many options, so the usage dump would bury the one line that matters.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def save_figure_atomically(fig: Any, out: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure via a temp file in the target directory, then `os.replace` it.

    A crash mid-write then never leaves a truncated PNG where a good one used to be.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix or ".png",
                                    dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=(out.suffix.lstrip(".") or "png"), **savefig_kwargs)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600, which would stick after the rename
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out
