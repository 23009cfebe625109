"""Metrics of a checkpoint on a split, and class probabilities for new inputs.

Both go through the datamodule's own evaluation batches and `eval_transform`, so eval.py
reproduces the test metrics printed at the end of training and predict.py normalises inputs
exactly as training did.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlplab.data.base import TensorDataModule, holdout_difference
from mlplab.models.classifier import Classifier

SPLITS = ("test", "val")
PRECISIONS = ("32-true", "bf16-mixed")  # what eval/predict's `precision` may choose
PREDICT_BATCH = 8192  # rows per model call: an MLP this size handles it in one go


@dataclass(frozen=True)
class Evaluation:
    split: str
    n: int
    loss: float
    accuracy: float
    per_class: list[float]  # accuracy (recall) of each true class; nan if absent
    confusion: np.ndarray  # [true, predicted] counts
    class_names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n": self.n,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "per_class_accuracy": dict(zip(self.class_names, self.per_class, strict=True)),
            "confusion_matrix": self.confusion.tolist(),
            "class_names": self.class_names,
        }


def _batches(dm: TensorDataModule, split: str) -> Any:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return dm.test_dataloader() if split == "test" else dm.val_dataloader()


@torch.no_grad()
def split_outputs(model: Classifier, dm: TensorDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(class probabilities [N, C], labels [N], mean loss) over a split, batch by batch as
    the trainer's test loop does (same batches, same loss, so the same numbers)."""
    probs, labels = [], []
    loss_sum, n = 0.0, 0
    for x, y in _batches(dm, split):
        out = model(x)
        loss_sum += float(model.data_loss(out, y)) * y.numel()
        n += y.numel()
        # In float32 whatever the model ran in: numpy has no bfloat16 (a bf16-true run's report
        # failed), and a softmax in bf16 rounds nearby probabilities to ties, so argmax chose
        # another class than the logits the run's test/acc was measured on.
        out = out.float()
        probs.append(out.exp() if model.loss_name == "nll" else out.softmax(dim=1))
        labels.append(y)
    return torch.cat(probs), torch.cat(labels), loss_sum / max(n, 1)


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> np.ndarray:
    idx = y.long() * n_classes + pred.long()
    return torch.bincount(idx.cpu(), minlength=n_classes * n_classes).reshape(n_classes, n_classes).numpy()


def evaluate(model: Classifier, dm: TensorDataModule, split: str = "test") -> Evaluation:
    if not dm.splits:
        dm.setup()
    was_training = model.training
    model.eval()
    try:
        probs, y, loss = split_outputs(model, dm, split)
    finally:
        model.train(was_training)
    return _evaluation(probs, y, loss, split, list(dm.class_names))


def format_evaluation(ev: Evaluation) -> str:
    names = ev.class_names
    # Digits need no separate index column; Fashion-MNIST's names do.
    plain = names == [str(i) for i in range(len(names))]
    width = max(len(n) for n in names)
    label = (lambda i, name: f"  {name:>{width}}") if plain else (lambda i, name: f"  {i:>2} {name:<{width}}")
    lines = [
        f"loss       {ev.loss:.6f}",
        f"accuracy   {ev.accuracy:.6f}  ({int(np.trace(ev.confusion))}/{ev.n})",
        "",
        "per-class accuracy:",
    ]
    totals = ev.confusion.sum(1)
    lines += [f"{label(i, name)}  {acc:.4f}  (n={totals[i]})" for i, (name, acc) in enumerate(zip(names, ev.per_class, strict=True))]
    cell = max(5, len(str(ev.confusion.max())) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class index):",
              " " * len(label(0, names[0])) + "".join(f"{j:>{cell}}" for j in range(len(names)))]
    lines += [label(i, name) + "".join(f"{v:>{cell}}" for v in row)
              for i, (name, row) in enumerate(zip(names, ev.confusion, strict=True))]
    return "\n".join(lines)


