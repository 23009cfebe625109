"""One process trains a run directory at a time.

Two `resume=` of one run (or a resume while the run still trains) both restored last.ckpt and
trained: one crashed replacing the other's checkpoint, and the run's curves held an epoch twice.
The lock is an advisory `flock` on `.hydra/run.lock`, so it goes with the process that holds it,
however that process ends; a leftover file locks nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mlplab.config import ResumeRefused

_held: dict[Path, int] = {}  # run dir → the open descriptor holding its lock


def other_rank() -> bool:
    """A DDP rank other than 0 (Lightning's launcher, torchrun or SLURM set these): it trains
    the same run as rank 0, which alone locks it."""
    return any(os.environ.get(v, "0") != "0" for v in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def hold(run_dir: Path, record: bool = True) -> None:
    """Lock `run_dir` for this process's lifetime, or refuse in one line naming the holder.
    `record=False` writes no pid yet: a resume refused before it trains leaves the run's files
    as they were."""
    run_dir = run_dir.resolve()
    if other_rank():
        return
    if run_dir in _held:
        if record:
            _record(_held[run_dir])
        return
    path = run_dir / ".hydra" / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ResumeRefused(
            f"{run_dir}: is being trained by another process (pid {holder}); wait for it to end, or continue "
            f"from its last checkpoint in a new folder: ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
        ) from None
    if record:
        _record(fd)
    _held[run_dir] = fd


def _record(fd: int) -> None:
    pid = str(os.getpid()).encode()
    if os.pread(fd, 32, 0) != pid:
        os.ftruncate(fd, 0)
        os.pwrite(fd, pid, 0)


def release(run_dir: Path) -> None:
    """Let go of a finished job's lock: a multirun trains many in one process."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)
