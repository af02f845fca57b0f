"""KernelSHAP: exact Shapley values (a linear model's closed form, the Shapley formula by brute
force, shap's KernelExplainer with every coalition), Captum's KernelShap on the same sampled
coalitions, Captum's sampling distribution, seeds, and backend agreement."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.backends.function import FunctionModel
from innersight.core import InnersightWarning, InputError, PresetContext
from innersight.plugins._masks import grid_labels
from innersight.plugins.kernel_shap import KernelShap, coalition_plan
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

TECH = KernelShap()


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


def coalition_scores(model, image, labels, target, baseline=0.0) -> np.ndarray:
    """v(S) for every subset S of the groups (bit g of the index: group g kept), by direct
    masking, one forward per subset: the definition, independent of the technique's code."""
    groups = int(labels.max()) + 1
    out = np.empty(2**groups)
    for code in range(2**groups):
        keep = ((code >> labels) & 1).astype(bool)[..., None]
        perturbed = np.where(keep, image, np.float32(baseline))[None].astype(np.float32)
        out[code] = model.forward(perturbed).outputs[0, target]
    return out


def shapley_by_definition(values: np.ndarray, groups: int) -> np.ndarray:
    """phi_g = sum over S without g of |S|! (G - |S| - 1)! / G! (v(S + g) - v(S))."""
    phi = np.zeros(groups)
    for code in range(2**groups):
        size = bin(code).count("1")
        for g in range(groups):
            if not code >> g & 1:
                weight = math.factorial(size) * math.factorial(groups - size - 1)
                phi[g] += weight / math.factorial(groups) * (values[code | 1 << g] - values[code])
    return phi


@pytest.mark.parametrize("backend", ["function", "torch", "keras"])
def test_linear_model_gives_w_times_x_minus_b_per_group(linear, x, backend):
    weights, models = linear
    labels = grid_labels((12, 12), (2, 3))
    expected = group_contributions(weights, x, [3, 0, 2], labels, baseline=0.5)
    exact = run(models[backend], x, target=[3, 0, 2], grid=(2, 3), baseline=0.5)  # 64 rows
    sampled = run(models[backend], x, target=[3, 0, 2], grid=(2, 3), baseline=0.5, n_samples=20)
    assert exact.meta["exact"] == [True] * 3 and sampled.meta["exact"] == [False] * 3
    for ex in (exact, sampled):  # a linear score is fitted without residual by any coalitions
        assert rel_error(ex.meta["group_values"], expected) <= 1e-5  # float32 logits


def test_enumeration_gives_the_shapley_values_of_a_nonlinear_model(small_weights, x):
    model = small_function(small_weights)
    labels = grid_labels((12, 12), (2, 3))
    ex = run(model, x[:2], target=[1, 2], grid=(2, 3), n_samples=64)
    for i, t in enumerate([1, 2]):
        values = coalition_scores(model, x[i], labels, t)
        expected = shapley_by_definition(values, 6)
        assert rel_error(ex.meta["group_values"][i], expected) <= 1e-6
        # completeness: the values sum to score(x) - score(baseline)
        assert ex.meta["score"][i] - ex.meta["baseline_score"][i] == pytest.approx(
            sum(ex.meta["group_values"][i]), abs=1e-6
        )


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # shap's colour maps
def test_matches_shap_kernel_explainer_with_every_coalition(small_weights, x):
    import shap

    model = small_function(small_weights)
    labels = grid_labels((12, 12), (2, 2))
    ex = run(model, x[:1], target=0, grid=2)  # "auto": 2**4 rows, every coalition

    def score(rows):
        keep = rows[:, labels].astype(bool)[..., None]
        batch = np.where(keep, x[0], np.float32(0)).astype(np.float32)
        return model.forward(batch).outputs[:, 0]

    explainer = shap.KernelExplainer(score, np.zeros((1, 4)))
    expected = explainer.shap_values(np.ones((1, 4)), nsamples=2**4, l1_reg=False, silent=True)
    assert ex.meta["exact"] == [True]
    assert rel_error(ex.meta["group_values"][0], np.ravel(expected)) <= 1e-5


