"""SmoothGrad: checked against saliency, a closed form and a loop written out in the test."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique, reference_model
from innersight.testing.reference_layers import Dense, Flatten

BACKENDS = ["numpy", "torch", "keras"]


@pytest.fixture(params=BACKENDS)
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


@pytest.fixture(scope="module")
def linear_weights() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((12 * 12 * 3, 5)).astype(np.float32)


@pytest.fixture(scope="module", params=BACKENDS)
def linear(request, linear_weights):
    """The same linear model (432 -> 5, Keras kernel layout) on each backend."""
    w, b = linear_weights, np.linspace(-0.2, 0.2, 5).astype(np.float32)
    if request.param == "numpy":
        net = ReferenceNetwork([Flatten("flatten"), Dense("fc", w, b)], (12, 12, 3))
        return ReferenceAdapter(net)
    if request.param == "keras":
        import keras

        km = keras.Sequential(
            [keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(5)]
        )
        km.layers[-1].set_weights([w, b])
        return km
    import torch

    tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(432, 5))
    with torch.no_grad():  # torch flattens (C, H, W)
        tm[1].weight.copy_(
            torch.from_numpy(w.reshape(12, 12, 3, 5).transpose(3, 2, 0, 1).reshape(5, -1).copy())
        )
        tm[1].bias.copy_(torch.from_numpy(b))
    return tm.eval()


def _framework_tolerance(model) -> dict[str, float]:
    """numpy is exact; torch/Keras float32 kernels round differently for other batch sizes."""
    if ins.wrap(model).backend == "numpy":
        return {"rtol": 0, "atol": 0}
    return {"rtol": 1e-6, "atol": 1e-7}


@pytest.mark.parametrize("reduce", ["max", "mean", None])
def test_zero_noise_is_saliency(small, images, reduce):
    expected = ins.explain("saliency", small, images, target=[0, 1, 2, 0], reduce_channels=reduce)
    got = ins.explain(
        "smoothgrad",
        small,
        images,
        target=[0, 1, 2, 0],
        noise=0.0,
        samples=5,
        reduce_channels=reduce,
    )
    assert got.values.dtype == np.float32
    assert expected.values.max() > 0
    np.testing.assert_allclose(got.values, expected.values, **_framework_tolerance(small))


def test_matches_a_loop_over_noisy_copies(small, images):
    """The documented noise scheme, one copy at a time, averaged by hand."""
    adapter = ins.wrap(small)
    x = images[:2]
    targets = adapter.predict_classes(x)
    ex = ins.explain("smoothgrad", adapter, x, noise=0.2, samples=6, seed=3, reduce_channels=None)
    sq = ins.explain("smoothgrad", adapter, x, noise=0.2, samples=6, seed=3, magnitude=True)
    for i in range(2):
        sigma = 0.2 * (x[i].max() - x[i].min())
        copies = np.stack(
            [
                x[i]
                + (sigma * np.random.default_rng([3, i, k]).standard_normal(x.shape[1:])).astype(
                    np.float32
                )
                for k in range(6)
            ]
        )
        grads = adapter.value_and_grad(copies, ins.objectives.Logit(int(targets[i])))[1].astype(
            np.float64
        )
        np.testing.assert_allclose(ex.values[i], np.abs(grads).mean(axis=0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            sq.values[i], (grads**2).mean(axis=0).max(axis=-1), rtol=1e-5, atol=1e-9
        )
        assert ex.meta["sigma"][i] == pytest.approx(sigma, rel=1e-6)
    assert not np.allclose(
        ex.values, np.abs(adapter.value_and_grad(x, ins.objectives.Logit(targets))[1])
    )


def test_linear_model_closed_form(linear, linear_weights, images):
    """A linear model's gradient ignores the noise: |W[:, t]| (and W[:, t]^2 with magnitude)."""
    targets = [0, 2, 4, 1]
    columns = linear_weights[:, targets].T.reshape(4, 12, 12, 3)
    ex = ins.explain(
        "smoothgrad", linear, images, target=targets, noise=0.5, samples=4, reduce_channels=None
    )
    np.testing.assert_allclose(ex.values, np.abs(columns), rtol=1e-5, atol=1e-7)
    sq = ins.explain(
        "smoothgrad",
        linear,
        images,
        target=targets,
        samples=4,
        magnitude=True,
        reduce_channels="mean",
    )
    np.testing.assert_allclose(
        sq.values, (columns.astype(np.float64) ** 2).mean(axis=-1), rtol=1e-5
    )


