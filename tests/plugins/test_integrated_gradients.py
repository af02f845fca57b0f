"""Integrated Gradients: completeness, closed forms, a fine-grid reference, parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique, reference_model
from innersight.testing.reference_layers import Dense, Flatten

BACKENDS = ["numpy", "torch", "keras"]
FIXED = ["riemann_trapezoid", "riemann_midpoint", "gauss_legendre"]


@pytest.fixture(params=BACKENDS)
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


@pytest.fixture
def ref(small_weights):
    return ReferenceAdapter.from_weights(small_weights)


@pytest.fixture(scope="module")
def linear_weights() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((12 * 12 * 3, 5)).astype(np.float32)


@pytest.fixture(scope="module", params=BACKENDS)
def linear(request, linear_weights):
    """The same linear model (432 -> 5, Keras kernel layout) on each backend."""
    w, b = linear_weights, np.linspace(-0.2, 0.2, 5).astype(np.float32)
    if request.param == "numpy":
        return ReferenceAdapter(
            ReferenceNetwork([Flatten("flatten"), Dense("fc", w, b)], (12, 12, 3))
        )
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


def _errors(ex) -> np.ndarray:
    return np.array([c["relative_error"] for c in ex.meta["completeness"]])


def test_completeness_within_one_percent_at_defaults(small, images):
    """Default: adaptive trapezoid from 50 points, tolerance 1% (measured: at most 0.34% for a
    black baseline, 0.48% for the mean baseline; a fixed 50-point grid misses by 3.6%)."""
    adapter = ins.wrap(small)
    for baseline in (0.0, "mean"):
        ex = ins.explain("integrated_gradients", adapter, images, baseline=baseline)
        assert all(ex.meta["converged"])
        assert _errors(ex).max() < 0.01, ex.meta["completeness"]
        values = adapter.value_and_grad(images, ins.objectives.Logit(ex.meta["target"]))[0]
        np.testing.assert_allclose(ex.meta["score"], values, rtol=1e-6, atol=1e-6)
        sums = ex.values.reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose(
            sums, [c["sum_attr"] for c in ex.meta["completeness"]], rtol=1e-5
        )
        assert abs(sum(c["score_diff"] for c in ex.meta["completeness"])) > 0.1


def test_fixed_grid_is_less_complete_than_adaptive(ref, images):
    fixed = ins.explain("integrated_gradients", ref, images, method="riemann_trapezoid", steps=50)
    adaptive = ins.explain("integrated_gradients", ref, images)
    assert _errors(fixed).max() > 0.03 > 0.01 > _errors(adaptive).max()
    assert fixed.meta["gradient_evaluations"] == 4 * 50


def test_budget_too_small_is_reported(ref, images):
    with pytest.warns(
        ins.InnersightWarning,
        match=r"integrated_gradients: [1-4] of 4 samples missed tolerance=0\.01 within "
        r"max_steps=52 points \(sample \d: the quadrature misses .* of the score difference, see "
        r"meta\['completeness'\]\); the integrand is steepest at "
        r"alpha in \[.*\] \(meta\['steep_interval'\]\); raise max_steps, or use another baseline",
    ):
        ex = ins.explain("integrated_gradients", ref, images, max_steps=52)
    assert max(ex.meta["points"]) == 52 and not all(ex.meta["converged"])
    missed = [
        c for c, ok in zip(ex.meta["completeness"], ex.meta["converged"], strict=True) if not ok
    ]
    assert max(c["relative_error"] for c in missed) > 0.01


def test_adaptive_matches_a_fine_fixed_grid(ref, images):
    """Per pixel, not only in sum: within 1% (L2) of a 4001-point trapezoid (itself ~0.2% off)."""
    x = images[:2]
    fine = ins.explain(
        "integrated_gradients", ref, x, method="riemann_trapezoid", steps=10001
    ).values
    ex = ins.explain("integrated_gradients", ref, x)
    rel = np.linalg.norm((ex.values - fine).reshape(2, -1), axis=1) / np.linalg.norm(
        fine.reshape(2, -1), axis=1
    )
    assert rel.max() < 0.01
    assert max(ex.meta["points"]) < 400


@pytest.mark.parametrize("method", ["adaptive", *FIXED])
def test_linear_model_closed_form(linear, linear_weights, images, method):
    """IG of a linear model is (x - baseline) * W[:, target], whatever the rule."""
    targets = [0, 2, 4, 1]
    columns = linear_weights[:, targets].T.reshape(4, 12, 12, 3).astype(np.float64)
    mean = images.mean(axis=(1, 2), keepdims=True)
    array = np.random.default_rng(3).random((12, 12, 3), dtype=np.float32)
    for baseline, b in ((0.0, 0.0), (0.25, 0.25), ("mean", mean), (array, array)):
        ex = ins.explain(
            "integrated_gradients",
            linear,
            images,
            target=targets,
            baseline=baseline,
            method=method,
            steps=8,
        )
        np.testing.assert_allclose(ex.values, (images - b) * columns, rtol=1e-5, atol=1e-6)
        assert _errors(ex).max() < 1e-4


def test_vector_inputs_closed_form():
    """(N, D) inputs on a linear model: (x - b) * W[:, t]; reduce_channels leaves them alone."""
    model = reference_model("linear", seed=2, input_shape=(6,), num_classes=3)
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    ex = ins.explain(
        "integrated_gradients", model, x, target=1, baseline="mean", reduce_channels="sum"
    )
    kernel = model.network.layers[-1].kernel.astype(np.float64)
    expected = (x - x.mean(axis=1, keepdims=True)) * kernel[:, 1]
    np.testing.assert_allclose(ex.values, expected, rtol=1e-5, atol=1e-7)


def test_quadratic_torch_model_closed_form(images):
    """score = (v . x)^2 is not linear, but its gradient is linear along the path, which every
    rule integrates exactly: IG = (x - b) * v * (v . (x + b))."""
    torch = pytest.importorskip("torch")

    class Square(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = torch.nn.Parameter(torch.from_numpy(v))

        def forward(self, x):
            return (x.flatten(1) @ self.v) ** 2

    v = np.random.default_rng(5).standard_normal((432, 2)).astype(np.float32) / 10
    model = Square(v).eval()
    b = 0.3
    x_flat = images.transpose(0, 3, 1, 2).reshape(4, -1).astype(np.float64)  # torch order
    for method in ("adaptive", *FIXED):
        ex = ins.explain(
            "integrated_gradients", model, images, target=1, baseline=b, method=method, steps=5
        )
        expected = (x_flat - b) * v[:, 1] * ((x_flat + b) @ v[:, 1])[:, None]
        expected = expected.reshape(4, 3, 12, 12).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(ex.values, expected, rtol=1e-4, atol=1e-7)
        assert _errors(ex).max() < 1e-4


def test_torch_keras_and_numpy_agree(small_weights, torch_small, keras_small, images):
    """Fixed rule: to 1e-6; adaptive: the same grids here, so to 1e-5 (measured 1.5e-8)."""
    ref = ReferenceAdapter.from_weights(small_weights)
    x = images[:2]
    for params, atol in (({"method": "riemann_midpoint", "steps": 32}, 1e-6), ({}, 1e-5)):
        t = ins.explain("integrated_gradients", torch_small, x, **params)
        k = ins.explain("integrated_gradients", keras_small, x, **params)
        n = ins.explain("integrated_gradients", ref, x, **params)
        assert np.abs(t.values).max() > 0.05
        np.testing.assert_allclose(t.values, k.values, rtol=1e-4, atol=atol)
        np.testing.assert_allclose(n.values, k.values, rtol=1e-4, atol=atol)


def test_batch_size_one_equals_auto(small, images):
    """numpy: bit-identical; torch/Keras float32 kernels round differently per batch size."""
    exact = ins.wrap(small).backend == "numpy"
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-6, "atol": 1e-7}
    x = images[:1]
    budget = {} if exact else {"steps": 10, "tolerance": 0.05}  # torch/Keras: fewer calls
    auto = ins.explain("integrated_gradients", small, x, batch_size="auto", **budget)
    one = ins.explain("integrated_gradients", small, x, batch_size=1, **budget)
    assert auto.meta["points"][0] > budget.get("steps", 50)  # the grid was refined
    np.testing.assert_allclose(one.values, auto.values, **tol)
    assert one.meta["points"] == auto.meta["points"]
    rule = {"method": "gauss_legendre", "steps": 12}
    odd = ins.explain("integrated_gradients", small, x, batch_size=5, **rule)
    ref = ins.explain("integrated_gradients", small, x, **rule)
    np.testing.assert_allclose(odd.values, ref.values, **tol)


def test_channel_reduction_keeps_completeness(ref, images):
    full = ins.explain("integrated_gradients", ref, images)
    summed = ins.explain("integrated_gradients", ref, images, reduce_channels="sum")
    mean = ins.explain("integrated_gradients", ref, images, reduce_channels="mean")
    np.testing.assert_allclose(summed.values, full.values.sum(axis=-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean.values, full.values.mean(axis=-1), rtol=1e-5, atol=1e-7)
    assert summed.meta["completeness"] == full.meta["completeness"]


def test_progress_false_is_silent_and_callback_counts_every_pass(capfd, ref, images):
    ins.explain("integrated_gradients", ref, images, progress=False)
    assert capfd.readouterr() == ("", "")
    calls = []
    ex = ins.explain(
        "integrated_gradients", ref, images, progress=lambda d, t: calls.append((d, t))
    )
    total = ex.meta["gradient_evaluations"]
    assert calls[-1] == (total, total) and total > 4 * 50
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, r"steps must be a positive int, got 0; pass e\.g\. steps=50"),
        (
            {"steps": 1, "method": "riemann_trapezoid"},
            r"steps must be at least 2, got 1; pass e\.g\. steps=50",
        ),
        ({"steps": -4, "method": "gauss_legendre"}, r"steps must be a positive int, got -4"),
        ({"steps": 2.5}, r"steps must be a positive int, got 2\.5"),
        ({"steps": True}, r"steps must be a positive int, got True"),
        (
            {"method": "simpson"},
            r"method='simpson' is unknown; use one of 'adaptive', 'riemann_trapezoid', "
            r"'riemann_midpoint', 'gauss_legendre'",
        ),
        (
            {"baseline": np.zeros((5, 5, 3))},
            r"baseline has shape \(5, 5, 3\); pass a number \(e\.g\. 0\.0\), 'zeros', 'mean', "
            r"'blur', or an array shaped like one input \(12, 12, 3\) or like the batch "
            r"\(4, 12, 12, 3\)",
        ),
        (
            {"baseline": "white"},
            r"baseline='white' is unknown; pass a number \(e\.g\. 0\.0\), 'zeros', 'mean', 'blur'",
        ),
        ({"baseline": np.full((12, 12, 3), np.nan)}, r"baseline contains NaN or Inf values"),
        (
            {"baseline": None},
            r"baseline=None is not a baseline; pass a number \(e\.g\. 0\.0\), 'zeros'",
        ),
        ({"baseline": True}, r"baseline=True is not a baseline; pass a number"),
        (
            {"baseline": {"a": 1}},
            r"baseline must be a number, a name or an array, got dict; pass a number",
        ),
        (
            {"tolerance": 0.0},
            r"tolerance must be a finite number in \(0, 1\), got 0\.0; pass e\.g\. tolerance=0\.01",
        ),
        (
            {"max_steps": 10},
            r"max_steps must be at least 50, got 10; pass e\.g\. max_steps=1000",
        ),
        (
            {"method": "gauss_legendre", "tolerance": 0.05},
            r"tolerance, max_steps and max_rounds apply to method='adaptive' only, got "
            r"method='gauss_legendre'",
        ),
        (
            {"max_rounds": -1},
            r"max_rounds must be a non-negative int, got -1; pass e\.g\. max_rounds=60",
        ),
        (
            {"method": "riemann_midpoint", "max_rounds": 5},
            r"max_rounds apply to method='adaptive' only",
        ),
        (
            {"reduce_channels": "max"},
            r"reduce_channels='max' is unknown; use 'sum', 'mean' or None",
        ),
        ({"batch_size": -1}, r"batch_size must be a positive int or 'auto', got -1"),
    ],
)
def test_bad_parameters_are_reported(params, message, ref, images):
    with pytest.raises(ins.InputError, match=message):
        ins.explain("integrated_gradients", ref, images, **params)


def test_conformance(small, images):
    adapter = ins.wrap(small)
    check_technique(
        "integrated_gradients", adapter, images[:2], steps=6, tolerance=0.05, max_steps=200
    )
    check_technique("integrated_gradients", adapter, images[:2], method="gauss_legendre", steps=6)