def test_matches_captum_kernel_shap_on_the_same_coalitions(torch_small, x):
    """Captum samples with torch's generator: our seeded coalitions (meta) are replayed into
    Captum's KernelShap. Captum gives the two end points a weight of 1e6 where the theory (and
    innersight) has infinity; raised to 1e7 its result is within float32 rounding of ours
    (with Captum's 1e6 the difference is 2e-6 to 8e-6 here)."""
    from captum.attr import KernelShap as CaptumKernelShap

    ex = run(ins.wrap(torch_small), x, target=[0, 1, 2], grid=3, n_samples=60, seed=11)
    assert ex.meta["exact"] == [False] * 3 and ex.meta["n_samples"] == [60] * 3
    for i in range(3):
        captum = CaptumKernelShap(torch_small)
        captum.inf_weight = 1e7
        captum.perturb_func = replay(ex.meta["coalitions"][i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's float32 warnings
            expected = captum.attribute(
                nchw(x[i : i + 1]), target=i, feature_mask=captum_grid_mask((3, 3)), n_samples=60
            ).numpy()
        assert rel_error(ex.values[i], expected[0, 0]) <= 1e-5


def test_coalition_sizes_follow_captum_s_distribution():
    rows, weights, exact = coalition_plan(16, 20_002, np.random.default_rng(0))  # < 2**16
    assert not exact and rows[0].all() and not rows[1].any() and (weights[2:] == 1).all()
    sizes = rows[2:].sum(axis=1)
    p = np.array([15 / (k * (16 - k)) for k in range(1, 16)])
    p /= p.sum()
    counts = np.bincount(sizes, minlength=17)[1:16]
    assert counts.sum() == 20_000  # never an end point among the samples
    sigma = np.sqrt(20_000 * p * (1 - p))
    assert np.all(np.abs(counts - 20_000 * p) < 4 * sigma), (counts, 20_000 * p)
    # within a size, every group is equally likely to be kept
    kept = rows[2:][sizes == 1].mean(axis=0)
    assert np.abs(kept - 1 / 16).max() < 4 * np.sqrt(1 / 16 * 15 / 16 / counts[0])


def test_seeded_and_independent_of_the_rest_of_the_batch(linear, x):
    model = linear[1]["function"]
    one = run(model, x[:1], target=0, grid=4, n_samples=40, seed=5)
    three = run(model, x, target=0, grid=4, n_samples=40, seed=5)
    other = run(model, x[:1], target=0, grid=4, n_samples=40, seed=6)
    np.testing.assert_array_equal(one.meta["coalitions"][0], three.meta["coalitions"][0])
    assert not np.array_equal(one.meta["coalitions"][0], other.meta["coalitions"][0])
    drawn = run(model, x[:1], target=0, grid=4, n_samples=40, seed=None)
    again = run(model, x[:1], target=0, grid=4, n_samples=40, seed=drawn.meta["seed"])
    np.testing.assert_array_equal(drawn.values, again.values)


def test_backends_agree_on_the_small_net(torch_small, keras_small, small_weights, x):
    models = {
        "torch": ins.wrap(torch_small),
        "keras": ins.wrap(keras_small),
        "function": small_function(small_weights),
    }
    maps = {k: run(m, x, target=[0, 2, 1], grid=3, n_samples=50).values for k, m in models.items()}
    assert np.abs(maps["function"]).max() > 1e-3
    for name in ("torch", "keras"):
        assert rel_error(maps[name], maps["function"]) <= 1e-5, name


def test_one_forward_per_chunk(x):
    weights, _ = linear_weights()
    fn = CountingFunction(weights)
    ex = run(FunctionModel(fn, input_shape=SHAPE), x, target=1, grid=3, n_samples=30, batch_size=32)
    assert fn.calls == [32, 32, 26] and ex.meta["forwards"] == 3  # 3 inputs x 30 coalitions


def test_too_few_coalitions_warn_and_more_do_not(linear, x):
    model = linear[1]["function"]
    with pytest.warns(InnersightWarning, match="pass a larger n_samples"):
        run(model, x[:1], target=0, grid=4, n_samples=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        run(model, x[:1], target=0, grid=4, n_samples=60)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_samples": 2}, "n_samples must be an int >= 3"),
        ({"n_samples": "all"}, "or 'auto', got 'all'"),
        ({"seed": -1}, "seed must be a non-negative int or None"),
        ({"feature_mask": "blobs"}, "feature_mask='blobs' is unknown"),
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
    ctx = PresetContext("report", model, sample_shape=(32, 32, 1), num_classes=10)
    assert TECH.presets(ctx) == {"grid": 4, "n_samples": 256}
    assert TECH.presets(PresetContext("quick", model, sample_shape=(5,))) == {"n_samples": 128}
    assert TECH.presets(PresetContext("full", model, sample_shape=(32, 32, 1))) == {}


def test_passes_the_technique_conformance_checks(x):
    check_technique(
        TECH, reference_model("conv"), x, target=[0, 1, 2], grid=3, progress=False, n_samples=20
    )


def test_the_module_registers_the_technique():
    from innersight.plugins import kernel_shap

    assert [type(t) for t in kernel_shap.innersight_register_techniques()] == [KernelShap]


def test_too_many_groups_for_a_regression_are_refused_with_advice():
    from innersight.plugins.lime import Lime

    model = FunctionModel(lambda v: v[:, :3] * 2.0, input_shape=(4100,))
    x = np.random.default_rng(0).random((1, 4100), dtype=np.float32)
    for tech in (TECH, Lime()):
        with pytest.raises(InputError, match=re.escape("takes at most 4096 per input")):
            tech.run(model, x, target=0, n_samples=10, progress=False)
    coarse = np.arange(4100) // 410  # the advice: fewer, larger groups
    ex = run(model, x, target=0, feature_mask=coarse)
    assert ex.meta["groups"] == [10] and ex.meta["group_values"][0][0] == pytest.approx(
        2.0 * x[0, 0], rel=1e-5
    )