@torch.no_grad()
def predict_proba(model: Classifier, features: torch.Tensor, batch_size: int = PREDICT_BATCH,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class probabilities [N, C] of [N, F] features, or of [views, N, F] (`data.tta`), a few
    thousand rows per model call. With `transform` (a datamodule's `eval_transform`), `features`
    are raw inputs [N, ...] transformed a batch at a time, so that test-time views of a large
    input never exist all at once."""
    model.eval()
    if transform is not None:
        n = len(features)
        batches = (transform(features[i : i + batch_size]) for i in range(0, n, batch_size))
    else:
        n = features.shape[-2]
        batches = (features[..., i : i + batch_size, :] for i in range(0, n, batch_size))
    out = [model.predict_step(x, i) for i, x in enumerate(batches)]
    return torch.cat(out) if out else features.new_zeros((0, model.hparams.n_classes))


def write_atomic(path: Path, text: str) -> None:
    """Readers (and a killed run) see no file or the whole file, never a partial one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def predictions_csv(ids: Sequence[str], probs: torch.Tensor, class_names: Sequence[str]) -> str:
    """One row per input: its id, the predicted class name, and every class's probability
    under a column named after the class."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "predicted", *class_names])
    pred = probs.argmax(1).tolist()
    for i, row in enumerate(probs.cpu().numpy()):
        w.writerow([ids[i], class_names[pred[i]], *(f"{p:.6f}" for p in row)])
    return buf.getvalue()


# --------------------------------------------------------------------------- prediction inputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INVERT = ("auto", "true", "false")


def _data_error(message: str) -> Exception:
    from mlplab.data.sources import DataError

    return DataError(message)


def to_mnist_pixels(img: Any, shape: tuple[int, int], invert: str) -> np.ndarray:
    """A PIL image → uint8 [H, W] like the training data: grayscale, light strokes on a
    black background, the whole picture padded to a square (not stretched) and resized with
    an antialiasing filter. `invert=auto` inverts when the border is mostly light, i.e. a
    dark drawing on white paper (or on a transparent canvas)."""
    from PIL import Image, ImageOps

    # A phone photo's pixels are stored as the camera was held; EXIF says how to turn them.
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):
        # 16-bit grayscale: convert("L") would clip every value above 255 to white.
        deep = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or deep.max() > 255:
            deep = deep / 257.0
        img = Image.fromarray(np.clip(np.rint(deep), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            # A drawing on a transparent canvas: the colour under alpha 0 is arbitrary (often
            # black, which hid black ink). Put it on paper that contrasts with its ink.
            ink = np.asarray(rgba.convert("L"))[alpha > 127]
            paper = 255 if ink.size == 0 or ink.mean() < 128 else 0
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (paper, paper, paper, 255)), rgba)
    gray = img.convert("L")
    a = np.asarray(gray)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if invert == "true" or (invert == "auto" and border.mean() > 127):
        gray = ImageOps.invert(gray)
    w, h = gray.size
    if w != h:
        side = max(w, h)
        square = Image.new("L", (side, side), 0)
        square.paste(gray, ((side - w) // 2, (side - h) // 2))
        gray = square
    if gray.size != (shape[1], shape[0]):
        gray = gray.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    return np.array(gray, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on a read-only array


def _read_image(path: Path, shape: tuple[int, int], invert: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return to_mnist_pixels(img, shape, invert)
    except UnidentifiedImageError:
        raise _data_error(f"{path}: not a readable PNG/JPEG image") from None
    except Image.DecompressionBombError as e:
        raise _data_error(f"{path}: refused ({e})") from None
    except OSError as e:
        raise _data_error(f"{path}: unreadable image ({e.strerror or e})") from None


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 [N, H, W] from an IDX images file (optionally gzipped), checked against its
    own header."""
    import gzip
    import zlib

    from mlplab.data.sources import IMAGES_MAGIC, LABELS_MAGIC

    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _data_error(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic == LABELS_MAGIC:
        raise _data_error(f"{path}: an IDX labels file; predict needs the images file (…-images-idx3-ubyte)")
    if magic != IMAGES_MAGIC:
        raise _data_error(f"{path}: not an IDX images file (magic 0x{max(magic, 0):08x}, expected 0x{IMAGES_MAGIC:08x})")
    if len(raw) < 16:
        raise _data_error(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    expected = 16 + dims[0] * dims[1] * dims[2]
    if len(raw) != expected:
        raise _data_error(f"{path}: {len(raw)} bytes, expected {expected} for {dims[0]} images of {dims[1]}×{dims[2]}")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(dims)


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            header = f.read(6)
        # numpy reads any file without its header as a pickle, and says so: check it here.
        if header != b"\x93NUMPY":
            raise _data_error(f"{path}: not a .npy array file (no .npy header)")
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        why = "holds Python objects (refused: loading them could run code)" if "bject" in str(e) else "not a .npy array file"
        raise _data_error(f"{path}: {why}") from None
    except (OSError, EOFError) as e:
        raise _data_error(f"{path}: unreadable .npy file ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(arr, np.ndarray):
        raise _data_error(f"{path}: not a single .npy array")
    return arr


def _pixels_from_array(path: Path, arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[N, H, W] or [N, H·W] (or one [H, W] image), uint8 or integers in 0..255 or floats
    in [0, 1] → float32 [N, H, W] in the 0..255 scale the datamodule's transform expects."""
    h, w = shape
    if arr.ndim == 2 and arr.shape == (h, w):
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == h * w:
        arr = arr.reshape(-1, h, w)
    if arr.ndim != 3 or arr.shape[1:] != (h, w):
        raise _data_error(f"{path}: array of shape {list(arr.shape)}; expected [N, {h}, {w}] or [N, {h * w}] images")
    if len(arr) == 0:
        raise _data_error(f"{path}: empty array (0 images)")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if arr.min() < 0 or arr.max() > 255:
            raise _data_error(f"{path}: integer pixels must be in 0..255, got {arr.min()}..{arr.max()}")
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            finite = arr[np.isfinite(arr)]
            got = f"{finite.min():g}..{finite.max():g}" if finite.size else "no finite value"
            if finite.size < arr.size:
                got += f", {arr.size - finite.size} NaN or infinite"
            raise _data_error(
                f"{path}: float pixels must be finite and in [0, 1], got {got} (save 0..255 pixels as uint8)"
            )
        return arr.astype(np.float32) * 255.0
    raise _data_error(f"{path}: array of dtype {arr.dtype}; expected uint8 pixels or floats in [0, 1]")


def _features_from_array(path: Path, arr: np.ndarray, n_features: int) -> np.ndarray:
    if arr.ndim == 1 and arr.shape[0] == n_features:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise _data_error(f"{path}: array of shape {list(arr.shape)}; this model takes [N, {n_features}] features")
    if len(arr) == 0:
        raise _data_error(f"{path}: empty array (0 rows)")
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        raise _data_error(f"{path}: array of dtype {arr.dtype}; expected numbers")
    if not np.isfinite(arr).all():
        raise _data_error(f"{path}: array holds NaN or infinite values")
    return arr.astype(np.float32)


def read_inputs(
    path: str | Path, image_shape: tuple[int, int] | None, n_features: int, invert: str = "auto"
) -> tuple[list[str], torch.Tensor]:
    """(an id per input, raw inputs) from a PNG/JPEG file, a directory of them, an IDX
    images file or a .npy array. Raw means before the datamodule's `eval_transform`:
    pixels [N, H, W] in 0..255 for image models, features [N, n_features] otherwise."""
    p = Path(path).expanduser()
    if invert not in INVERT:
        from mlplab.config import ConfigError

        raise ConfigError(f"invert={invert!r}: expected one of {', '.join(INVERT)}")
    if not p.exists():
        raise _data_error(f"{p}: no such file or directory")
    if image_shape is None:
        if p.is_dir() or p.suffix.lower() != ".npy":
            raise _data_error(f"{p}: this model was trained on synthetic features; give a .npy array of shape [N, {n_features}]")
        return _ids(p, _features_from_array(p, _read_npy(p), n_features))
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _data_error(f"{p}: no {'/'.join(IMAGE_SUFFIXES)} images in this directory")
        pixels = np.stack([_read_image(f, image_shape, invert) for f in files])
        return [f.name for f in files], torch.from_numpy(pixels)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [p.name], torch.from_numpy(_read_image(p, image_shape, invert)[None])
    if suffix == ".npy":
        return _ids(p, _pixels_from_array(p, _read_npy(p), image_shape))
    images = read_idx_images(p)
    if images.shape[1:] != image_shape:
        raise _data_error(f"{p}: images are {images.shape[1]}×{images.shape[2]}; this model takes {image_shape[0]}×{image_shape[1]}")
    if len(images) == 0:
        raise _data_error(f"{p}: IDX file with 0 images")
    return _ids(p, images.copy())


def _ids(path: Path, arr: np.ndarray) -> tuple[list[str], torch.Tensor]:
    """Rows of an array file are named `file[i]`."""
    return [f"{path.name}[{i}]" for i in range(len(arr))], torch.from_numpy(arr)


# --------------------------------------------------------------------------- commands


def _required_path(cfg: Any, key: str, example: str) -> Path:
    value = cfg.get(key)
    if value in (None, ""):
        from mlplab.config import ConfigError

        raise ConfigError(f"{key}: required, e.g. {key}={example}")
    return Path(str(value)).expanduser()


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _set_threads(cfg: Any) -> None:
    from mlplab.config import check_threads

    check_threads(cfg.get("torch_threads"))
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)


def _checked_precision(cfg: Any) -> str | None:
    """`precision` of eval.yaml / predict.yaml: null keeps the checkpoint's own (the autocast
    it was trained with; 32-bit for checkpoints that predate the record)."""
    from mlplab.config import ConfigError

    chosen = cfg.get("precision")
    if chosen is not None and str(chosen) not in PRECISIONS:
        raise ConfigError(f"precision={chosen!r}: expected one of {', '.join(PRECISIONS)}, or null for "
                          "the precision the checkpoint was trained with")
    return None if chosen is None else str(chosen)


def _check_same_holdout(data: Mapping[str, Any], trained: Mapping[str, Any], ckpt_path: Path) -> None:
    """`split=val` with a data group named on the command line must score the checkpoint's
    own hold-out: any other contains samples it was trained on."""
    from mlplab.config import ConfigError, show

    key = holdout_difference(data, trained, given_only=True)
    if key is not None:
        raise ConfigError(f"data.{key}={show(data[key])}: {ckpt_path} held out its validation split with "
                          f"data.{key}={show(trained[key])}; another hold-out contains samples it was trained on "
                          "(for split=val, leave it as trained)")


@dataclass
class _Member:
    """One checkpoint of `src/eval.py`, with the data it is scored on."""

    path: Path
    loaded: Any  # checkpoints.LoadedCheckpoint
    data: dict[str, Any]
    dm: TensorDataModule
    data_name: str
    precision: str


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: json.dumps writes them as bare NaN, which strict readers
    refuse (a class absent from the split has no accuracy)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _ckpt_paths(cfg: Any) -> list[Path]:
    """`ckpt_path`: one checkpoint, or several scored as an ensemble by their mean class
    probability: a list (`ckpt_path=[a.ckpt,b.ckpt]`) or a pattern that matches several
    (`ckpt_path='outputs/multirun/<date>/<time>/*/checkpoints/best.ckpt'`, a sweep's runs)."""
    import glob

    from omegaconf import ListConfig

    from mlplab.config import ConfigError

    value = cfg.get("ckpt_path")
    if not isinstance(value, (list, tuple, ListConfig)):
        value = [str(_required_path(cfg, "ckpt_path", "outputs/runs/<date>/<time>/checkpoints/best.ckpt"))]
    elif not value or any(v in (None, "") for v in value):
        raise ConfigError(f"ckpt_path={list(value)!r}: expected checkpoint paths, e.g. ckpt_path=[<run1>/checkpoints/"
                          "best.ckpt,<run2>/checkpoints/best.ckpt]")
    paths: list[Path] = []
    for item in map(str, value):
        item = str(Path(item).expanduser())
        if glob.has_magic(item) and not Path(item).exists():
            # A sweep's jobs in their order (2 before 10), not the string order.
            found = sorted(glob.glob(item), key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f)])
            if not found and item.startswith("[") and item.endswith("]") and "," in item:
                # Hydra reads a quoted list ('[a,b]' inside the shell's quotes) as one string.
                raise ConfigError(f"ckpt_path={item}: a string, not a list (quoted for Hydra?); give the list "
                                  f"unquoted inside the shell's quotes: 'ckpt_path={item}'")
            if not found:
                raise ConfigError(f"ckpt_path={item}: the pattern matches no file")
            paths += map(Path, found)
        else:
            paths.append(Path(item))
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            raise ConfigError(f"ckpt_path: {p} {_ONE_A_RUN.format(what='is given twice')}")
        seen.add(p.resolve())
    return paths


_ONE_A_RUN = ("{what}; an ensemble takes one checkpoint a run (a pattern such as <sweep>/*/checkpoints/best.ckpt "
              "takes each run's best)")


def _member(cfg: Any, ckpt_path: Path, precision: str | None) -> _Member:
    """Load a checkpoint and build the data it is scored on: the checkpoint's own, or the data
    group chosen on the command line with the checkpoint's seed and hold-out."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from mlplab import checkpoints
    from mlplab.config import ConfigError, check_data
    from mlplab.sweeps.jobs import key as override_key

    try:
        loaded = checkpoints.load(ckpt_path)
    except checkpoints.CheckpointError as err:
        raise checkpoints.as_key("ckpt_path", err) from None
    if precision is not None:
        loaded.model.use_precision(precision)
    if cfg.get("data") is not None:
        # The user chose a data group on the command line. Its own dataset: the checkpoint's
        # settings with the `data.*` given over them (`data=mnist data.tta.shift=1`: the trained
        # normalisation, hold-out and synthetic problem, with views). Another dataset: the group's,
        # but the network's own input scaling. The seed is the checkpoint's unless one is given.
        given = [k.removeprefix("data.") for o in HydraConfig.get().overrides.task
                 if (k := override_key(o)).startswith("data.")]
        data = OmegaConf.to_container(cfg.data, resolve=True)
        if data.get("_target_") == loaded.data.get("_target_"):
            # The group's defaults fill in keys a checkpoint of an older mlplab lacks.
            base = OmegaConf.merge(data, {k: v for k, v in loaded.data.items() if k in data and k != "data_dir"})
            for key in given:
                OmegaConf.update(base, key, OmegaConf.select(cfg.data, key), merge=False)
            data = OmegaConf.to_container(base, resolve=True)
        else:
            # Only where the group takes them: synthetic data has no normalisation (an MNIST
            # checkpoint with data=synthetic was refused over a data.mean nobody gave).
            data.update({k: loaded.data[k] for k in ("mean", "std") if k in loaded.data and k in data and k not in given})
        data["seed"] = cfg.seed if cfg.get("seed") is not None else loaded.data.get("seed", data.get("seed"))
        data_name, data_dir = str(HydraConfig.get().runtime.choices.get("data")), None
        check_data(data)
        if cfg.split == "val" and loaded.data.get("val_size") == 0:
            data["val_size"] = 0  # refused below: nothing was held out
        elif cfg.split == "val" and data.get("_target_") == loaded.data.get("_target_"):
            _check_same_holdout(data, loaded.data, ckpt_path)
    else:
        data, data_name, data_dir = loaded.data, "", str(cfg.paths.data_dir)
        if cfg.get("seed") is not None and cfg.seed != loaded.data.get("seed"):
            # The checkpoint's own data with another seed (it was silently ignored): another
            # generated problem for synthetic data; a hold-out that overlaps training is refused.
            data = {**loaded.data, "seed": cfg.seed}
            check_data(data)
            if cfg.split == "val":
                _check_same_holdout(data, loaded.data, ckpt_path)
    dm = checkpoints.build_datamodule(ckpt_path, data, data_dir)
    # As the data group's option is called (mnist, fashion, synthetic), not by its class.
    data_name = data_name or getattr(dm, "dataset", "") or type(dm).__name__.removesuffix("DataModule").lower()
    checkpoints.check_compatible(loaded, dm, data_name)
    if cfg.split == "val" and not dm.has_validation:
        raise ConfigError(
            f"split=val: {ckpt_path} was trained on the whole training set (data.val_size=0), so "
            "there is no validation split to evaluate on; use split=test"
        )
    return _Member(ckpt_path, loaded, data, dm, data_name, str(loaded.model.hparams.get("precision") or "32-true"))


def _check_ensemble(members: list[_Member], split: str) -> None:
    """An ensemble is scored on one set of samples: the same dataset and classes for every
    member, and for split=val one hold-out that none of them trained on."""
    from mlplab.checkpoints import short_names
    from mlplab.config import ConfigError, show

    # One checkpoint a run: best.ckpt and last.ckpt of one run would count it twice. A run is
    # known by the folder training saved it to, so copies gathered in one folder still count
    # as their own runs.
    runs: dict[str, _Member] = {}
    for m in members:
        if m.loaded.run is not None and (same := runs.setdefault(m.loaded.run, m)) is not m:
            raise ConfigError(f"ckpt_path: {m.path} {_ONE_A_RUN.format(what=f'and {same.path} are checkpoints of one run')}")
    first = members[0]
    for m in members[1:]:
        if m.data.get("_target_") != first.data.get("_target_") or m.loaded.class_names != first.loaded.class_names:
            raise ConfigError(f"ckpt_path: {m.path} scores {m.data_name} with classes {short_names(m.loaded.class_names)}, "
                              f"{first.path} {first.data_name} with {short_names(first.loaded.class_names)}; an ensemble's "
                              "members must be trained on the same data")
        if split != "val":
            continue
        key = holdout_difference(first.data, m.data)
        if key is not None:
            raise ConfigError(f"ckpt_path: {m.path} held out its validation split with data.{key}="
                              f"{show(m.data.get(key))}, {first.path} with data.{key}={show(first.data.get(key))}; "
                              "each holds out samples the other trained on, so split=val cannot score them "
                              "together (split=test can)")


def _ensemble_evaluation(members: list[_Member], split: str) -> tuple[Evaluation, list[Evaluation]]:
    """Each member's own evaluation, and the ensemble's: the mean of the members' class
    probabilities. Losses here are the negative log probability of the true class, the
    members' too (a member's own eval.py loss is its training loss, label smoothing included)."""
    from mlplab.config import ConfigError

    probs, own = [], []
    first: tuple[torch.Tensor, torch.Tensor] | None = None
    for m in members:
        m.dm.setup()
        m.loaded.model.eval()
        x, y = m.dm.splits[split]
        if first is not None and not (torch.equal(first[0], x) and torch.equal(first[1], y)):
            # Same settings can still mean other samples (a synthetic problem's generation).
            raise ConfigError(f"ckpt_path: {m.path} is scored on other {split} samples than {members[0].path}; "
                              "an ensemble's members must be trained on the same data")
        first = first or (x, y)
        p = split_outputs(m.loaded.model, m.dm, split)[0].float()
        m.dm.splits.clear()  # only the first member's samples are kept, for the comparison
        probs.append(p)
        own.append(_evaluation(p, y, _nll(p, y), split, list(m.dm.class_names)))
    assert first is not None
    mean = torch.stack(probs).mean(0)
    return _evaluation(mean, first[1], _nll(mean, first[1]), split, list(members[0].dm.class_names)), own


def _nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float(-probs.gather(1, y.long()[:, None]).clamp_min(1e-12).log().mean())


def _evaluation(probs: torch.Tensor, y: torch.Tensor, loss: float, split: str, class_names: list[str]) -> Evaluation:
    cm = confusion_matrix(probs.argmax(1), y, len(class_names))
    totals = cm.sum(1)
    per_class = [float(cm[i, i] / totals[i]) if totals[i] else float("nan") for i in range(len(cm))]
    n = int(totals.sum())
    return Evaluation(split, n, loss, float(np.trace(cm) / n), per_class, cm, class_names)


def run_eval(cfg: Any) -> dict[str, Any]:
    """`src/eval.py`: metrics of a checkpoint, or of several as an ensemble, printed and
    written to eval.json."""
    import json

    from mlplab.config import ConfigError

    paths = _ckpt_paths(cfg)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: expected one of {', '.join(SPLITS)}")
    precision = _checked_precision(cfg)
    _set_threads(cfg)
    members = [_member(cfg, p, precision) for p in paths]
    out = _run_dir() / "eval.json"
    if len(members) == 1:
        m = members[0]
        m.dm.setup()
        ev = evaluate(m.loaded.model, m.dm, cfg.split)
        result = {"checkpoint": str(m.path.resolve()), "checkpoint_epoch": m.loaded.epoch, "data": m.data_name,
                  "precision": m.precision, **ev.as_dict()}
        head = (f"{m.path} (epoch {m.loaded.epoch}) on the {ev.split} split of {m.data_name}: {ev.n} samples, "
                f"precision {m.precision}")
    else:
        _check_ensemble(members, cfg.split)
        ev, own = _ensemble_evaluation(members, cfg.split)
        result = {
            "checkpoints": [{"checkpoint": str(m.path.resolve()), "checkpoint_epoch": m.loaded.epoch,
                             "precision": m.precision, "accuracy": e.accuracy, "loss": e.loss}
                            for m, e in zip(members, own, strict=True)],
            "data": members[0].data_name,
            **ev.as_dict(),
        }
        lines = [f"  {m.path} (epoch {m.loaded.epoch}, precision {m.precision}): accuracy {e.accuracy:.6f}"
                 for m, e in zip(members, own, strict=True)]
        head = "\n".join([f"an ensemble of {len(members)} checkpoints (mean class probability) on the {ev.split} "
                          f"split of {members[0].data_name}: {ev.n} samples", *lines])
    write_atomic(out, json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    print("\n".join(["", head, "", format_evaluation(ev), "", f"wrote {out}"]), flush=True)
    return result


def predict_to_csv(
    ckpt_path: str | Path, inputs: str | Path, out: Path, invert: str = "auto", batch_size: int = PREDICT_BATCH,
    precision: str | None = None,
) -> tuple[list[str], torch.Tensor, list[str]]:
    """Classify `inputs` with a checkpoint and write `out` (CSV) atomically; return the
    ids, the probabilities and the class names. Nothing is written if any input is bad.
    `precision` (None: the checkpoint's own) is the autocast the model runs under."""
    from mlplab import checkpoints

    loaded = checkpoints.load(ckpt_path)
    if precision is not None:
        loaded.model.use_precision(precision)
    dm = checkpoints.build_datamodule(Path(ckpt_path), loaded.data)
    ids, raw = read_inputs(inputs, dm.image_shape, loaded.in_features, invert)
    probs = predict_proba(loaded.model, raw, batch_size, transform=dm.eval_transform)
    write_atomic(out, predictions_csv(ids, probs, loaded.class_names))
    return ids, probs, loaded.class_names


def run_predict(cfg: Any) -> Path:
    """`src/predict.py`: the class and every class's probability for each input, as CSV."""
    from omegaconf import ListConfig

    from mlplab import checkpoints
    from mlplab.config import ConfigError

    if isinstance(cfg.get("ckpt_path"), (list, tuple, ListConfig)):
        raise ConfigError("ckpt_path: predict.py takes one checkpoint; src/eval.py 'ckpt_path=[a.ckpt,b.ckpt]' "
                          "scores several as an ensemble")
    ckpt_path = _required_path(cfg, "ckpt_path", "outputs/runs/<date>/<time>/checkpoints/best.ckpt")
    inputs = _required_path(cfg, "inputs", "digit.png, a folder of images, an IDX file or a .npy array")
    precision = _checked_precision(cfg)
    for key, low in (("batch_size", 1), ("show", 0)):
        value = cfg.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            from mlplab.config import ConfigError

            raise ConfigError(f"{key}={value!r}: expected an integer ≥ {low}")
    _set_threads(cfg)
    out = _run_dir() / "predictions.csv"
    try:
        ids, probs, names = predict_to_csv(ckpt_path, inputs, out, str(cfg.invert).lower(), cfg.batch_size, precision)
    except checkpoints.CheckpointError as err:
        raise checkpoints.as_key("ckpt_path", err) from None

    conf, pred = probs.max(1)
    shown = min(len(ids), int(cfg.get("show", 10)))
    width = max(len(i) for i in ids[:shown]) if shown else 0
    lines = [f"  {ids[i]:<{width}}  {names[pred[i]]}  ({float(conf[i]):.3f})" for i in range(shown)]
    more = [f"  … and {len(ids) - shown} more"] if len(ids) > shown else []
    head = [f"{len(ids)} predictions from {ckpt_path}" + (":" if lines else "")]
    print("\n".join([*head, *lines, *([] if not lines else more), f"wrote {out}"]), flush=True)
    return out