def test_vector_inputs_keep_their_features():
    """(N, D) inputs: no channel axis to reduce; a linear model gives |W[:, t]| again."""
    model = reference_model("linear", seed=2, input_shape=(6,), num_classes=3)
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    ex = ins.explain("smoothgrad", model, x, target=2, samples=3)
    kernel = model.network.layers[-1].kernel
    np.testing.assert_allclose(ex.values, np.abs(np.tile(kernel[:, 2], (5, 1))), rtol=1e-6)


def test_torch_and_keras_agree(torch_small, keras_small, images):
    t = ins.explain("smoothgrad", torch_small, images, samples=10)
    k = ins.explain("smoothgrad", keras_small, images, samples=10)
    assert t.meta["target"] == k.meta["target"]
    assert t.values.max() > 0.05
    np.testing.assert_allclose(t.values, k.values, rtol=1e-5, atol=1e-6)


def test_batch_size_one_equals_auto(small, images):
    x = images[:2]
    auto = ins.explain("smoothgrad", small, x, samples=8, batch_size="auto").values
    one = ins.explain("smoothgrad", small, x, samples=8, batch_size=1).values
    three = ins.explain("smoothgrad", small, x, samples=8, batch_size=3).values
    np.testing.assert_allclose(one, auto, **_framework_tolerance(small))
    np.testing.assert_allclose(three, auto, **_framework_tolerance(small))


def test_seed_controls_the_noise(images, small_weights):
    ref = ReferenceAdapter.from_weights(small_weights)
    a = ins.explain("smoothgrad", ref, images, samples=4, seed=1)
    b = ins.explain("smoothgrad", ref, images, samples=4, seed=1)
    c = ins.explain("smoothgrad", ref, images, samples=4, seed=2)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    fresh = ins.explain("smoothgrad", ref, images, samples=4, seed=None)
    assert isinstance(fresh.meta["seed"], int)
    again = ins.explain("smoothgrad", ref, images, samples=4, seed=fresh.meta["seed"])
    np.testing.assert_array_equal(fresh.values, again.values)
    assert a.params["seed"] == 1 and a.meta["seed"] == 1


def test_progress_false_is_silent_and_callback_counts(capfd, images, small_weights):
    ref = ReferenceAdapter.from_weights(small_weights)
    ins.explain("smoothgrad", ref, images, samples=5, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    calls = []
    ins.explain("smoothgrad", ref, images, samples=5, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (20, 20)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"noise": -0.1},
            r"noise must be a finite number >= 0, got -0\.1; pass e\.g\. noise=0\.15",
        ),
        (
            {"noise": "big"},
            r"noise must be a finite number >= 0, got 'big'; pass e\.g\. noise=0\.15",
        ),
        ({"noise": float("nan")}, r"noise must be a finite number >= 0, got nan"),
        ({"noise": True}, r"noise must be a finite number >= 0, got True"),
        ({"samples": 0}, r"samples must be a positive int, got 0; pass e\.g\. samples=25"),
        ({"samples": 2.5}, r"samples must be a positive int, got 2\.5"),
        ({"seed": -3}, r"seed must be a non-negative int or None, got -3; pass e\.g\. 0"),
        ({"seed": True}, r"seed must be a non-negative int or None, got True"),
        ({"magnitude": "yes"}, r"magnitude must be True or False, got 'yes'"),
        (
            {"reduce_channels": "sum"},
            r"reduce_channels='sum' is unknown; use 'max', 'mean' or None",
        ),
        ({"batch_size": 0}, r"batch_size must be a positive int or 'auto', got 0"),
        ({"stdev": -1.0}, r"stdev must be a finite number >= 0, got -1\.0; pass e\.g\. stdev=0\.1"),
    ],
)
def test_bad_parameters_are_reported(params, message, images, small_weights):
    ref = ReferenceAdapter.from_weights(small_weights)
    with pytest.raises(ins.InputError, match=message):
        ins.explain("smoothgrad", ref, images, **params)


