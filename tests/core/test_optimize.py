"""The optimisation toolkit: adjoints by the dot-product test, the FFT parameterisation, ascend."""

from __future__ import annotations

import numpy as np
import pytest

from innersight.core import InputError, Progress
from innersight.featurevis.ascent import AscentOptions, image_shape, starting_images
from innersight.featurevis.optimize import ascend, l2_penalty
from innersight.featurevis.param import FFTParam, PixelParam, make_param
from innersight.featurevis.transforms import Compose, RandomTransforms, Roll, Warp
from innersight.testing import reference_model

SHAPES = [(3, 8, 8, 1), (2, 7, 9, 3), (2, 6, 5, 2)]


def dot_test(forward, adjoint, x, y) -> None:
    """<T x, y> == <x, T^T y> to 1e-5 relative: the adjoint is the exact transpose."""
    lhs = float(np.sum(forward(x) * y))
    rhs = float(np.sum(x * adjoint(y)))
    scale = np.linalg.norm(forward(x)) * np.linalg.norm(y)
    assert abs(lhs - rhs) <= 1e-5 * scale, (lhs, rhs)


def random_transforms(shape):
    n, h, w, _ = shape
    rng = np.random.default_rng(1)
    return {
        "roll": Roll(rng.integers(-3, 4, size=(n, 2))),
        "scale": Warp.scale(rng.uniform(0.7, 1.4, n), (h, w)),
        "rotate": Warp.rotate(rng.uniform(-30, 30, n), (h, w)),
        "affine": Warp.affine(rng.uniform(0.8, 1.2, n), rng.uniform(-10, 10, n), (h, w)),
        "compose": Compose([Warp.rotate(rng.uniform(-9, 9, n), (h, w)), Roll([[1, -2]] * n)]),
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["roll", "scale", "rotate", "affine", "compose"])
def test_transform_adjoint_dot_product(shape, name):
    t = random_transforms(shape)[name]
    rng = np.random.default_rng(0)
    for _ in range(3):
        dot_test(t.forward, t.adjoint, rng.standard_normal(shape), rng.standard_normal(shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_param_adjoint_dot_product(shape, param):
    p = make_param(param, shape)
    rng = np.random.default_rng(0)
    params = p.inverse(rng.standard_normal(shape))
    for _ in range(3):
        x = rng.standard_normal(params.shape)
        dot_test(p.forward, p.backward, x, rng.standard_normal(shape))


def test_transforms_match_closed_forms():
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2))
    np.testing.assert_array_equal(
        Roll([[1, 2], [-1, 0]]).forward(x)[0], np.roll(x[0], (1, 2), axis=(0, 1))
    )
    np.testing.assert_allclose(Warp.scale([1.0, 1.0], (6, 6)).forward(x), x, atol=1e-12)
    np.testing.assert_allclose(Warp.rotate([0.0, 0.0], (6, 6)).forward(x), x, atol=1e-12)
    # a quarter turn about the centre lands on the pixel grid: exactly a rot90
    quarter = Warp.rotate([90.0, 90.0], (6, 6)).forward(x)
    turned = [np.rot90(x[0], k, axes=(0, 1)) for k in (1, -1)]
    assert any(np.allclose(quarter[0], t, atol=1e-12) for t in turned)
    # zoom x2 about the centre: output pixel (i, j) reads source (c + (i - c) / 2) bilinearly
    one = np.arange(25.0).reshape(1, 5, 5, 1)  # linear ramp: bilinear is exact on it
    zoomed = Warp.scale([2.0], (5, 5)).forward(one)[0, ..., 0]
    rows, cols = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    np.testing.assert_allclose(zoomed, (2 + (rows - 2) / 2) * 5 + (2 + (cols - 2) / 2))


