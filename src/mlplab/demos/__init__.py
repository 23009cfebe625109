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

# Same bound as mlplab.config.MAX_SEED (Lightning's seed_everything and numpy take [0, 2^32 - 1]),
# restated because importing the config would pull Hydra and Lightning into every demo.
MAX_SEED = 2**32 - 1
# matplotlib lists pgf, but it needs a LaTeX install and would fail only after all the work.
_UNSAVABLE_FORMATS = frozenset({"pgf"})


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


def seed_int(text: str) -> int:
    message = f"must be an integer in [0, {MAX_SEED}], got {text!r}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(message)
    return value


def figure_path_problem(out: Path) -> str | None:
    """Why a figure cannot be saved at `out`, or None; the demos ask before any work is done."""
    # Here rather than at the top, so that importing these helpers stays matplotlib-free.
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(set(FigureCanvasBase.get_supported_filetypes()) - _UNSAVABLE_FORMATS)
    # An empty suffix is saved as PNG, like save_figure_atomically does.
    if (out.suffix.lstrip(".").lower() or "png") not in formats:
        return (f"cannot save a figure as {out.suffix!r}; the suffix picks the format, one of "
                + ", ".join(f".{f}" for f in formats))
    if out.is_dir():
        return "is a directory"
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        return f"{blocked} is a file, not a directory"
    return None


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
