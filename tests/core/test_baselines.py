"""innersight.core.baselines: the numbers of every named baseline, arrays, and the refusals.

The blur is checked against scipy. Its borders are numpy's ``np.pad(mode="reflect")``: the edge
pixel is the mirror's axis and is not repeated (``d c b | a b c d``), which scipy calls
``mode="mirror"``; scipy's own ``mode="reflect"`` repeats the edge (``c b a | a b c``), and
differs from it at the borders (checked below, so a change of the border mode shows).
"""

from __future__ import annotations

import numpy as np
import pytest

from innersight.core import InputError
from innersight.core.baselines import BASELINE_NAMES, gaussian_blur, resolve_baseline

ndimage = pytest.importorskip("scipy.ndimage")


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(3).random((2, 20, 14, 3), dtype=np.float32)


def scipy_blur(images: np.ndarray, sigma: float, mode: str = "mirror") -> np.ndarray:
    """Separable Gaussian over height and width, truncated at 3 sigma, as scipy does it."""
    out = ndimage.gaussian_filter1d(images.astype(np.float64), sigma, axis=1, mode=mode, truncate=3)
    return ndimage.gaussian_filter1d(out, sigma, axis=2, mode=mode, truncate=3.0)


# -- the named baselines ---------------------------------------------------------------------
def test_the_names():
    assert BASELINE_NAMES == ("zeros", "black", "mean", "blur")


@pytest.mark.parametrize("name", ["zeros", "black"])
def test_zeros_and_its_alias_black(images, name):
    base = resolve_baseline(name, images)
    assert base.dtype == np.float32 and base.shape == images.shape
    assert not base.any()


def test_mean_is_each_images_mean_colour(images):
    base = resolve_baseline("mean", images)
    for i in range(len(images)):
        for c in range(3):
            want = np.float64(images[i, :, :, c]).sum() / (20 * 14)
            np.testing.assert_allclose(base[i, :, :, c], want, rtol=1e-6)


def test_mean_of_vectors_and_of_tokens():
    vectors = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_allclose(resolve_baseline("mean", vectors), [[2.5] * 6, [8.5] * 6])
    tokens = np.arange(24, dtype=np.float32).reshape(2, 4, 3)  # (N, T, D): mean over tokens
    base = resolve_baseline("mean", tokens)
    np.testing.assert_allclose(base[0, 2], tokens[0].mean(axis=0))
    np.testing.assert_allclose(base[1, 0], [16.5, 17.5, 18.5])  # rows 12..14 to 21..23


def test_blur_is_scipys_gaussian_filter_with_mirrored_borders(images):
    base = resolve_baseline("blur", images)  # sigma = max(20, 14) / 10 = 2 pixels
    assert base.dtype == np.float32
    np.testing.assert_allclose(base, scipy_blur(images, 2.0), rtol=1e-5, atol=1e-6)
    sharp = resolve_baseline("blur", images, blur_sigma=0.8)
    np.testing.assert_allclose(sharp, scipy_blur(images, 0.8), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gaussian_blur(images, 0.8), sharp)
    # not scipy's "reflect" (edge repeated), nor "nearest" (edge replicated, the metrics' old
    # blur): they differ at the borders only
    for other in ("reflect", "nearest"):
        theirs = scipy_blur(images, 2.0, other)
        assert np.abs(base - theirs).max() > 1e-3
        np.testing.assert_allclose(base[:, 8:12, 6:8], theirs[:, 8:12, 6:8], atol=1e-6)


def test_blur_default_sigma_is_a_tenth_of_the_larger_side_at_least_one():
    small = np.random.default_rng(0).random((1, 8, 6, 1), dtype=np.float32)
    # sigma 1 (8 / 10 < 1): radius 3 fits in 8 and in 6 pixels
    np.testing.assert_allclose(gaussian_blur(small), scipy_blur(small, 1.0), rtol=1e-5, atol=1e-6)


def test_blur_kernel_is_clipped_to_the_image_and_renormalised():
    """A 3-sigma radius past the image is cut to size - 1 (mirroring needs no more), i.e.
    scipy's filter truncated at (size - 1) / sigma."""
    x = np.random.default_rng(1).random((1, 5, 7, 2), dtype=np.float32)
    sigma = 2.0  # radius int(6.5) = 6: cut to 4 rows, kept at 6 columns
    rows = 4 / sigma  # truncate so that scipy's radius is 4, the image's 5 rows less one
    want = ndimage.gaussian_filter1d(
        x.astype(np.float64), sigma, axis=1, mode="mirror", truncate=rows
    )
    want = ndimage.gaussian_filter1d(want, sigma, axis=2, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(x, sigma), want, rtol=1e-5, atol=1e-6)