def test_fft_param_round_trip_linearity_and_energy():
    shape = (2, 8, 10, 3)
    p = FFTParam(shape)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(p.forward(p.inverse(x)), x, atol=1e-12)
    a, b = p.inverse(rng.standard_normal(shape)), p.inverse(rng.standard_normal(shape))
    np.testing.assert_allclose(p.forward(2 * a - 3 * b), 2 * p.forward(a) - 3 * p.forward(b))
    # trace(P^T P) per channel = H * W without colour mixing: white unit params -> unit pixels
    p.colour = None
    single = FFTParam((1, 8, 10, 1))
    cols = np.eye(single.inverse(np.zeros((1, 8, 10, 1))).size)
    energy = sum(
        np.sum(single.forward(c.reshape(1, 1, 8, 6, 2)) ** 2) for c in cols
    )  # every column of P, explicitly
    assert energy == pytest.approx(8 * 10)
    # the 1/f scale makes low frequencies dominate: random parameters give smoother images than
    # white pixel noise (neighbour differences / std: ~0.69 against ~1.13), of about unit RMS
    big = FFTParam((4, 32, 32, 1))
    img = big.forward(rng.standard_normal((4, 1, 32, 17, 2)))
    white = rng.standard_normal(img.shape)

    def roughness(im):
        return np.abs(np.diff(im, axis=2)).mean() / im.std()

    assert roughness(img) < 0.7 * roughness(white)
    assert 0.8 < np.sqrt(np.mean(img**2)) < 1.2
    assert isinstance(make_param("pixel", shape), PixelParam)
    with pytest.raises(InputError, match="param='wavelet' is unknown; use one of 'pixel', 'fft'"):
        make_param("wavelet", shape)


def quadratic(a: np.ndarray):
    """Per-sample linear objective a . x; with l2 penalty w the maximum is x* = a / (2 w)."""

    def fn(x):
        return np.sum(a * x, axis=(1, 2, 3)), np.broadcast_to(a, x.shape).copy()

    return fn


@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_ascend_reaches_the_known_maximum(param):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 6, 6, 1))
    weight = 0.5
    best = a / (2 * weight)
    res = ascend(
        quadratic(a), np.zeros_like(a), steps=300, lr=0.05, param=param, penalty=l2_penalty(weight)
    )
    best_value = np.sum(a * best, axis=(1, 2, 3)) - weight * np.sum(best**2, axis=(1, 2, 3))
    # constant-size normalised steps end within about one step of the maximum
    step = 0.05 * np.sqrt(a[0].size)
    assert np.all(np.linalg.norm((res.images - best).reshape(3, -1), axis=1) < 2 * step)
    np.testing.assert_allclose(res.final, best_value, rtol=2e-2)
    assert np.all(res.initial == 0) and np.all(res.history[-1] > 0.95 * best_value)


def test_ascend_samples_are_independent_and_jitter_keeps_the_maximum():
    c = np.random.default_rng(2).standard_normal((4, 1, 1, 1)) * np.ones((4, 6, 6, 1))

    def run(rows):
        target = c[rows]  # a constant image: roll-invariant, so jitter does not move the maximum

        def fn(x):
            return -np.sum((x - target) ** 2, axis=(1, 2, 3)), -2 * (x - target)

        rngs = [np.random.default_rng([0, r]) for r in rows]
        transforms = RandomTransforms(jitter=2)
        start = np.zeros((len(rows), 6, 6, 1))
        return ascend(fn, start, steps=60, lr=0.05, transforms=transforms, rngs=rngs).images

    together = run([0, 1, 2, 3])
    apart = np.concatenate([run([r]) for r in range(4)])
    np.testing.assert_allclose(together, apart, atol=1e-6)
    assert np.abs(together - c).max() < 0.1


