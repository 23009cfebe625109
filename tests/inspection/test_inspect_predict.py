"""predict.py: images of any size, IDX and .npy inputs give the model's own classes; bad
inputs get one line naming the file, and no CSV."""

from __future__ import annotations

import csv
import gzip
import struct
import zlib
from pathlib import Path

import inspection_support as support
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA
from mlplab import checkpoints
from mlplab.data.sources import DataError, load_split
from mlplab.evaluation import predict_to_csv, to_mnist_pixels

# Session fixtures shared by the inspection tests (the runs train once per session).
mnist_run = support.mnist_run
script = support.script
synthetic_run = support.synthetic_run

N = 8


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_split("mnist", DATA, "test")
    return x[:N].numpy().copy(), y[:N].numpy().copy()


@pytest.fixture(scope="module")
def expected(mnist_run: Path, test_images) -> tuple[np.ndarray, np.ndarray]:
    """Classes and probabilities from the model's forward pass on the datamodule's transform."""
    loaded = checkpoints.load(mnist_run / "checkpoints" / "best.ckpt")
    dm = checkpoints.build_datamodule(loaded.path, loaded.data)
    with torch.no_grad():
        probs = loaded.model(dm.eval_transform(torch.from_numpy(test_images[0]))).softmax(1).numpy()
    return probs.argmax(1), probs


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_png_folder_via_cli_matches_forward_pass(mnist_run: Path, test_images, expected, script, tmp_path: Path) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(test_images[0]):
        Image.fromarray(img).save(folder / f"img{i}.png")
    out = tmp_path / "pred"
    proc = script("predict.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"inputs={folder}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr  # torch warned of PIL's read-only pixels
    assert str(out / "predictions.csv") in proc.stdout
    rows = _read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["input", "predicted", *[str(d) for d in range(10)]]
    assert [r["input"] for r in rows] == [f"img{i}.png" for i in range(N)]
    assert [int(r["predicted"]) for r in rows] == expected[0].tolist()
    probs = np.array([[float(r[str(d)]) for d in range(10)] for r in rows])
    np.testing.assert_allclose(probs, expected[1], atol=2e-6)
    # show=0 lists none: it said "N predictions …:" then "… and N more".
    proc = script("predict.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"inputs={folder}", "show=0",
                  f"hydra.run.dir={tmp_path / 'quiet'}")
    assert proc.returncode == 0 and "more" not in proc.stdout
    assert f"{N} predictions from {mnist_run}/checkpoints/best.ckpt\nwrote " in proc.stdout


def test_npy_and_idx_match_forward_pass(mnist_run: Path, test_images, expected, tmp_path: Path) -> None:
    ckpt = mnist_run / "checkpoints" / "best.ckpt"
    images = test_images[0]
    cases = {"u8.npy": images, "flat.npy": images.reshape(N, -1), "float.npy": images.astype(np.float32) / 255}
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
    idx = tmp_path / "images-idx3-ubyte.gz"
    with gzip.open(idx, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes())
    for name in [*cases, idx.name]:
        out = tmp_path / f"{name}.csv"
        ids, probs, _ = predict_to_csv(ckpt, tmp_path / name, out)
        assert probs.argmax(1).tolist() == expected[0].tolist(), name
        assert ids[0] == f"{name}[0]" and len(_read_csv(out)) == N


def test_images_of_other_sizes_and_dark_on_light(mnist_run: Path, test_images, expected, tmp_path: Path) -> None:
    ckpt = mnist_run / "checkpoints" / "best.ckpt"
    images = test_images[0]
    # Confident, and with black top and bottom rows, so that a crop to 100×80 loses nothing.
    confident = [i for i in range(N) if expected[1][i].max() > 0.9 and not images[i][[0, 1, 2, -3, -2, -1]].any()]
    assert confident
    for i in confident:
        img = Image.fromarray(images[i])
        img.resize((56, 56), Image.Resampling.BICUBIC).save(tmp_path / f"big{i}.png")
        # Dark ink on white paper, wider than tall, colour JPEG: inverted, padded back to a
        # square (not stretched) and resized.
        wide = img.resize((100, 100), Image.Resampling.BICUBIC).crop((0, 10, 100, 90))
        Image.eval(wide, lambda v: 255 - v).convert("RGB").save(tmp_path / f"paper{i}.jpg", quality=95)
        # Black ink on a transparent canvas, as drawing apps save it: under alpha 0 the colour
        # is black too, so dropping alpha gave an all-black image.
        ink = np.zeros((28, 28, 4), np.uint8)
        ink[..., 3] = images[i]
        Image.fromarray(ink, "RGBA").save(tmp_path / f"canvas{i}.png")
        # 16-bit grayscale (PIL clipped it to white above 255), and a photo stored upside down
        # with an EXIF orientation saying so.
        Image.fromarray(images[i].astype(np.uint16) * 257).save(tmp_path / f"deep{i}.png")
        exif = Image.Exif()
        exif[0x0112] = 3  # Orientation: rotate 180° to display
        img.rotate(180).convert("RGB").save(tmp_path / f"photo{i}.jpg", quality=95, exif=exif)
    ids, probs, _ = predict_to_csv(ckpt, tmp_path, tmp_path / "out.csv")
    got = dict(zip(ids, probs.argmax(1).tolist(), strict=True))
    for i in confident:
        assert got[f"big{i}.png"] == expected[0][i]
        assert got[f"canvas{i}.png"] == expected[0][i]
        assert got[f"deep{i}.png"] == expected[0][i] and got[f"photo{i}.jpg"] == expected[0][i]
        with Image.open(tmp_path / f"deep{i}.png") as deep:  # the class survives clipping; the pixels must too
            np.testing.assert_array_equal(to_mnist_pixels(deep, (28, 28), "false"), images[i])
        assert got[f"paper{i}.jpg"] == expected[0][i]


def _bad_inputs(tmp_path: Path, synthetic: bool) -> dict[str, tuple[Path, str]]:
    d = tmp_path
    (d / "empty").mkdir()
    (d / "notes").mkdir()
    (d / "notes" / "readme.txt").write_text("no images here")
    (d / "fake.png").write_text("not an image")
    np.save(d / "shape.npy", np.zeros((5, 27, 27), np.uint8))
    np.save(d / "range.npy", np.full((2, 28, 28), 3.0, np.float32))
    np.save(d / "nan.npy", np.full((2, 28, 28), np.nan, np.float32))  # numpy warned on stderr first
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "zero.npy", np.zeros((0, 784), np.uint8))
    np.save(d / "synth_shape.npy", np.zeros((4, 7), np.float32))
    (d / "labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes(3))
    (d / "short-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (9, 28, 28)) + bytes(100))
    (d / "data.csv").write_text("1,2,3\n")
    (d / "text.npy").write_text("hello\n")  # numpy calls any such file pickled "(object)" data
    # A gzipped IDX file whose deflate stream is damaged: zlib's own error, not an OSError.
    pixels = (np.random.default_rng(0).random((9, 28, 28)) < 0.3).astype(np.uint8) * 200
    gz = bytearray(gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (9, 28, 28)) + pixels.tobytes()))
    gz[40:100] = bytes(b ^ 0x55 for b in gz[40:100])
    (d / "damaged-idx3-ubyte.gz").write_bytes(gz)
    # A PNG header claiming 20000×20000 pixels: PIL refuses to decode it (a decompression bomb).
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr
                                 + struct.pack(">I", zlib.crc32(ihdr)) + struct.pack(">I", 0) + b"IEND"
                                 + struct.pack(">I", zlib.crc32(b"IEND")))
    if synthetic:
        return {
            "png for a synthetic model": (d / "fake.png", "trained on synthetic features; give a .npy array of shape [N, 20]"),
            "wrong width": (d / "synth_shape.npy", "array of shape [4, 7]; this model takes [N, 20] features"),
        }
    return {
        "missing": (d / "nope.png", "no such file or directory"),
        "empty dir": (d / "empty", "no .png/.jpg/.jpeg images in this directory"),
        "no images in dir": (d / "notes", "no .png/.jpg/.jpeg images in this directory"),
        "not an image": (d / "fake.png", "not a readable PNG/JPEG image"),
        "wrong shape": (d / "shape.npy", "array of shape [5, 27, 27]; expected [N, 28, 28] or [N, 784] images"),
        "float range": (d / "range.npy", "float pixels must be finite and in [0, 1], got 3..3"),
        "all NaN": (d / "nan.npy", "got no finite value, 1568 NaN or infinite"),
        "pickled objects": (d / "objects.npy", "holds Python objects (refused"),
        "empty array": (d / "zero.npy", "empty array (0 images)"),
        "idx labels": (d / "labels-idx1-ubyte", "an IDX labels file; predict needs the images file"),
        "idx truncated": (d / "short-idx3-ubyte", "116 bytes, expected 7072 for 9 images of 28×28"),
        "other type": (d / "data.csv", "not an IDX images file"),
        "text named .npy": (d / "text.npy", "not a .npy array file (no .npy header)"),
        "damaged gzip": (d / "damaged-idx3-ubyte.gz", "unreadable (Error -3 while decompressing data"),
        "decompression bomb": (d / "bomb.png", "refused (Image size (400000000 pixels) exceeds limit"),
    }


