import pytest
import torch

from mlplab.data.augment import Augment, random_hflip


def _dot_images(n: int = 64) -> torch.Tensor:
    img = torch.zeros(n, 28, 28, dtype=torch.uint8)
    img[:, 10:18, 6:10] = 255  # an off-centre bar: moves under every transform
    return img


def test_off_by_default_and_identity() -> None:
    a = Augment()
    x = _dot_images()
    assert not a.active
    assert torch.equal(a(x, torch.Generator().manual_seed(0)), x)


def test_hflip_mirrors_about_half_the_images() -> None:
    x = _dot_images(400)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 140 < int(flipped.sum()) < 260


@pytest.mark.parametrize(
    "kw", [dict(rotate=15.0), dict(scale=0.2), dict(shear=15.0), dict(elastic_alpha=34.0, elastic_sigma=4.0),
           dict(rotate=10.0, scale=0.1, shift=2, elastic_alpha=20.0)]
)
def test_geometric_distortions_move_pixels_but_keep_ink_and_range(kw: dict) -> None:
    x = _dot_images()
    g = torch.Generator().manual_seed(0)
    out = Augment(**kw)(x, g)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255.0 + 1e-3
    moved = (out - x.float()).abs().flatten(1).sum(1) > 255
    assert moved.float().mean() > 0.5  # most images change
    ink = out.flatten(1).sum(1) / x.float().flatten(1).sum(1)
    assert (ink > 0.4).all() and (ink < 2.0).all()  # distorted, not erased or smeared out
    per_image = out.flatten(1)
    assert not torch.allclose(per_image[0], per_image[1])  # one draw per image


def test_same_generator_state_gives_the_same_batch() -> None:
    a = Augment(rotate=10.0, elastic_alpha=20.0)
    x = _dot_images(8)
    first = a(x, torch.Generator().manual_seed(5))
    again = a(x, torch.Generator().manual_seed(5))
    other = a(x, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_zero_strength_geometric_is_the_identity() -> None:
    # The affine path with zero angles and zoom 1 must not blur or shift the image.
    x = _dot_images(4)
    out = Augment(rotate=1e-9)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.float(), atol=1e-3)


def test_erase_blanks_one_rectangle_in_the_chosen_images() -> None:
    x = torch.full((200, 28, 28), 200, dtype=torch.uint8)
    out = Augment(erase=0.5)(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8
    blank = out == 0
    hit = blank.flatten(1).any(1)
    assert 60 < int(hit.sum()) < 140  # about half the images
    for img in blank[hit][:20]:
        rows, cols = img.any(1).nonzero()[:, 0], img.any(0).nonzero()[:, 0]
        box = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one solid rectangle
        assert 0.01 * 784 <= int(img.sum()) <= 0.26 * 784
