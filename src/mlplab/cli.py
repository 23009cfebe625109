"""What the entry points share: user errors become one line and exit code 1; in a multirun a
failing job is recorded and the sweep goes on."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mlplab.runlock import other_rank
from mlplab.sweeps.jobs import find_job_dirs
from mlplab.sweeps.jobs import key as override_key

T = TypeVar("T")

# conf/hydra/launcher/joblib.yaml shares the plugin schema's name, so that its keys are checked
# against it; Hydra 1.3 warns about that at every composition, in joblib's workers too (which
# import this module with the task function): about 30 lines a sweep.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")
log = logging.getLogger(__name__)


def _user_errors() -> tuple[type[BaseException], ...]:
    from mlplab.callbacks.guards import NonFiniteLossError
    from mlplab.checkpoints import CheckpointError
    from mlplab.config import ConfigError
    from mlplab.data.sources import DataError

    return CheckpointError, ConfigError, DataError, NonFiniteLossError


class SigtermAsInterrupt:
    """SIGTERM handled as a Ctrl-C would be at that moment, for the `with` block: before
    training a clean stop (no run folder left without a checkpoint), during it the step in
    flight finished and last.ckpt saved, after it the test and summary first. Before, Lightning's
    own handling exited 0 without a word, and a SIGTERM before the first checkpoint left a run
    folder that could neither be resumed nor reused. Across DDP ranks Lightning's handling stays."""

    received = False  # a SIGTERM came during the current guarded call

    def __init__(self) -> None:
        self._previous: Any = None

    def __enter__(self) -> SigtermAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum: int, frame: FrameType | None) -> None:
        SigtermAsInterrupt.received = True
        dist = sys.modules.get("torch.distributed")  # not imported yet: no DDP either
        if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return  # Lightning's notifier, called before this, stops every rank together
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored (a background job of a script): stop as Ctrl-C would
            raise KeyboardInterrupt
        handler(signum, frame)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def guarded(fn: Callable[[DictConfig], T] | str, cfg: DictConfig) -> T | float:
    """Run `fn(cfg)`; `fn` may be given as "module:function", imported inside the guard (torch
    and Lightning take seconds to import: a Ctrl-C then is a Ctrl-C before training).

    Single run: a user error prints one line (no traceback unless HYDRA_FULL_ERROR=1) and
    exits 1; a run directory holding nothing but what Hydra wrote is removed, so nothing is
    left that looks like a run. Multirun: any exception marks this job `failed` in its
    summary.json and returns NaN, so the remaining jobs still run (Hydra's basic launcher
    would otherwise abort the whole sweep); the sweep callback decides the exit code.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    SigtermAsInterrupt.received = False
    try:
        with SigtermAsInterrupt():
            if isinstance(fn, str):
                module, name = fn.split(":")
                fn = getattr(importlib.import_module(module), name)
            return fn(cfg)  # type: ignore[operator]
    except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C: Lightning turns one in fit into SystemExit(1)
        # Lightning's SIGTERMException (DDP) is a SystemExit without a code: it exited 0.
        sigterm = SigtermAsInterrupt.received or type(err).__name__ == "SIGTERMException"
        if other_rank() or (isinstance(err, SystemExit) and err.code in (0, None) and not sigterm):
            raise
        if multirun:  # no leaderboard is written: the sweep ends here
            if not sigterm:  # a cluster's kill stops a job, not the sweep
                print(f"sweep stopped: python -m mlplab.sweeps {HydraConfig.get().sweep.dir} ranks the jobs that "
                      "finished", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        # Stopped before its first checkpoint (imports, data, the first epoch): nothing can be
        # resumed, so no folder is left that looks like a run. A checkpoint or a summary is kept.
        removed = _resuming is None and _remove_unstarted_run_dir()
        if isinstance(err, KeyboardInterrupt) or removed or err.code is None:
            print("error: interrupted" + (" (SIGTERM)" if sigterm else "" if removed else " (Ctrl-C)")
                  + ("; nothing was kept (no checkpoint yet)" if removed else ""), file=sys.stderr, flush=True)
            sys.exit(1)
        raise  # Lightning's exit 1 after its own message (a checkpoint saved, how to resume)
    except Exception as err:
        if other_rank():
            # Rank 0 reports and records it. Here no file is touched (it would race rank 0
            # putting a refused resume's run back) and nothing printed (the line would repeat).
            if multirun:
                return math.nan
            if isinstance(err, _user_errors()) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                sys.exit(1)
            raise
        if _resuming is not None and _resuming.untouched():
            # Nothing was trained: the run is put back as it was (in `finally`), not marked failed.
            _append_to_log(f"refused: {type(err).__name__}: {_resuming.as_typed(str(err))}")
            if isinstance(err, _user_errors()) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                print(f"error: {_resuming.as_typed(str(err))}", file=sys.stderr, flush=True)
                sys.exit(1)
            raise
        if multirun:
            _record_failure(err)
            log.error("job failed: %s: %s", type(err).__name__, err)
            return math.nan
        if not isinstance(err, _user_errors()) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            _record_failure(err)
            raise
        if not (_remove_empty_run_dir() or _remove_refused_new_run(err)):
            _record_failure(err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        # Also after Ctrl-C (Lightning exits through SystemExit) and failures mid-training.
        if _resuming is not None:
            _resuming.finish()


def _append_to_log(message: str) -> None:
    """A line in the job's log file only: logging it would print it twice on the console."""
    hc = HydraConfig.get()
    path = Path(hc.runtime.output_dir) / f"{hc.job.name}.log"
    if path.is_file():
        from datetime import datetime

        with path.open("a") as f:
            now = datetime.now()  # as logging stamps the lines before it: milliseconds after a comma
            f.write(f"[{now:%Y-%m-%d %H:%M:%S},{now.microsecond // 1000:03d}][{__name__}][ERROR] - {message}\n")


