"""Hostile input files: decompression bombs, truncated images, damaged arrays. Each is refused
with one InputError naming the file; the way to raise the pixel limit on purpose is tested by
following it."""

from __future__ import annotations

import io
import resource

import numpy as np
import pytest

import innersight as ins
from innersight.loading import load_images
from tests.loading.pngs import png_bomb

Image = pytest.importorskip("PIL.Image")

ENV = "INNERSIGHT_MAX_IMAGE_PIXELS"


@pytest.fixture(autouse=True)
def _no_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_20000_pixel_square_bomb_is_refused_before_decoding(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 400_000  # a small file ...
    before = _peak_mb()
    with pytest.raises(ins.InputError) as info:
        load_images(bomb)  # ... of 400 million pixels: 1.6 GB as float32
    message = str(info.value)
    assert message == (
        f"image file {str(bomb)!r} has 400,000,000 pixels, more than the limit of 89,478,485 "
        "(a guard against decompression bombs: small files that decode to huge images); if you "
        f"trust the file, raise the limit: set the environment variable {ENV}=400000000 "
        "(in Python: load_images(..., max_pixels=400000000))"
    )
    assert "\n" not in message
    assert _peak_mb() - before < 200  # nothing was decoded
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own setting is left as it was


@pytest.mark.parametrize(
    ("width", "height"),
    [(1500, 1000), (3000, 1000)],  # Pillow only warns for the first (under twice its limit)
)
def test_a_lowered_limit_refuses_and_the_advice_loads_the_file(
    tmp_path, monkeypatch, width, height
):
    bomb = png_bomb(tmp_path / "wide.png", width, height)
    pixels = width * height
    monkeypatch.setenv(ENV, "1000000")
    with pytest.raises(
        ins.InputError,
        match=rf"image file '.*wide.png' has {pixels:,} pixels, more than the limit of "
        rf"1,000,000 .*set the environment variable {ENV}={pixels} "
        rf"\(in Python: load_images\(\.\.\., max_pixels={pixels}\)\)",
    ):
        load_images(bomb)
    monkeypatch.setenv(ENV, str(pixels))  # the advice, on the command line's way
    x = load_images(bomb)
    assert x.shape == (1, height, width, 1)
    # rows of bits 1010...: white (1.0 after the default 1/255 scale) then black
    assert np.all(x[0, :, 0::2, 0] == 1.0) and np.all(x[0, :, 1::2, 0] == 0.0)
    monkeypatch.delenv(ENV)
    with pytest.raises(ins.InputError, match="more than the limit of 999,999"):
        load_images(bomb, max_pixels=999_999)
    np.testing.assert_array_equal(load_images(bomb, max_pixels=pixels), x)  # the Python advice
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_images_within_the_limit_load_as_before(tmp_path, monkeypatch):
    png = png_bomb(tmp_path / "ok.png", 40, 30, pattern=0xFF)
    monkeypatch.setenv(ENV, "1200")  # exactly 40 x 30: allowed
    np.testing.assert_array_equal(load_images(png), np.ones((1, 30, 40, 1), np.float32))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", rf"{ENV}='lots' is not a positive integer; set it to a pixel count"),
        ("0", rf"{ENV}='0' is not a positive integer"),
    ],
)
def test_a_bad_environment_value_is_refused(tmp_path, monkeypatch, value, message):
    png = png_bomb(tmp_path / "ok.png", 8, 8)
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ins.InputError, match=message):
        load_images(png)
    monkeypatch.setenv(ENV, "200000000")  # the example the message gives
    assert load_images(png).shape == (1, 8, 8, 1)


@pytest.mark.parametrize("bad", [0, -5, True, 2.5, "many"])
def test_a_bad_max_pixels_is_refused(tmp_path, bad):
    png = png_bomb(tmp_path / "ok.png", 8, 8)
    with pytest.raises(ins.InputError, match=r"max_pixels=.* is not valid; pass a positive int"):
        load_images(png, max_pixels=bad)
    assert load_images(png, max_pixels=200_000_000).shape == (1, 8, 8, 1)


def _encoded(fmt: str) -> bytes:
    pixels = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_a_truncated_image_is_one_line_naming_the_file(tmp_path, fmt):
    data = _encoded(fmt)
    whole = tmp_path / f"whole.{fmt}"
    whole.write_bytes(data)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ins.InputError) as info:
        load_images(cut)
    message = str(info.value)
    assert message.startswith(f"image file {str(cut)!r} is truncated (Pillow: ")
    assert message.endswith(
        "the file ends before its pixel data does; copy, download or export it again, or leave "
        "it out"
    )
    assert "\n" not in message
    assert load_images(whole).shape == (1, 48, 48, 3)  # the whole file reads


@pytest.mark.parametrize("compressed", [False, True])
def test_a_truncated_npz_is_refused(tmp_path, compressed):
    path = tmp_path / "batch.npz"
    x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
    (np.savez_compressed if compressed else np.savez)(path, x=x)
    data = path.read_bytes()
    np.testing.assert_array_equal(load_images(path), x)
    for cut in (len(data) // 3, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(
            ins.InputError,
            match=r"could not read array file '.*batch.npz' \(.*\); it may be truncated or "
            r"damaged: save it again with numpy.save or numpy.savez",
        ):
            load_images(path)
