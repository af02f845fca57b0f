"""deeplift_shap: Captum's DeepLiftShap on the same torch models, inputs and baseline
distribution; the mean of DeepLift over the baselines (a second computation); summation to
``score(x) - mean score(b)``; the Keras twin; single baselines as DeepLift.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import InputError
from innersight.plugins import deeplift, deeplift_shap
from tests import models
from tests.plugins._deeplift_models import captum, convnet, keras_mlp, mlp, rel_error, with_clones

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Both modules through the plugin manager's public API, until BUILTIN_PLUGINS lists them."""
    manager = ins.get_plugin_manager()
    added = []
    for module in (deeplift, deeplift_shap):
        if module.__name__ not in manager.infos:
            manager.register(module, module.__name__, distribution="innersight")
            added.append(module.__name__)
    yield
    for name in added:
        manager.unregister(name)


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 12, 12, 3)).astype(np.float32)
    return x, (0.5 * rng.standard_normal((3, 12, 12, 3))).astype(np.float32)


@pytest.mark.parametrize("multiply", [True, False])
def test_mlp_matches_captum(multiply):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    dist = rng.standard_normal((5, 6)).astype(np.float32)
    net = mlp("relu")
    ex = ins.explain(
        "deeplift_shap", net, x, baseline=dist, target=TARGETS, multiply_by_inputs=multiply
    )
    ref, delta = captum("deeplift_shap", net, x, dist, TARGETS, multiply_by_inputs=multiply)
    assert rel_error(ex.values, ref) <= 1e-5
    if multiply:  # Captum: one delta per (input, baseline) pair; ours is their mean
        ours = [c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]]
        np.testing.assert_allclose(ours, delta.reshape(4, 5).mean(axis=1), atol=1e-5)


@pytest.mark.parametrize("net", ["maxpool", "small"])
def test_convnets_match_captum(net, images, small_weights):
    x, dist = images
    model = convnet("max") if net == "maxpool" else models.torch_small(small_weights)
    ex = ins.explain("deeplift_shap", model, x, baseline=dist, target=TARGETS)
    reference_model = model if net == "maxpool" else with_clones(model)  # captum #1104
    ref, _ = captum("deeplift_shap", reference_model, x, dist, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5
    assert ex.meta["baselines"] == 3


def test_mean_of_deeplift_over_the_baselines(images, small_weights):
    x, dist = images
    net = models.torch_small(small_weights)
    shap = ins.explain("deeplift_shap", net, x, baseline=dist, target=TARGETS)
    each = [
        ins.explain("deeplift", net, x, baseline=np.broadcast_to(b, x.shape), target=TARGETS)
        for b in dist
    ]
    assert rel_error(shap.values, np.mean([e.values for e in each], axis=0)) <= 1e-6
    diffs = np.mean([e.meta["score_diff"] for e in each], axis=0)
    np.testing.assert_allclose(shap.meta["score_diff"], diffs, rtol=1e-6, atol=1e-7)


def test_summation_to_the_mean_delta_on_a_relu_net(images):
    x, dist = images
    ex = ins.explain("deeplift_shap", convnet("avg"), x, baseline=dist, target=TARGETS)
    for c in ex.meta["completeness"]:
        assert abs(c["sum_attr"] - c["score_diff"]) <= 1e-5 * max(1.0, abs(c["score_diff"]))


def test_keras_twin(images, small_weights):
    x, dist = images
    torch_ex = ins.explain(
        "deeplift_shap", models.torch_small(small_weights), x, baseline=dist, target=TARGETS
    )
    keras_ex = ins.explain(
        "deeplift_shap", models.keras_small(small_weights), x, baseline=dist, target=TARGETS
    )
    assert rel_error(keras_ex.values, torch_ex.values) <= 1e-5


def test_keras_mlp_matches_captum():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    dist = rng.standard_normal((3, 6)).astype(np.float32)
    net = mlp("tanh")
    ex = ins.explain("deeplift_shap", keras_mlp(net, "tanh"), x, baseline=dist, target=TARGETS)
    ref, _ = captum("deeplift_shap", net, x, dist, TARGETS)
    assert rel_error(ex.values, ref) <= 1e-5


def test_single_baseline_is_deeplift(images, small_weights):
    x, _ = images
    net = models.torch_small(small_weights)
    shap = ins.explain("deeplift_shap", net, x, baseline="blur", target=TARGETS)
    lift = ins.explain("deeplift", net, x, baseline="blur", target=TARGETS)
    np.testing.assert_array_equal(shap.values, lift.values)
    assert shap.meta["baselines"] == 1


def test_distribution_of_the_wrong_shape_is_refused(images, small_weights):
    x, _ = images
    with pytest.raises(InputError, match=r"\(B, 12, 12, 3\)"):
        ins.explain(
            "deeplift_shap",
            models.torch_small(small_weights),
            x,
            baseline=np.zeros((3, 10, 10, 3), np.float32),
        )


@pytest.mark.parametrize("technique", [deeplift.DeepLift(), deeplift_shap.DeepLiftShap()])
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_technique_contract(technique, backend, small_weights, images):
    """The shipped conformance check: determinism, save/load, rendering, state unchanged."""
    from innersight.testing import check_technique

    x, dist = images
    model = (models.torch_small if backend == "torch" else models.keras_small)(small_weights)
    baseline = dist if technique.name == "deeplift_shap" else dist[0]
    check_technique(technique, ins.wrap(model), x[:2], baseline=baseline, target=0)