def test_blur_keeps_a_constant_image_and_a_point_spreads_as_the_kernel():
    flat = np.full((1, 9, 9, 2), 0.25, np.float32)
    np.testing.assert_allclose(resolve_baseline("blur", flat, blur_sigma=2.0), flat, rtol=1e-6)
    point = np.zeros((1, 21, 21, 1), np.float32)
    point[0, 10, 10] = 1.0
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)  # radius int(3 * 1.5 + 0.5) = 5
    g /= g.sum()
    got = gaussian_blur(point, 1.5)[0, :, :, 0]
    np.testing.assert_allclose(got[5:16, 5:16], np.outer(g, g), rtol=1e-5, atol=1e-8)
    assert not got[:5].any() and not got[:, 16:].any()


# -- numbers and arrays ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.5, -1.25, np.float32(0.3), np.int64(2)])
def test_a_number_is_a_constant_input(images, value):
    base = resolve_baseline(value, images)
    assert base.dtype == np.float32 and base.shape == images.shape
    np.testing.assert_array_equal(base, np.float32(value))


def test_an_array_of_one_input_is_shared_and_one_of_the_batch_is_per_input(images):
    one = np.random.default_rng(5).random(images.shape[1:])
    shared = resolve_baseline(one, images)
    np.testing.assert_array_equal(shared[0], one.astype(np.float32))
    np.testing.assert_array_equal(shared[1], one.astype(np.float32))
    per_input = images[::-1] * 0.5
    np.testing.assert_array_equal(resolve_baseline(per_input, images), per_input)


def test_the_result_is_a_fresh_writable_array(images):
    one = np.zeros(images.shape[1:], np.float32)
    base = resolve_baseline(one, images)
    base[0] += 1.0  # writable, and not a view of the user's array
    assert not one.any()
    copy = images.copy()
    resolve_baseline("blur", images)
    resolve_baseline("mean", images)
    np.testing.assert_array_equal(images, copy)


# -- refusals, with advice that works ---------------------------------------------------------
ADVICE = (
    "pass a number (e.g. 0.0), 'zeros', 'mean', 'blur', or an array shaped like one input "
    "(20, 14, 3) or like the batch (2, 20, 14, 3)"
)


@pytest.mark.parametrize("value", [None, True, False])
def test_none_and_bools_are_refused_with_advice(images, value):
    with pytest.raises(InputError) as info:
        resolve_baseline(value, images)
    assert str(info.value) == f"baseline={value!r} is not a baseline; {ADVICE}"


def test_unknown_names_wrong_shapes_and_types(images):
    cases = [
        ("white", f"baseline='white' is unknown; {ADVICE}"),
        (np.zeros((20, 14)), f"baseline has shape (20, 14); {ADVICE}"),
        (np.zeros((3, 20, 14, 3)), f"baseline has shape (3, 20, 14, 3); {ADVICE}"),
        ({"a": 1}, f"baseline must be a number, a name or an array, got dict; {ADVICE}"),
        (
            np.full(images.shape[1:], np.inf),
            "baseline contains NaN or Inf values; pass finite numbers",
        ),
    ]
    for value, message in cases:
        with pytest.raises(InputError) as info:
            resolve_baseline(value, images)
        assert str(info.value) == message


def test_the_advice_works(images):
    """Every alternative the message offers resolves."""
    for value in (0.0, "zeros", "mean", "blur", np.zeros((20, 14, 3)), np.zeros((2, 20, 14, 3))):
        assert resolve_baseline(value, images).shape == images.shape


def test_blur_on_vectors_is_refused_and_the_advice_leaves_it_out():
    vectors = np.ones((2, 6), np.float32)
    with pytest.raises(InputError) as info:
        resolve_baseline("blur", vectors, name="fill")
    assert str(info.value) == (
        "fill='blur' blurs images (N, H, W, C), got inputs of shape (2, 6); pass a number "
        "(e.g. 0.0), 'zeros', 'mean', or an array shaped like one input (6,) or like the "
        "batch (2, 6)"
    )
    np.testing.assert_array_equal(resolve_baseline("mean", vectors), vectors)
    with pytest.raises(
        InputError, match=r"gaussian_blur takes images \(N, H, W, C\), got \(2, 6\)"
    ):
        gaussian_blur(vectors)
