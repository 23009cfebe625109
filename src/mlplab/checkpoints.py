"""Saving a checkpoint so that a killed run never leaves a partial one, and loading one
without trusting it.

A `.ckpt` is a pickle, and unpickling can run any code the file names. Every load here uses
`torch.load(weights_only=True)`, whose restricted unpickler accepts only tensors and plain
containers; everything else a checkpoint must say (the model's and the data's settings) is
stored as plain types by `train()`. The data config names a class to instantiate, so that
`_target_` is accepted only if it is one of mlplab's own datamodules: a crafted checkpoint
cannot make eval.py call an arbitrary function either.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import pickletools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mlplab.data.base import TensorDataModule
from mlplab.models.classifier import Classifier

ZIP_MAGIC = b"PK\x03\x04"  # torch.save and Lightning write zip archives
DATA_PACKAGE = "mlplab.data."


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning writes a checkpoint to a temporary file in the system's temp directory and
    moves it into place; where that directory is another filesystem (a tmpfs /tmp), the move
    is a copy, and a run killed during it leaves a truncated `last.ckpt`. Here the temporary
    file sits beside the checkpoint, is flushed to disk, and is renamed over it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class CheckpointError(ValueError):
    """One line: the checkpoint file and what is wrong with it."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    model: Classifier  # in eval mode, on the CPU
    hparams: dict[str, Any]  # the Classifier's arguments
    data: dict[str, Any]  # the data config the model was trained with
    class_names: list[str]
    epoch: int | None
    run: str | None = None  # the checkpoints folder it was saved to in training: one per run, kept by copies

    @property
    def in_features(self) -> int:
        return int(self.hparams["in_features"])

    @property
    def n_classes(self) -> int:
        return int(self.hparams["n_classes"])


def _has_zip_end(path: Path) -> bool:
    """Whether the file ends as a zip archive does (its end-of-central-directory record lies in
    the last 64 KiB + 22 bytes): a truncated checkpoint lost it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65557))
            return b"PK\x05\x06" in f.read()
    except OSError:
        return True  # unreadable is reported as such elsewhere


def _first_line(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _pickle_globals(data: bytes) -> list[str]:
    """The `module.name`s a pickle stream would import, found by reading its opcodes
    (`pickletools` only parses; nothing is imported or called)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a malformed stream just ends the scan
        pass
    return found


def _refused(path: Path, err: BaseException, head: bytes) -> CheckpointError:
    """The restricted unpickler stopped: either the file needs a global that is not plain
    data (name it), or it is not a pickle at all."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    names = [match.group(1)] if match else []
    if not names and not head.startswith(ZIP_MAGIC):
        names = _pickle_globals(path.read_bytes()[: 1 << 20])
    if names:
        return CheckpointError(
            f"{path}: refused: loading it would import {names[0]}, which a checkpoint of "
            "tensors and plain settings never needs (nothing in it was executed)"
        )
    if head.startswith(ZIP_MAGIC):
        return CheckpointError(f"{path}: corrupted checkpoint (its pickled data cannot be read)")
    return _not_torch(path, head)


def _not_torch(path: Path, head: bytes) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a PyTorch checkpoint (expected the zip archive Lightning writes; "
        f"the file starts with {head[:4]!r})"
    )


def existing_file(path: str | Path) -> Path:
    """`path` if it is a file; `CheckpointError` for a missing path or a directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        # best.ckpt, or a final fit's final.ckpt; in the run directory or its checkpoints folder.
        found = next((f for folder in (p / "checkpoints", p) for f in (folder / "best.ckpt", folder / "final.ckpt")
                      if f.is_file()), None)
        hint = f"; did you mean {found}?" if found else ""
        raise CheckpointError(f"{p}: is a directory, expected a .ckpt file{hint}")
    return p