def test_conformance(small, images):
    check_technique("smoothgrad", ins.wrap(small), images[:3], samples=4)


def _absolute_loop(adapter, x: np.ndarray, stdev: float, samples: int, seed: int) -> np.ndarray:
    """Mean |gradient| over the documented copies x + stdev * N(0, 1) (rng [seed, i, k])."""
    targets = adapter.predict_classes(x)
    out = np.zeros(x.shape)
    for i in range(len(x)):
        for k in range(samples):
            noise = stdev * np.random.default_rng([seed, i, k]).standard_normal(x.shape[1:])
            copy = (x[i] + noise.astype(np.float32))[None]
            grad = adapter.value_and_grad(copy, ins.objectives.Logit(int(targets[i])))[1][0]
            out[i] += np.abs(grad.astype(np.float64)) / samples
    return out


def test_absolute_stdev_noises_a_constant_input_that_relative_noise_leaves_alone(small, images):
    """A constant image has range 0: noise=0.2 adds nothing (saliency), stdev=0.2 adds the
    same noise to every input, as the loop over the documented draws does."""
    adapter = ins.wrap(small)
    x = np.stack([np.full(images.shape[1:], 0.5, np.float32), images[1]])
    run = {"samples": 5, "seed": 4, "reduce_channels": None}
    relative = ins.explain("smoothgrad", adapter, x, noise=0.2, **run)
    plain = ins.explain("saliency", adapter, x[:1], reduce_channels=None)
    np.testing.assert_allclose(relative.values[0], plain.values[0], rtol=1e-6, atol=1e-8)
    absolute = ins.explain("smoothgrad", adapter, x, stdev=0.2, **run)
    assert absolute.meta["sigma"] == [0.2, 0.2]
    assert absolute.params["stdev"] == 0.2 and absolute.params["noise"] is None
    want = _absolute_loop(adapter, x, 0.2, 5, 4)
    np.testing.assert_allclose(absolute.values, want, rtol=1e-5, atol=1e-7)
    assert np.abs(absolute.values[0] - plain.values[0]).max() > 1e-4


def test_one_feature_inputs_get_absolute_noise():
    """(N, 1) inputs: a single feature has range 0 in every input; stdev still smooths."""
    w = np.array([[1.0, -2.0]], np.float32)
    net = ReferenceNetwork([Dense("fc", w, np.zeros(2, np.float32))], (1,))
    adapter = ReferenceAdapter(net)
    x = np.array([[0.3], [-1.0]], np.float32)
    ex = ins.explain("smoothgrad", adapter, x, target=1, stdev=0.5, samples=3, progress=False)
    assert ex.meta["sigma"] == [0.5, 0.5]
    np.testing.assert_allclose(ex.values, [[2.0], [2.0]])  # linear: |w| whatever the noise
    relative = ins.explain("smoothgrad", adapter, x, target=1, samples=3, progress=False)
    assert relative.meta["sigma"] == [0.0, 0.0]  # the range of one feature is 0


def test_noise_and_stdev_together_are_refused_and_either_alone_works(images, small_weights):
    ref = ReferenceAdapter.from_weights(small_weights)
    with pytest.raises(
        ins.InputError,
        match=r"smoothgrad takes noise \(relative to each input's range\) or stdev \(absolute\), "
        r"not both; got noise=0\.1 and stdev=0\.3: drop one, e\.g\. stdev=0\.3",
    ):
        ins.explain("smoothgrad", ref, images, noise=0.1, stdev=0.3)
    for one in ({"stdev": 0.3}, {"noise": 0.1}):
        ex = ins.explain("smoothgrad", ref, images, samples=2, progress=False, **one)
        assert ex.params["stdev" if "stdev" in one else "noise"] == pytest.approx(
            next(iter(one.values()))
        )