def test_ascend_frames_progress_revive_and_errors():
    a = np.ones((2, 4, 4, 1))

    def dead_second(x):  # sample 1's unit is off: zero gradient
        g = np.broadcast_to(a, x.shape).copy()
        g[1:] = 0
        return np.sum(a * x, axis=(1, 2, 3)), g

    calls = []
    res = ascend(
        dead_second,
        np.zeros_like(a),
        steps=10,
        lr=0.1,
        snapshot_every=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert len(res.frames) == 5  # start, after steps 3, 6, 9, end
    np.testing.assert_array_equal(res.frames[-1], res.images)
    assert calls[-1] == (20, 20) and res.stalled.tolist() == [False, True]
    assert np.all(res.images[1] == 0)
    revived = ascend(dead_second, np.zeros_like(a), steps=4, lr=0.1, revive=lambda x, rows: -x - 1)
    assert revived.revived.tolist() == [0, 4] and np.all(revived.images[1] < 0)
    bar = Progress(8, progress=False)
    ascend(dead_second, np.zeros_like(a), steps=4, lr=0.1, progress=bar)
    assert bar.done == 8
    with pytest.raises(InputError, match="steps must be a positive int, got 0"):
        ascend(dead_second, a, steps=0, lr=0.1)
    with pytest.raises(InputError, match=r"ascend needs images \(N, H, W, C\), got shape \(4, 4\)"):
        ascend(dead_second, a[0, ..., 0], steps=1, lr=0.1)
    with pytest.raises(InputError, match="need one generator per sample"):
        ascend(dead_second, a, steps=1, lr=0.1, transforms=RandomTransforms(jitter=1))
    with pytest.raises(InputError, match="gradient became NaN/Inf at step 0; lower lr"):
        ascend(lambda x: (x.sum((1, 2, 3)), x * np.nan), a, steps=1, lr=0.1)


OK = dict(
    steps=5,
    lr=0.1,
    seed=0,
    init="noise",
    jitter=0,
    scale=None,
    rotate=0.0,
    param="pixel",
    snapshot_every=None,
)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 0}, "steps must be a positive int, got 0; pass e.g. steps=100"),
        ({"steps": 2.5}, "steps must be a positive int, got 2.5"),
        ({"lr": -1}, "lr must be a finite number > 0, got -1; pass e.g. lr=0.05"),
        ({"lr": True}, "lr must be a finite number > 0, got True; pass e.g. lr=0.05"),
        ({"seed": -3}, "seed must be a non-negative int or None, got -3; pass e.g. 0"),
        ({"init": "zeros"}, "init='zeros' is unknown; use 'noise' or an"),
        ({"init": np.zeros((1, 4, 4, 1))}, r"init must be 'noise' or one finite image \(H, W, C\)"),
        ({"jitter": -1}, "jitter must be a non-negative int, got -1; pass e.g. jitter=2"),
        ({"scale": (1.2, 0.8)}, r"scale must be None or \(low, high\) with 0 < low <= high"),
        (
            {"rotate": float("nan")},
            "rotate must be a finite number >= 0, got nan; pass e.g. rotate=5",
        ),
        ({"param": "dct"}, "param='dct' is unknown; use one of 'pixel', 'fft'"),
        (
            {"snapshot_every": 0},
            "snapshot_every must be a positive int, got 0; pass e.g. snapshot_every=10",
        ),
    ],
)
def test_options_are_validated_with_helpful_messages(change, message):
    with pytest.raises(InputError, match=message):
        AscentOptions.check(**{**OK, **change})


def test_options_record_and_image_shape():
    opts = AscentOptions.check(**{**OK, "seed": None, "scale": [0.9, 1.1]})
    assert opts.seed >= 0 and opts.scale == (0.9, 1.1)
    assert opts.params()["scale"] == [0.9, 1.1] and opts.params()["init"] == "noise"
    model = reference_model("conv", input_shape=(12, 12, 3))
    assert image_shape(model, None, "noise") == (12, 12, 3)
    assert image_shape(model, (16, 14), "noise") == (16, 14, 3)
    assert image_shape(model, None, np.zeros((12, 12, 3), np.float32)) == (12, 12, 3)
    with pytest.raises(InputError, match=r"init has shape \(12, 12, 1\), expected \(12, 12, 3\)"):
        image_shape(model, None, np.zeros((12, 12, 1), np.float32))
    with pytest.raises(InputError, match=r"size must be an int, \(H, W\) or \(H, W, C\)"):
        image_shape(model, (0, 4), "noise")
    rngs = [np.random.default_rng([0, k]) for k in range(2)]
    x0 = starting_images("noise", (4, 4, 1), rngs)
    assert abs(x0.mean() - 0.5) < 0.05 and 0.02 < x0.std() < 0.08
    assert not np.array_equal(x0[0], x0[1])