def as_key(key: str, err: CheckpointError) -> CheckpointError:
    """The same refusal, led by the key that named the file (`ckpt_path=…: no such file`)."""
    return CheckpointError(f"{key}={err}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded with `weights_only=True`; `CheckpointError` otherwise."""
    p = existing_file(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{p}: unreadable ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{p}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol makes torch warn before it refuses; one line is enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(p, e, head) from None
    except Exception as e:  # noqa: BLE001 - torch reports bad archives with many types
        if not head.startswith(ZIP_MAGIC):
            raise _not_torch(p, head) from None
        if "central directory" in str(e) or not _has_zip_end(p):
            # torch 2.14 reports most truncations as "OSError: [Errno 22] Invalid argument".
            raise CheckpointError(
                f"{p}: truncated or corrupted (the zip archive has no central directory; "
                "was the copy or the save interrupted?)"
            ) from None
        raise CheckpointError(f"{p}: corrupted checkpoint ({type(e).__name__}: {_first_line(str(e))})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{p}: a PyTorch file but not a Lightning checkpoint (no state_dict)")
    return ckpt


def _hparams(path: Path, ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict):
        raise CheckpointError(f"{path}: no hyper_parameters; not a checkpoint written by mlplab's train.py")
    missing = [k for k in ("in_features", "n_classes", "data", "class_names") if k not in hp]
    if missing:
        raise CheckpointError(
            f"{path}: hyper_parameters lack {', '.join(missing)}; not a checkpoint written by mlplab's train.py"
        )
    data, names = hp["data"], hp["class_names"]
    if not isinstance(data, dict) or not isinstance(names, list) or len(names) != hp["n_classes"]:
        raise CheckpointError(f"{path}: hyper_parameters 'data' / 'class_names' are malformed")
    params = inspect.signature(Classifier.__init__).parameters
    model_args = {k: v for k, v in hp.items() if k in params and k != "self"}
    return model_args, dict(data), [str(n) for n in names]


def _describe_mismatch(path: Path, model: torch.nn.Module, state: dict[str, Any], args: dict[str, Any]) -> None:
    own = model.state_dict()
    arch = f"hidden_sizes={args.get('hidden_sizes')}, norm={args.get('norm')}, blocks={args.get('blocks', 0)}, members={args.get('members', 1)}"
    for key, tensor in own.items():
        if key not in state:
            raise CheckpointError(f"{path}: weights do not match its architecture ({arch}): {key} missing")
        got = tuple(getattr(state[key], "shape", ()))
        if got != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: weights do not match its architecture ({arch}): {key} is "
                f"{list(got)} in the file, {list(tensor.shape)} in the model"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{path}: weights do not match its architecture ({arch}): unexpected {extra[0]}")


def load(path: str | Path) -> LoadedCheckpoint:
    """Read, validate and rebuild the model of an mlplab checkpoint (CPU, eval mode)."""
    p = Path(path).expanduser()
    ckpt = read_checkpoint(p)
    args, data, names = _hparams(p, ckpt)
    try:
        model = Classifier(**args)
    except Exception as e:  # noqa: BLE001 - any bad setting means this file cannot be used
        raise CheckpointError(f"{p}: cannot rebuild the model from its hyper_parameters ({_first_line(str(e))})") from None
    state = ckpt["state_dict"]
    _describe_mismatch(p, model, state, args)
    model.load_state_dict(state, strict=True)
    # A run whose weights went NaN (its last step before the save, or callbacks.finite_loss=null)
    # predicts class 0 for everything: eval.py printed that as an accuracy, exit 0. The model's
    # own tensors only: a metric's state (val_acc_best before any validation) is -inf by design.
    bad = next((k for k, t in (*model.named_parameters(), *model.named_buffers())
                if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise CheckpointError(f"{p}: its weights hold NaN or infinite values ({bad}): the run diverged before "
                              "this checkpoint was saved, so it predicts nothing; use one saved before it diverged")
    model.use_precision(ckpt["hyper_parameters"].get("precision"))
    model.eval()
    epoch = ckpt.get("epoch")
    callbacks = ckpt.get("callbacks") if isinstance(ckpt.get("callbacks"), dict) else {}
    run = next((str(v["dirpath"]) for k, v in callbacks.items()
                if str(k).startswith("ModelCheckpoint") and isinstance(v, dict) and v.get("dirpath")), None)
    return LoadedCheckpoint(p, model, args, data, names, int(epoch) if isinstance(epoch, int) else None, run)


def datamodule_class(path: Path, target: Any) -> type[TensorDataModule]:
    """The datamodule class a checkpoint names, imported only if it is one of mlplab's."""
    if not isinstance(target, str) or not target.startswith(DATA_PACKAGE):
        raise CheckpointError(f"{path}: data._target_={target!r} is not an mlplab datamodule; refused")
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{path}: data._target_={target!r} does not exist in this version of mlplab") from None
    if not (isinstance(cls, type) and issubclass(cls, TensorDataModule)):
        raise CheckpointError(f"{path}: data._target_={target!r} is not an mlplab datamodule; refused")
    return cls


def build_datamodule(path: Path, data: dict[str, Any], data_dir: str | None = None) -> TensorDataModule:
    """The datamodule of a data config (the checkpoint's, or one the user chose). `data_dir`
    replaces the stored one, which was relative to wherever training ran."""
    cls = datamodule_class(path, data.get("_target_"))
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in data.items() if k in params and k != "self"}
    if data_dir is not None and "data_dir" in params:
        kwargs["data_dir"] = data_dir
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot build the data from its settings ({_first_line(str(e))})") from None


def check_compatible(loaded: LoadedCheckpoint, dm: TensorDataModule, data_name: str) -> None:
    """The model must fit the data: same input size, same number and names of classes."""
    if dm.n_features != loaded.in_features or dm.n_classes != loaded.n_classes:
        raise CheckpointError(
            f"{loaded.path}: the model takes {loaded.in_features} input features and predicts "
            f"{loaded.n_classes} classes, but data {data_name} has {dm.n_features} features and "
            f"{dm.n_classes} classes"
        )
    if list(dm.class_names) != loaded.class_names:
        raise CheckpointError(
            f"{loaded.path}: trained on classes {short_names(loaded.class_names)}, but data {data_name} "
            f"has classes {short_names(list(dm.class_names))}; evaluate it on the data it was trained on"
        )


def short_names(names: list[str]) -> str:
    """The first class names, for a one-line message."""
    return "[" + ", ".join(names[:4]) + (", …]" if len(names) > 4 else "]")
