"""Feature ablation: a linear model's closed form, Captum's FeatureAblation on the same torch
model, masks and baselines, torch vs Keras vs function-backend agreement, batching."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import innersight as ins
from innersight.backends.function import FunctionModel
from innersight.core import InputError, PresetContext
from innersight.plugins._masks import grid_labels
from innersight.plugins.feature_ablation import FeatureAblation
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
    small_function,
)

TECH = FeatureAblation()


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


@pytest.mark.parametrize("backend", ["function", "torch", "keras"])
def test_linear_closed_form_per_grid_cell(linear, x, backend):
    weights, models = linear
    ex = run(models[backend], x, target=[3, 0, 2], grid=(3, 4), baseline=0.25)
    labels = grid_labels(SHAPE[:2], (3, 4))
    expected = group_contributions(weights, x, [3, 0, 2], labels, baseline=0.25)
    np.testing.assert_allclose(
        ex.meta["group_values"], expected, atol=2e-6 * np.abs(expected).max()
    )
    # every pixel shows its cell's drop
    np.testing.assert_array_equal(
        ex.values,
        np.take_along_axis(
            np.asarray(ex.meta["group_values"], np.float32), labels.reshape(1, -1).repeat(3, 0), 1
        ).reshape(3, 12, 12),
    )
    assert ex.meta["groups"] == [12, 12, 12] and ex.meta["mask"] == "grid 3x4"


def test_per_input_masks_and_array_baseline(linear, x):
    weights, models = linear
    rng = np.random.default_rng(0)
    masks = rng.integers(-3, 40, size=(3, 12, 12)) * 7  # arbitrary, sparse, negative labels
    base = rng.random(SHAPE, dtype=np.float32)
    ex = run(models["function"], x, target=1, feature_mask=masks, baseline=base)
    expected = group_contributions(weights, x, [1, 1, 1], masks, baseline=base[None])
    for i in range(3):
        np.testing.assert_allclose(ex.meta["group_values"][i], expected[i], atol=1e-5)
        assert ex.meta["group_labels"][i] == np.unique(masks[i]).tolist()
        # the renumbered mask holds the same partition as the one given
        _, inverse = np.unique(masks[i], return_inverse=True)
        np.testing.assert_array_equal(ex.meta["feature_mask"][i], inverse.reshape(12, 12))


def test_matches_captum_feature_ablation(torch_small, x):
    from captum.attr import FeatureAblation as CaptumFeatureAblation

    rng = np.random.default_rng(3)
    model = ins.wrap(torch_small)
    captum = CaptumFeatureAblation(torch_small)
    user_mask = rng.integers(0, 7, size=(12, 12))
    import torch

    for mask, params in [
        (captum_grid_mask((3, 3)), {"grid": 3, "baseline": 0.2}),
        (torch.from_numpy(user_mask)[None, None], {"feature_mask": user_mask, "baseline": 0.0}),
    ]:
        ex = run(model, x, target=[0, 1, 2], **params)
        expected = captum.attribute(
            nchw(x), target=[0, 1, 2], feature_mask=mask, baselines=params["baseline"]
        ).numpy()
        assert np.allclose(expected, expected[:, :1])  # channels share the pixel's group
        assert rel_error(ex.values, expected[:, 0]) <= 1e-5


def test_backends_agree_on_the_small_net(torch_small, keras_small, small_weights, x):
    models = {
        "torch": ins.wrap(torch_small),
        "keras": ins.wrap(keras_small),
        "function": small_function(small_weights),
    }
    maps = {
        k: run(m, x, target=[0, 2, 1], grid=4, baseline="mean").values for k, m in models.items()
    }
    assert np.abs(maps["function"]).max() > 1e-3  # not vacuous
    for name in ("torch", "keras"):
        assert rel_error(maps[name], maps["function"]) <= 1e-5, name


def test_one_forward_per_chunk_never_per_feature(x):
    weights, _ = linear_weights()
    fn = CountingFunction(weights)
    ex = run(FunctionModel(fn, input_shape=SHAPE), x, target=0, grid=3, batch_size=8)
    # 3 inputs x (1 original + 9 cells) = 30 perturbed inputs in chunks of 8: 4 forwards
    assert fn.calls == [8, 8, 8, 6]
    assert ex.meta["forwards"] == 4 and ex.meta["perturbations"] == 30
    assert ex.meta["batch_size"] == 8


def test_target_none_explains_the_predicted_class(linear, x):
    weights, models = linear
    ex = run(models["function"], x, grid=2)
    predicted = (x.reshape(3, -1) @ weights + linear_weights()[1]).argmax(1)
    assert ex.meta["target"] == predicted.tolist()
    expected = group_contributions(weights, x, predicted, grid_labels((12, 12), (2, 2)))
    np.testing.assert_allclose(ex.meta["group_values"], expected, atol=1e-5)


def test_tabular_feature_groups_on_the_function_backend():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    model = FunctionModel(lambda v: v @ w, input_shape=(7,))
    x = rng.random((4, 7), dtype=np.float32)
    groups = np.array([2, 2, 0, 1, 1, 1, 5])
    ex = run(model, x, target=2, feature_mask=groups, baseline="mean")
    mean = x.mean(axis=1, keepdims=True)
    contrib = w[:, 2] * (x - mean)
    expected = np.stack([contrib[:, groups == g].sum(1) for g in (0, 1, 2, 5)], axis=1)
    np.testing.assert_allclose(ex.meta["group_values"], expected, atol=1e-6)
    assert ex.values.shape == (4, 7)
    np.testing.assert_allclose(ex.values[:, 0], expected[:, 2], atol=1e-6)
    # default mask for vectors: every feature alone
    alone = run(model, x, target=2, baseline="mean")
    np.testing.assert_allclose(alone.values, contrib, atol=1e-6)


def test_slic_superpixels_match_scikit_image(linear, x):
    from skimage.segmentation import slic

    weights, models = linear
    ex = run(models["function"], x, target=1, feature_mask="slic", segments=9)
    for i in range(3):
        img = (x[i] - x[i].min()) / (x[i].max() - x[i].min())
        labels = slic(img, n_segments=9, compactness=10.0, start_label=0, channel_axis=-1)
        np.testing.assert_array_equal(ex.meta["feature_mask"][i], labels)
    expected = group_contributions(weights, x, [1, 1, 1], np.asarray(ex.meta["feature_mask"]))
    for i in range(3):
        np.testing.assert_allclose(ex.meta["group_values"][i], expected[i], atol=1e-5)


def test_missing_scikit_image_says_how_to_install(linear, x, monkeypatch):
    model = linear[1]["function"]
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)
    with pytest.raises(ins.InnersightError, match=re.escape("pip install scikit-image")):
        run(model, x, feature_mask="slic")
    monkeypatch.undo()  # the advice: with scikit-image installed, the same call runs
    assert run(model, x, feature_mask="slic", segments=4).meta["mask"] == "slic (segments=4)"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"feature_mask": "superpixels"}, "feature_mask='superpixels' is unknown for images"),
        ({"feature_mask": "features"}, "use one of 'grid', 'slic', 'pixels'"),
        ({"feature_mask": np.zeros((12, 11), int)}, "expected (12, 12) (shared by the batch)"),
        ({"feature_mask": np.zeros((12, 12))}, "convert with mask.astype(int)"),
        ({"grid": 13}, "grid=(13, 13) has more cells than the 12x12 image has pixels"),
        ({"grid": 0}, "grid must be a positive int or a pair"),
        ({"baseline": "white"}, "baseline='white' is unknown"),
        ({"batch_size": 0}, "batch_size must be a positive int or 'auto'"),
    ],
)
def test_mistakes_say_what_to_do(linear, x, params, message):
    with pytest.raises(InputError, match=re.escape(message)):
        run(linear[1]["function"], x, **params)


def test_the_advice_of_the_mask_errors_works(linear, x):
    model = linear[1]["function"]
    float_mask = np.repeat(np.arange(4.0), 36).reshape(12, 12)
    ex = run(model, x, target=0, feature_mask=float_mask.astype(int))
    assert ex.meta["groups"] == [4, 4, 4]
    assert run(model, x, target=0, grid=(12, 12)).meta["groups"] == [144] * 3


def test_vectors_refuse_image_masks():
    model = FunctionModel(lambda v: v, input_shape=(5,))
    with pytest.raises(InputError, match=re.escape("feature_mask='grid' is unknown for vectors")):
        run(model, np.ones((2, 5), np.float32), feature_mask="grid")


def test_model_state_is_unchanged(torch_small, x):
    before = snapshot(torch_small)
    run(ins.wrap(torch_small), x, grid=3)
    assert diff(before, snapshot(torch_small)) == []


def test_presets_bound_the_report():
    model = FunctionModel(lambda v: v.reshape(len(v), -1), input_shape=(32, 32, 1))
    for profile in ("report", "quick"):
        ctx = PresetContext(profile, model, sample_shape=(32, 32, 1), num_classes=10)
        assert TECH.presets(ctx) == {"grid": 4}
    assert TECH.presets(PresetContext("full", model, sample_shape=(32, 32, 1))) == {}
    assert TECH.order == 62 and TECH.requires == frozenset({"forward"})


def test_passes_the_technique_conformance_checks(x):
    check_technique(TECH, reference_model("conv"), x, target=[0, 1, 2], grid=3, progress=False)


def test_the_module_registers_the_technique():
    from innersight.plugins import feature_ablation

    assert [type(t) for t in feature_ablation.innersight_register_techniques()] == [FeatureAblation]