def test_bad_inputs_get_one_line_naming_the_file(mnist_run: Path, synthetic_run: Path, tmp_path: Path) -> None:
    for synthetic, run in ((False, mnist_run), (True, synthetic_run)):
        base = tmp_path / ("s" if synthetic else "m")
        base.mkdir()
        for case, (path, message) in _bad_inputs(base, synthetic).items():
            out = base / "predictions.csv"
            with pytest.raises(DataError) as err:
                predict_to_csv(run / "checkpoints" / "best.ckpt", path, out)
            assert message in str(err.value), case
            assert str(err.value).startswith(str(path)) and "\n" not in str(err.value), case
            assert not out.exists() and not list(base.glob(".predictions*")), case


def test_bad_input_via_cli_exits_1_with_nothing_left(mnist_run: Path, script, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "pred"
    proc = script("predict.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"inputs={tmp_path / 'empty'}",
                  f"hydra.run.dir={out}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty'}: no .png/.jpg/.jpeg images in this directory"]
    assert not out.exists()


@pytest.mark.parametrize("arg, message", [("batch_size=0", "batch_size=0: expected an integer ≥ 1"),
                                          ("batch_size=abc", "batch_size='abc': expected an integer ≥ 1"),
                                          ("show=abc", "show='abc': expected an integer ≥ 0"),
                                          # A traceback from torch.set_num_threads before:
                                          ("torch_threads=-2", "torch_threads=-2: expected null (torch's default) or an integer ≥ 1")])
def test_bad_predict_settings_are_one_line_before_anything_is_written(
        mnist_run: Path, test_images, script, tmp_path: Path, arg: str, message: str) -> None:
    np.save(tmp_path / "x.npy", test_images[0][:3])
    out = tmp_path / "pred"
    proc = script("predict.py", f"ckpt_path={mnist_run}/checkpoints/best.ckpt", f"inputs={tmp_path / 'x.npy'}",
                  f"hydra.run.dir={out}", arg)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert not out.exists()