def _record_failure(err: BaseException) -> None:
    """Write (or complete) summary.json with status `failed`, keeping what train() wrote."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {"run_dir": str(run_dir)}
    if summary.get("status") in (None, "completed"):
        summary["status"] = "failed"
    summary["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    summary["traceback"] = "".join(traceback.format_exception(err))[-4000:]
    if run_dir.is_dir():
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)


def _remove_refused_new_run(err: BaseException) -> bool:
    """`ckpt_path=` of another run into a new directory, refused before its first step: the
    directory holds only what restoring wrote (the copied best checkpoint, a logger's files),
    which would look like a run."""
    from mlplab.config import ResumeRefused

    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    if isinstance(err, ResumeRefused) and _new_run_dir == run_dir:
        _remove_run_dir(run_dir)
        return True
    return False


def _remove_unstarted_run_dir() -> bool:
    """The run directory this process created, if it holds no checkpoint and no summary."""
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    if _new_run_dir != run_dir or not run_dir.is_dir():
        return False
    if (run_dir / "summary.json").exists() or any(run_dir.glob("checkpoints/*.ckpt")):
        return False
    _remove_run_dir(run_dir)
    return True


def _remove_empty_run_dir() -> bool:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    log_file = f"{hc.job.name}.log"
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", log_file}:
        _remove_run_dir(run_dir)
        return True
    return False


def _remove_run_dir(run_dir: Path) -> None:
    """The run directory, and for the default one the day's folder above it
    (`runs/<date>/<time>`) if the run was all it held."""
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        named = any(override_key(str(o)) == "hydra.run.dir" for o in HydraConfig.get().overrides.hydra)
    except ValueError:  # outside the job (a Ctrl-C in Hydra's own code): the command line says
        named = any(override_key(a) == "hydra.run.dir" for a in sys.argv[1:])
    if not named and re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_dir.parent.name):
        try:
            run_dir.parent.rmdir()  # only if empty
        except OSError:
            pass
    # Folders the claim created for this run alone (a first eval's `outputs/evals/<date>`):
    # left empty, they would look like the trace of a run.
    if _created_from is not None and _created_from in (run_dir, *run_dir.parents):
        for folder in run_dir.parents:
            if _created_from not in (folder, *folder.parents):
                break
            try:
                folder.rmdir()  # only if empty: another run may have started in it since
            except FileNotFoundError:
                continue  # the day's folder, removed above
            except OSError:
                break


@dataclass
class _Resume:
    """A `resume=` in progress: what the run held before this process, to put back if the
    resume fails before training anything, and the overrides that made the run."""

    run_dir: Path
    before: dict[str, bytes | None]  # file → its bytes (None: absent)
    last_mtime: float
    given: list[str] | None  # the overrides given with resume= (None: `ckpt_path=` in place)
    existing: frozenset[Path]  # every file the run held (a failed resume's new ones are removed)

    FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".hydra/run.lock", "summary.json")

    @classmethod
    def of(cls, run_dir: Path, given: list[str] | None) -> _Resume:
        before = {f: (run_dir / f).read_bytes() if (run_dir / f).is_file() else None for f in cls.FILES}
        existing = frozenset(p for p in run_dir.rglob("*") if p.is_file())
        return cls(run_dir, before, (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime, given, existing)

    def as_typed(self, message: str) -> str:
        """A refusal in the terms of `resume=RUN_DIR`, which the user typed, rather than the
        `ckpt_path=` it was expanded into."""
        if self.given is None:
            return message
        return message.replace(f"ckpt_path={self.run_dir / 'checkpoints' / 'last.ckpt'}", f"resume={self.run_dir}")

    def untouched(self) -> bool:
        """Nothing trained, and no summary written for a run that had none (one finished
        after a kill between its last epoch and its summary)."""
        last = self.run_dir / "checkpoints" / "last.ckpt"
        finished = self.before["summary.json"] is None and (self.run_dir / "summary.json").is_file()
        return last.is_file() and last.stat().st_mtime == self.last_mtime and not finished

    def restore(self) -> None:
        for name, data in self.before.items():
            path = self.run_dir / name
            if data is None or (data == b"" and path.resolve() in _created_lock):
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        for path in self.run_dir.rglob("*"):  # e.g. an empty TensorBoard events file
            if path.is_file() and path not in self.existing and path.suffix != ".log":
                path.unlink(missing_ok=True)

    def finish(self) -> None:
        """Put the run back if nothing was trained; else keep its overrides (below), and drop
        a summary that no longer describes the run."""
        try:
            if self.untouched():
                self.restore()
                return
            if self.given is not None:
                self.keep_overrides()
            # Trained, but stopped before train() wrote a summary (or a failure recorded one):
            # Ctrl-C. The old summary's figures are the previous call's, and its best
            # checkpoint may since have been replaced; without one the run reads as not
            # finished (a sweep's `missing`), as an interrupted new run does.
            summary = self.run_dir / "summary.json"
            if summary.is_file() and summary.read_bytes() == self.before["summary.json"]:
                summary.unlink()
        except Exception as err:  # noqa: BLE001 - bookkeeping must not fail a finished resume
            log.warning("resume: could not restore %s's config files: %s", self.run_dir, err)

    def keep_overrides(self) -> None:
        """overrides.yaml is what reproduces the run (and names its row in a leaderboard):
        the run's own overrides updated by the resume's, not `ckpt_path=...last.ckpt`."""
        import yaml

        original = self.before[".hydra/overrides.yaml"]
        merged: dict[str, str] = {}
        for o in (yaml.safe_load(original) or []) if original else []:  # verbatim: `${...}` unresolved
            merged[override_key(str(o))] = str(o)
        for o in self.given:
            k = override_key(o)
            # `+key=v` added a key the config lacks: replaying `key=w` alone would fail.
            merged[k] = "+" + o if merged.get(k, "").startswith("+") and not o.startswith(("+", "~")) else o
        path = self.run_dir / ".hydra" / "overrides.yaml"
        path.write_text(yaml.safe_dump(list(merged.values()), default_flow_style=False, allow_unicode=True))


_resuming: _Resume | None = None
_new_run_dir: Path | None = None  # the directory this process claimed for a new run
_created_from: Path | None = None  # the outermost folder that claim created (outputs/, evals/…)


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=RUN_DIR` → that run's saved config, its directory and its last.ckpt, so the
    run continues where it stopped and TensorBoard appends to the same curves. Other
    `key=value` overrides still apply (e.g. a larger trainer.max_epochs); a config group
    (`scheduler=cosine`) cannot be switched, since the saved config has no groups."""
    global _resuming
    given = [a for a in argv[1:] if a.startswith("resume=")]
    if not given:
        return argv
    if len(given) > 1:
        _exit(f"{' '.join(given)}: resume= continues one run; give it once")
    if not given[0].split("=", 1)[1].strip():
        _exit("resume=: expected a run directory, e.g. resume=outputs/runs/<date>/<time>")  # it meant the cwd
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file():
        _exit(f"resume={run_dir}: not a run directory (no .hydra/config.yaml)")
    if not last.is_file():
        _exit(f"resume={run_dir}: no checkpoints/last.ckpt to resume from")
    _saved_config(run_dir, saved)
    rest = [a for a in argv[1:] if not a.startswith("resume=")]
    if {"-m", "--multirun"} & set(rest) or any(a.startswith("sweep=") for a in rest):
        # Hydra read the overrides after the inserted ones as stray arguments: an 8-line usage.
        import shlex

        swept = [a for a in rest if a not in ("-m", "--multirun")]
        given = {override_key(a) for a in swept}
        saved_overrides = run_dir / ".hydra" / "overrides.yaml"
        run = [str(o) for o in (OmegaConf.load(saved_overrides) if saved_overrides.is_file() else [])
               if override_key(str(o)) not in given and override_key(str(o)) != "ckpt_path"]
        _exit(f"resume={run_dir}: continues one run, so it cannot be swept; a new run from its last checkpoint for "
              "each setting: python src/train.py -m " + shlex.join([*run, f"ckpt_path={last}", *swept]))
    if any(override_key(a) == "hydra.run.dir" for a in rest):
        _exit(f"resume={run_dir}: continues the run in its own directory, so hydra.run.dir cannot be given "
              f"with it; ckpt_path={last} continues it in a new one")
    config = _saved_config(run_dir, saved)
    for arg in rest:
        group = override_key(arg)
        if "=" in arg and "." not in group and OmegaConf.is_dict(config.get(group)):
            _exit(f"resume={run_dir}: {arg} would switch the config group {group!r}, which a resumed run "
                  f"cannot; set its keys instead (e.g. {group}.<name>=...), or start a new run")
    _hold_before_snapshot(run_dir, "resume=")
    # hydra.* overrides configure this process, not the run.
    _resuming = _Resume.of(run_dir, [a for a in rest if not a.startswith("-") and not override_key(a).startswith("hydra.")])
    return [argv[0], "--config-path", str(saved.parent), "--config-name", "config",
            f"hydra.run.dir={run_dir}", f"ckpt_path={last}", *rest]


def _hold_before_snapshot(run_dir: Path, typed: str) -> None:
    """The run's lock, before `_Resume.of` records its files: another process training it would
    be writing them, and a refusal here must change nothing (a run.lock it created included)."""
    from mlplab import runlock
    from mlplab.config import ResumeRefused

    lock = run_dir / ".hydra" / "run.lock"
    existed = lock.exists()
    try:
        runlock.hold(run_dir, record=False)
    except ResumeRefused as err:
        _exit(f"resume={err}" if typed == "resume=" else f"{typed}: {str(err).split(': ', 1)[1]}")
    if not existed:
        _created_lock.add(lock.resolve())


_created_lock: set[Path] = set()  # run.lock files this process made: a refusal removes them


def _drop_created_locks() -> None:
    for lock in _created_lock:  # a refused run changes nothing
        lock.unlink(missing_ok=True)


def _saved_config(run_dir: Path, saved: Path) -> Any:
    """The run's .hydra/config.yaml, or one line: damaged, it ended in a YAML traceback, or
    (empty) in errors that blamed the overrides given with resume=."""
    try:
        config = OmegaConf.load(saved)
    except Exception as err:  # noqa: BLE001 - YAML's and OmegaConf's errors, whichever
        mark = getattr(err, "problem_mark", None)  # YAML's: what and where
        why = (f"{err.problem} at line {mark.line + 1}" if mark is not None and getattr(err, "problem", None)
               else (str(err).splitlines() or [type(err).__name__])[0])
        _exit(f"resume={run_dir}: .hydra/config.yaml is unreadable ({why})")
    missing = [k for k in ("model", "data", "trainer") if not (OmegaConf.is_dict(config) and k in config)]
    if missing:
        _exit(f"resume={run_dir}: .hydra/config.yaml is damaged: it has no {missing[0]} section")
    return config


class RunDirGuard(Callback):
    """A new run never writes into a directory that holds another run: it would overwrite
    that run's config, checkpoints and summary. A directory you name (`hydra.run.dir`,
    `hydra.sweep.dir`) that holds one is refused; the default, timestamped one, if another run
    started in the same second took it, becomes `<time>-2` (`-3`, ...). For training
    (`continues_runs`), `resume=` (or a `ckpt_path=` inside the directory) continues a run in
    place; eval.py and predict.py never write into one (they would replace its `.hydra/`)."""

    def __init__(self, continues_runs: bool = True) -> None:
        self.continues_runs = continues_runs

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _resuming, _new_run_dir
        if other_rank():
            return  # started into rank 0's directory
        run_dir = Path(str(config.hydra.run.dir)).resolve()
        ckpt = config.get("ckpt_path")
        if self.continues_runs and ckpt and run_dir in Path(str(ckpt)).resolve().parents:
            # In place, as resume= does (which has already taken its snapshot): Hydra is about
            # to overwrite the run's config files, which a refusal must put back.
            if _resuming is None and (run_dir / "checkpoints" / "last.ckpt").is_file():
                _hold_before_snapshot(run_dir, "ckpt_path=" + str(ckpt))
                _resuming = _Resume.of(run_dir, None)
            return
        if _named(config, "hydra.run.dir"):
            if not _claim(run_dir) and any(run_dir.iterdir()):
                resumable = self.continues_runs and (run_dir / "checkpoints" / "last.ckpt").is_file()
                runs = find_job_dirs(run_dir)
                nested = any(d != run_dir for d in runs)
                what = ("other runs" if nested and not resumable else "another run" if runs or resumable
                        else "other files")
                _exit(f"hydra.run.dir={run_dir}: holds {what} already; choose another directory"
                      + (f", or resume={run_dir} to continue that run" if resumable else ""))
            _new_run_dir = run_dir
        else:
            _new_run_dir = _claim_free(run_dir)
            _set(config, "run", _new_run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if not _named(config, "hydra.sweep.dir"):
            _set(config, "sweep", _claim_free(sweep_dir))
            return
        _claim(sweep_dir)
        jobs = [str(d.relative_to(sweep_dir)) for d in find_job_dirs(sweep_dir)]
        if jobs == ["."]:
            _exit(f"hydra.sweep.dir={sweep_dir}: holds a run already, which this sweep would overwrite; choose "
                  "another hydra.sweep.dir")
        if jobs:
            _exit(f"hydra.sweep.dir={sweep_dir}: holds another sweep's jobs already ({len(jobs)}: "
                  f"{', '.join(jobs[:5])}{', ...' if len(jobs) > 5 else ''}), which this sweep would "
                  "overwrite; choose another hydra.sweep.dir")


def _named(config: DictConfig, name: str) -> bool:
    """Whether the user gave `name` on the command line (else it is the timestamped default)."""
    return any(override_key(str(o)) == name for o in config.hydra.overrides.hydra)


def _claim(path: Path) -> bool:
    """Create `path`; False if it existed. mkdir is atomic: of two runs, one creates it."""
    global _created_from
    first_new = next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
    try:
        path.mkdir(parents=True)
        _created_from = first_new
        return True
    except FileExistsError:
        if not path.is_dir():
            _exit(f"{path}: a file, where the run's directory would go; set paths.output_root (or hydra.run.dir, "
                  "hydra.sweep.dir) to a folder")
        return False
    except OSError as err:  # Hydra turns a callback's exception into a warning, then fails itself
        _exit(f"{path}: cannot create the run's directory ({err.strerror}); set paths.output_root (or "
              "hydra.run.dir, hydra.sweep.dir) to a writable folder")
        raise AssertionError from None  # unreachable: _exit leaves


def _claim_free(path: Path) -> Path:
    for candidate in (path, *(path.with_name(f"{path.name}-{n}") for n in range(2, 1000))):
        if _claim(candidate):
            return candidate
    _exit(f"{path}: no free directory name left beside it")
    raise AssertionError  # unreachable: _exit leaves


def _set(config: DictConfig, mode: str, path: Path) -> None:
    """Point Hydra at the claimed directory: the job reads `hydra.<mode>.dir` after this. A
    sweep's jobs are composed again from the command line's hydra overrides (the launcher's
    `load_sweep_config`), where `${now:…}` gave the taken folder back: two sweeps started in
    the same second wrote their jobs into one folder. So the claimed one becomes an override."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[mode].dir = str(path)
        if mode == "sweep":
            quoted = "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted}")


def _exit(message: str) -> NoReturn:
    _drop_created_locks()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# Lightning Trainer arguments a user may reach for, which mlplab takes elsewhere.
MOVED_KEYS = {
    "trainer.gradient_clip_val": "clipping is a model setting here: use model.gradient_clip_val",
    "trainer.gradient_clip_algorithm": "clipping is a model setting here: use model.gradient_clip_algorithm",
    "trainer.accumulate_grad_batches": "not supported (the classifier steps its optimizer itself); use a larger "
                                       "data.batch_size",
    # Built from the config groups and passed to the Trainer by train(), over any value here.
    "trainer.enable_checkpointing": "checkpointing follows callbacks.model_checkpoint (=null: no checkpoints)",
    "trainer.enable_progress_bar": "the bar follows callbacks.progress_bar (=null: none)",
    "trainer.enable_model_summary": "the summary follows callbacks.model_summary (=null: none)",
    "trainer.logger": "loggers are the logger group: logger=none, csv or tensorboard",
    "trainer.callbacks": "callbacks are the callbacks group: callbacks=none, or callbacks.<name>=null",
    "trainer.plugins": "set by train() (atomic checkpoint writes)",
}


# Hydra's flags that take a value (`--cfg job`, `-p model`): the value is not an override.
_FLAGS_WITH_VALUE = ("-cp", "--config-path", "-cn", "--config-name", "-cd",
                     "--config-dir", "-c", "--cfg", "-p", "--package", "-i", "--info", "--experimental-rerun")


def _override_args(argv: list[str]) -> list[str]:
    args: list[str] = []
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a in _FLAGS_WITH_VALUE:
            skip = True
        elif not a.startswith("-"):
            args.append(a)
    return args


def _takes(path: list[str], node: Any, name: str) -> str | None:
    """What takes `name` although the config leaves it out: the node's `_target_` (an argument
    of its constructor), or Lightning's scheduler entry (`scheduler.frequency`)."""
    import inspect

    from hydra.utils import get_method

    if path == ["scheduler"]:
        from mlplab.config import SCHEDULER_KEYS

        return "Lightning's scheduler entry" if name in SCHEDULER_KEYS else None
    target = node.get("_target_") if "_target_" in node else None
    if not isinstance(target, str):
        return None
    try:
        param = inspect.signature(get_method(target)).parameters.get(name)
    except Exception:  # noqa: BLE001 - not importable: validation names it once composed
        return None
    if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        return None
    return target.rsplit(".", 1)[-1]


def _unknown_hydra_options(parsed: list[Any], loader: Any) -> list[str]:
    """`hydra/launcher=joblb`: Hydra's groups (and its plugins') are not folders of conf/, so
    their options come from Hydra's own search path."""
    import difflib

    messages = []
    for o in parsed:
        group = o.key_or_group
        if not group.startswith("hydra/") or o.is_delete() or o.is_sweep_override():
            continue
        try:
            value, choices = o.value(), sorted(loader.get_group_options(group))
        except Exception:  # noqa: BLE001 - left to Hydra
            continue
        if choices and isinstance(value, str) and "${" not in value and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            messages.append(f"{group}={value}: not an option of {group}: {', '.join(choices)}"
                            + (f"; did you mean {group}={close[0]}?" if close else ""))
    return messages


def _sweeps_without_multirun(argv: list[str]) -> list[str]:
    """`optimizer.lr=1e-3,1e-2` without -m: Hydra's own message is five lines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(_override_args(argv))
    except Exception:  # noqa: BLE001 - unparsable: reported by unknown_overrides
        return []
    return [f"{o.input_line}: several values are a sweep; add -m to run one job each "
            f"(python src/{Path(argv[0]).name} -m …), or write a list as [a,b]"
            for o in parsed if o.is_sweep_override()][:1]


def unknown_overrides(argv: list[str], conf_dir: Path, config_name: str) -> list[str]:
    """One message for each override Hydra cannot place: a key that is not in the config
    (with the closest key), or a group option that does not exist (with the group's options).
    Hydra's own messages take several lines, end with its search path, and suggest `+a.b=v`,
    which for most keys only moves the failure to the constructor. Best effort: whatever
    this cannot parse or compose is left to Hydra."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig

    args = _override_args(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - Hydra's grammar: name the override it cannot read, in one line
        return _unparsable(args)
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    messages: list[str] = []
    selections: list[str] = []
    unchecked: set[str] = set()  # groups whose keys cannot be checked against one composed option
    for o in parsed:
        group = o.key_or_group
        if group not in groups or o.is_delete():
            continue
        if o.is_sweep_override():  # its keys differ by option: left to the sweep's preflight
            unchecked.add(group)
        if o.is_sweep_override() and not o.is_discrete_sweep():
            continue  # a glob of options is Hydra's to expand
        choices = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
        try:
            raw = list(o.sweep_iterator()) if o.is_discrete_sweep() else [o.value()]
        except Exception:  # noqa: BLE001 - whatever Hydra's grammar yields that is not a value
            continue
        # unquoted (optimizer="sgd" is sgd); a list selects several options (logger=[tensorboard,csv])
        values = ["null" if v is None else str(v) for r in raw for v in (r if isinstance(r, list) else [r])]
        if any("${" in v for v in values):  # an interpolation: Hydra resolves it
            unchecked.add(group)
            continue
        missing = [v for v in values if v not in choices and v != "null"]
        if missing:
            close = difflib.get_close_matches(missing[0], choices, n=1)
            messages.append(f"{group}={missing[0]}: not an option of {group}: {', '.join(choices)}"
                            + (f"; did you mean {group}={close[0]}?" if close else ""))
            unchecked.add(group)  # its keys would be checked against another option
        elif not o.is_sweep_override() and group not in unchecked:
            selections.append(o.input_line or f"{group}={values[0]}")
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            messages += _unknown_hydra_options(parsed, GlobalHydra.instance().config_loader())
            try:
                base = compose(config_name, overrides=selections)
            except Exception:  # noqa: BLE001 - Hydra reports what composing cannot do, or:
                return messages + _misplaced_selections(selections, groups, conf_dir, config_name)
            if config_name != "train" and any(s.startswith("+") for s in selections):
                # eval.py and predict.py compose a training group added with + and ignore it.
                messages += _misplaced_selections(selections, groups, conf_dir, config_name)
    except Exception:  # noqa: BLE001
        return messages
    finally:
        GlobalHydra.instance().clear()
    added = {o.key_or_group for o in parsed if o.is_add() or o.is_force_add()}
    for o in parsed:
        key = o.key_or_group
        if ((o.is_add() or o.is_force_add()) and "." not in key and "/" not in key and key not in groups
                and not key.startswith("hydra") and key not in base):
            # Nothing reads a top-level key the config does not have: `+seeed=1` would run (and
            # sweep) the default seed, named as another setting.
            close = difflib.get_close_matches(key, [str(k) for k in base.keys()], n=1)
            line = o.input_line or f"+{key}="
            messages.append(f"{line}: adds a top-level key that nothing reads"
                            + (f"; did you mean {close[0]}={line.split('=', 1)[-1]}?" if close else ""))
    for o in parsed:
        key = o.key_or_group
        parts = key.split(".")
        if (o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None or key in groups
                or key in added or parts[0] in unchecked or key.startswith("hydra") or "/" in key):
            continue
        node: Any = base
        override = o.input_line or key
        for i, part in enumerate(parts):
            if isinstance(node, DictConfig) and part in node:
                node = node._get_node(part)  # the node, not its value: `${hydra:...}` resolves only in a run
                continue
            if isinstance(node, DictConfig) and key in MOVED_KEYS:
                messages.append(f"{override}: not a config key: {MOVED_KEYS[key]}")
            elif i == 0 and part in groups:  # e.g. eval.py's data group, unset by default
                choices = ", ".join(sorted(p.stem for p in (conf_dir / part).glob("*.yaml")))
                messages.append(f"{override}: no {part} group is selected here; choose one first "
                                f"({part}=<option> {override}; options: {choices})")
            elif isinstance(node, DictConfig) and (taker := _takes(parts[:i], node, part)):
                # A real argument the YAML leaves out: "not a config key" read as "not supported".
                messages.append(f"{override}: not in conf/trainer; a Lightning Trainer argument is added with +: "
                                f"+{override}" if parts[:i] == ["trainer"] else
                                f"{override}: not set in conf/{parts[0]}; {taker} takes it, added with +: +{override}")
            elif isinstance(node, DictConfig):
                close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1)
                guess = ".".join([*parts[:i], close[0]]) if close else None
                messages.append(f"{override}: not a config key" + (f"; did you mean {guess}?" if guess else ""))
            break
    return messages


def _unparsable(args: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except Exception as err:  # noqa: BLE001 - Hydra's grammar errors
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            why = next((ln for ln in lines if not ln.startswith(("Error parsing override", "See https://"))), "")
            return [f"{arg}: not an override Hydra can read ({why}); the form is key=value, a list as "
                    "key=[a,b] (quoted for the shell)"]
    return []


def _misplaced_selections(selections: list[str], groups: set[str], conf_dir: Path, config_name: str) -> list[str]:
    """Group selections that fail to compose because of the defaults list: a group this config
    does not have (`regularizer=l2` without the experiment that brings it), or one it has,
    added again with `+`. Hydra's two-line answers did not say which experiment to use."""
    from hydra import compose

    def group_of(sel: str) -> str:
        return sel.split("=", 1)[0].lstrip("+~")

    try:
        bare = compose(config_name, return_hydra_config=True)
        kept = [s for s in selections if group_of(s) in bare.hydra.runtime.choices and not s.startswith("+")]
        chosen = compose(config_name, overrides=kept, return_hydra_config=True).hydra.runtime.choices
    except Exception:  # noqa: BLE001 - something else is wrong: Hydra says what
        return []
    messages = []
    script = f"{config_name}.py" if config_name != "train" else ""  # conf/eval.yaml is src/eval.py's
    for sel in selections:
        group = group_of(sel)
        if script and group not in chosen and group in groups:
            uses = sorted(g for g in chosen if not g.startswith("hydra"))
            messages.append(f"{sel}: {script} has no {group} group ("
                            + (f"its groups: {', '.join(uses)}" if uses else "it takes no config group")
                            + "); the model and how it was trained come from the checkpoint")
        elif sel.startswith("+") and group in chosen:
            default = f"by default {group}={chosen[group]}" if chosen[group] is not None else "unset by default"
            messages.append(f"{sel}: {group} is in this config already ({default}); select an option without +: "
                            f"{sel.lstrip('+')}")
        elif not sel.startswith("+") and group not in chosen and group in groups:
            brings = sorted(p.stem for p in (conf_dir / "experiment").glob("*.yaml")
                            if f"/{group}:" in p.read_text()) if (conf_dir / "experiment").is_dir() else []
            messages.append(f"{sel}: no {group} group in this config; "
                            + (f"experiment={brings[0]} brings one, or " if brings else "")
                            + f"add it with +{sel}")
    return messages


def run_entry_point(main: Callable[[], object], conf_dir: Path, config_name: str, resume: bool = True) -> None:
    """Call a `@hydra.main` function (with `resume=` expanded, for training), after refusing
    in one line each override Hydra could not place."""
    if resume:
        sys.argv = resume_argv(sys.argv)
    if _resuming is not None:  # resume=: the run's saved config
        conf_dir = _resuming.run_dir / ".hydra"
        config_name = "config"
    # Other config sources (a user's --config-dir, -cp, hydra.searchpath) may hold keys and
    # options this check cannot see; shell completion is not a run. Hydra checks those alone.
    elsewhere = any(a.startswith(("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name",
                                  "hydra.searchpath", "+hydra.searchpath", "-sc", "--shell-completion"))
                    for a in sys.argv[1:])
    if os.environ.get("HYDRA_FULL_ERROR") != "1" and (_resuming is not None or not elsewhere):
        messages = unknown_overrides(sys.argv, conf_dir, config_name)
        # As preflight's; conf/sweep's options start a multirun without -m.
        multirun = {"-m", "--multirun"} & set(sys.argv) or any(a.startswith("sweep=") for a in sys.argv[1:])
        sweep = "sweep not started: " if multirun else ""
        if not multirun and not any(a.lstrip("+").startswith("hydra.mode=") for a in sys.argv[1:]):
            messages = _sweeps_without_multirun(sys.argv) + messages
        for message in messages:
            print(f"error: {sweep}{message}", file=sys.stderr, flush=True)
        if messages:
            _drop_created_locks()
            sys.exit(1)
    try:
        with SigtermAsInterrupt():
            main()
    except KeyboardInterrupt:  # in Hydra's own code, before or after the job: no traceback
        if _new_run_dir is not None and _resuming is None and _new_run_dir.is_dir() and {
                p.name for p in _new_run_dir.iterdir()} <= {".hydra", f"{Path(sys.argv[0]).stem}.log"}:
            _remove_run_dir(_new_run_dir)
        print(f"error: interrupted ({'SIGTERM' if SigtermAsInterrupt.received else 'Ctrl-C'})", file=sys.stderr,
              flush=True)
        sys.exit(1)
