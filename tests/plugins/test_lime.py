"""LIME: Captum's Lime on the same coalitions (kernel, Lasso surrogate), scikit-learn's Lasso and
LinearRegression on the same data, the lime package's kernel, a linear model's closed form,
seeds, batching and backend agreement."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.backends.function import FunctionModel
from innersight.core import InputError, PresetContext
from innersight.plugins._masks import grid_labels
from innersight.plugins.lime import Lime, lasso
from innersight.testing import check_technique, diff, reference_model, snapshot
from tests.plugins._perturbation import (
    SHAPE,
    CountingFunction,
    captum_grid_mask,
    group_contributions,
    linear_models,
    linear_weights,
    nchw,
    rel_error,
    replay,
    small_function,
)

TECH = Lime()


def run(model, x, **params):
    params.setdefault("progress", False)
    return TECH.run(model, x, **params)


@pytest.fixture(scope="module")
def linear():
    weights, bias = linear_weights()
    return weights, linear_models(weights, bias)


@pytest.fixture
def x():
    return np.random.default_rng(4).random((3, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize(
    ("distance", "width", "baseline"), [("cosine", 1.0, 0.2), ("euclidean", 3.0, 0.0)]
)
def test_matches_captum_lime_on_the_same_coalitions(torch_small, x, distance, width, baseline):
    """Captum samples with torch's generator: our seeded rows (meta) are replayed into Captum's
    Lime, whose defaults are the ones compared: the exponential kernel on the distance between
    the input and the perturbed input, and scikit-learn's Lasso(alpha=0.01) surrogate (run to
    convergence here: its default tolerance stops early)."""
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import Lime as CaptumLime
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    params = {"distance": distance, "kernel_width": width, "baseline": baseline}
    ex = run(ins.wrap(torch_small), x, target=[0, 1, 2], grid=3, n_samples=80, **params)
    for i in range(3):
        captum = CaptumLime(
            torch_small,
            interpretable_model=SkLearnLasso(alpha=0.01, tol=1e-12, max_iter=100_000),
            similarity_func=get_exp_kernel_similarity_function(distance, width),
            perturb_func=replay(ex.meta["coalitions"][i]),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's float32 convergence notes
            expected = captum.attribute(
                nchw(x[i : i + 1]),
                target=i,
                feature_mask=captum_grid_mask((3, 3)),
                baselines=baseline,
                n_samples=80,
            ).numpy()
        assert np.abs(expected).max() > 1e-3  # not vacuous
        assert rel_error(ex.values[i], expected[0, 0]) <= 1e-5


def test_surrogate_is_scikit_learn_s_lasso_and_least_squares():
    from sklearn.linear_model import Lasso, LinearRegression

    rng = np.random.default_rng(0)
    for groups, samples in [(5, 40), (16, 200), (64, 1000)]:
        z = rng.random((samples, groups)) < 0.5
        beta = rng.standard_normal(groups) * (rng.random(groups) < 0.5)
        y = z @ beta + np.tanh(2.0 * z[:, 0] * z[:, 1]) + 0.3 * rng.standard_normal(samples)
        w = rng.random(samples) + 0.1
        coef, intercept, _ = lasso(z, y, w, 0.01)
        sk = Lasso(alpha=0.01, tol=1e-14, max_iter=1_000_000).fit(z.astype(float), y, w)
        assert rel_error(coef, sk.coef_) <= 1e-9 and intercept == pytest.approx(sk.intercept_)
        assert np.array_equal(coef == 0, sk.coef_ == 0)  # the same sparsity
        coef, intercept, r2 = lasso(z, y, w, 0.0)
        ls = LinearRegression().fit(z.astype(float), y, w)
        assert rel_error(coef, ls.coef_) <= 1e-9 and intercept == pytest.approx(ls.intercept_)
        assert r2 == pytest.approx(ls.score(z.astype(float), y, w))


def test_interpretable_kernel_is_the_lime_package_s(linear, x):
    from lime.lime_image import LimeImageExplainer
    from sklearn.metrics import pairwise_distances

    params = {"kernel_space": "interpretable", "kernel_width": 0.25}
    ex = run(linear[1]["function"], x[:1], target=0, grid=4, n_samples=200, **params)
    rows = ex.meta["coalitions"][0]
    distances = pairwise_distances(rows, np.ones((1, 16)), metric="cosine").ravel()
    expected = LimeImageExplainer(kernel_width=0.25).base.kernel_fn(distances)
    np.testing.assert_allclose(ex.meta["similarities"][0], expected, rtol=1e-12)


def test_input_space_kernel_by_definition(small_weights, x):
    model = small_function(small_weights)
    ex = run(model, x[:1], target=1, grid=3, n_samples=30, baseline=0.3, kernel_width=0.7)
    labels = grid_labels((12, 12), (3, 3))
    flat = x[0].astype(np.float64).ravel()
    for row, weight in zip(ex.meta["coalitions"][0], ex.meta["similarities"][0], strict=True):
        keep = row[labels][..., None].astype(bool)
        perturbed = np.where(keep, x[0], np.float32(0.3)).astype(np.float64).ravel()
        cos = flat @ perturbed / (np.linalg.norm(flat) * np.linalg.norm(perturbed))
        assert weight == pytest.approx(np.exp(-((1 - cos) ** 2) / (2 * 0.7**2)), rel=1e-9)


@pytest.mark.parametrize("backend", ["function", "torch", "keras"])
def test_least_squares_on_a_linear_model_gives_its_contributions(linear, x, backend):
    weights, models = linear
    ex = run(models[backend], x, target=[1, 3, 0], grid=(2, 3), n_samples=60, alpha=0.0)
    expected = group_contributions(weights, x, [1, 3, 0], grid_labels((12, 12), (2, 3)))
    assert rel_error(ex.meta["group_values"], expected) <= 1e-5
    assert min(ex.meta["fit_r2"]) > 1 - 1e-9  # a linear score is fitted exactly


def test_l1_penalty_shrinks_towards_zero(linear, x):
    model = linear[1]["function"]
    plain = run(model, x[:1], target=0, grid=3, n_samples=200, alpha=0.0)
    sparse = run(model, x[:1], target=0, grid=3, n_samples=200, alpha=0.5)
    assert (
        np.abs(sparse.meta["group_values"][0]).sum() < np.abs(plain.meta["group_values"][0]).sum()
    )
    assert 0 in sparse.meta["group_values"][0]


def test_backends_agree_on_the_small_net(torch_small, keras_small, small_weights, x):
    models = {
        "torch": ins.wrap(torch_small),
        "keras": ins.wrap(keras_small),
        "function": small_function(small_weights),
    }
    maps = {k: run(m, x, target=[0, 2, 1], grid=3, n_samples=60).values for k, m in models.items()}
    assert np.abs(maps["function"]).max() > 1e-3
    for name in ("torch", "keras"):
        assert rel_error(maps[name], maps["function"]) <= 1e-5, name


def test_one_forward_per_chunk_and_seeded(x):
    weights, _ = linear_weights()
    fn = CountingFunction(weights)
    model = FunctionModel(fn, input_shape=SHAPE)
    ex = run(model, x, target=1, grid=3, n_samples=29, batch_size=64, seed=3)
    assert fn.calls == [64, 26] and ex.meta["forwards"] == 2  # 3 x (29 + the unperturbed input)
    again = run(model, x[1:2], target=1, grid=3, n_samples=29, batch_size=64, seed=3)
    np.testing.assert_array_equal(again.meta["coalitions"][0], ex.meta["coalitions"][1])
    np.testing.assert_allclose(again.values[0], ex.values[1], rtol=1e-12)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_samples": 1}, "n_samples must be at least 2"),
        ({"alpha": -0.1}, "alpha must be a finite number >= 0"),
        ({"kernel_width": 0}, "kernel_width must be a finite number > 0"),
        ({"distance": "manhattan"}, "distance='manhattan' is unknown; use one of 'cosine'"),
        ({"kernel_space": "binary"}, "kernel_space='binary' is unknown"),
    ],
)
def test_mistakes_say_what_to_do(linear, x, params, message):
    with pytest.raises(InputError, match=re.escape(message)):
        run(linear[1]["function"], x, **params)


def test_model_state_is_unchanged(torch_small, x):
    before = snapshot(torch_small)
    run(ins.wrap(torch_small), x, grid=3, n_samples=20)
    assert diff(before, snapshot(torch_small)) == []


def test_presets_bound_the_report():
    model = FunctionModel(lambda v: v.reshape(len(v), -1), input_shape=(32, 32, 1))
    ctx = PresetContext("quick", model, sample_shape=(32, 32, 1), num_classes=10)
    assert TECH.presets(ctx) == {"grid": 4, "n_samples": 128}
    assert TECH.presets(PresetContext("full", model, sample_shape=(32, 32, 1))) == {}
    assert TECH.order == 66 and TECH.requires == frozenset({"forward"})


def test_passes_the_technique_conformance_checks(x):
    check_technique(
        TECH, reference_model("conv"), x, target=[0, 1, 2], grid=3, progress=False, n_samples=20
    )


def test_the_module_registers_the_technique():
    from innersight.plugins import lime

    assert [type(t) for t in lime.innersight_register_techniques()] == [Lime]


def test_a_lasso_that_zeroes_every_weight_warns_with_advice_that_works() -> None:
    """Scores that vary by 1e-4 against the default alpha=0.01: every weight is shrunk to zero,
    which looks like 'nothing matters'; the warning says so and its advice gives a map."""
    import warnings

    import innersight as ins
    from innersight.core import InnersightWarning

    weights = np.linspace(-1.0, 1.0, 6).astype(np.float32)

    def tiny(batch: np.ndarray) -> np.ndarray:
        return (1e-4 * batch @ weights)[:, None]

    x = np.ones((1, 6), np.float32)
    model = ins.wrap(tiny, input_shape=(6,))
    with pytest.warns(InnersightWarning, match=r"alpha=0\.01 shrank every group weight to zero"):
        ex = ins.explain("lime", model, x, target=0, n_samples=64, progress=False)
    assert not np.any(ex.values)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        advised = ins.explain("lime", model, x, target=0, n_samples=64, alpha=1e-5, progress=False)
    assert np.corrcoef(advised.values[0], weights)[0, 1] > 0.9
