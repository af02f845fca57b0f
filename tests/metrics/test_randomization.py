"""Model and data randomization (Adebayo et al. 2018) on copies; the user's model untouched."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.api import evaluate
from innersight.core import (
    CapabilityError,
    Explanation,
    InputError,
    Technique,
    get_plugin_manager,
    hookimpl,
)
from innersight.testing import diff, reference_model, snapshot


class InputEdges(Technique):
    """A degenerate "explanation": the gradient magnitude of the input image, model-blind.
    Adebayo et al. show that edge detectors look like saliency maps yet pass nothing."""

    name = "input_edges"
    summary = "Edges of the input (ignores the model)."
    requires = frozenset({"forward"})

    def explain(self, model, inputs, *, target=None):
        gray = inputs.mean(axis=-1)
        gy, gx = np.gradient(gray, axis=(1, 2))
        return Explanation(self.name, "heatmap", np.hypot(gx, gy).astype(np.float32), inputs)


class _EdgePlugin:
    @hookimpl
    def innersight_register_techniques(self):
        yield InputEdges()


@pytest.fixture
def edges_technique():
    manager = get_plugin_manager()
    manager.register(_EdgePlugin(), "tests.input_edges")
    yield "input_edges"
    manager.unregister("tests.input_edges")


def test_saliency_on_a_randomised_torch_model_is_uncorrelated(digits_torch, digits):
    import torch

    x = digits.x_test[:6]
    before, rng = snapshot(digits_torch), torch.get_rng_state()
    ev = evaluate("randomization", digits_torch, "saliency", x)
    assert diff(before, snapshot(digits_torch)) == []  # only the copy was randomised
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random state too
    curve = ev.curves["spearman"]
    assert curve.ticks == ("original", "logits", "fc1", "conv3", "conv2", "conv1")
    np.testing.assert_array_equal(curve.y[:, 0], 1.0)
    np.testing.assert_array_equal(ev.scores, curve.y[:, -1])
    assert np.abs(ev.scores).max() < 0.3  # measured 0.08..0.19 on these digits
    assert ev.summary()["mean"] < curve.mean()[1]  # and it falls as layers go
    assert ev.meta["verdict"] == "the maps depend on the model's weights"
    again = evaluate("randomization", digits_torch, "saliency", x)
    np.testing.assert_array_equal(again.curves["ssim"].y, ev.curves["ssim"].y)  # seeded


def test_an_edge_detector_does_not_change_at_all(digits_torch, digits, edges_technique):
    ev = evaluate("randomization", digits_torch, edges_technique, digits.x_test[:4])
    np.testing.assert_allclose(ev.curves["spearman"].y, 1.0)
    np.testing.assert_allclose(ev.curves["ssim"].y, 1.0)
    assert "do not explain the model" in ev.meta["verdict"]


def test_keras_copy_is_randomised_and_the_model_left_alone(digits_keras, digits):
    x = digits.x_test[:4]
    before = snapshot(digits_keras)
    weights = [w.copy() for w in digits_keras.get_weights()]
    ev = evaluate("randomization", digits_keras, "saliency", x)
    assert diff(before, snapshot(digits_keras)) == []
    assert all(
        np.array_equal(a, b) for a, b in zip(weights, digits_keras.get_weights(), strict=True)
    )
    assert ev.curves["spearman"].ticks[1:] == ("logits", "fc1", "conv3", "conv2", "conv1")
    assert np.abs(ev.scores).max() < 0.4  # measured 0.20..0.30
    assert ev.meta["not_reinitialised"] == []


def test_torch_layers_get_their_own_reset_parameters_under_the_seed(digits_torch):
    import copy

    import torch

    from innersight.backends.torch.randomize import TorchRandomizer

    randomizer = TorchRandomizer(ins.wrap(digits_torch))
    assert randomizer.randomize("conv2", 11)
    reference = copy.deepcopy(digits_torch.get_submodule("conv2"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        reference.reset_parameters()
    got = randomizer.copy.get_submodule("conv2")
    assert torch.equal(got.weight, reference.weight) and torch.equal(got.bias, reference.bias)
    assert torch.equal(  # the other layers keep their trained weights
        randomizer.copy.get_submodule("conv1").weight, digits_torch.get_submodule("conv1").weight
    )


def test_keras_layers_are_drawn_from_their_initializers(digits_keras):
    from innersight.backends.keras.randomize import KerasRandomizer

    randomizer = KerasRandomizer(ins.wrap(digits_keras))
    assert randomizer.randomize("fc1", 3)
    kernel, bias = (np.asarray(v) for v in randomizer.copy.get_layer("fc1").weights)
    fan_in, fan_out = kernel.shape
    # glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)); bias: zeros
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.05 * limit
    np.testing.assert_array_equal(bias, 0.0)
    assert not np.allclose(kernel, digits_keras.get_layer("fc1").get_weights()[0])


def test_independent_mode_randomises_one_layer_at_a_time(digits_torch, digits):
    x = digits.x_test[:3]
    ex = ins.explain("saliency", digits_torch, x)
    cascade = evaluate("randomization", digits_torch, ex)
    alone = evaluate("randomization", digits_torch, ex, mode="independent")
    # the first step is the same model either way: only the logits layer re-initialised
    np.testing.assert_allclose(alone.curves["spearman"].y[:, 1], cascade.curves["spearman"].y[:, 1])
    np.testing.assert_allclose(alone.scores, alone.curves["spearman"].y[:, 1:].mean(axis=1))
    some = evaluate("randomization", digits_torch, ex, layers=["conv1", "logits"])
    assert some.curves["spearman"].ticks == ("original", "logits", "conv1")


def test_data_randomization_compares_with_the_given_model(digits_torch, digits):
    from innersight.backends.torch.randomize import TorchRandomizer

    x = digits.x_test[:3]
    ex = ins.explain("saliency", digits_torch, x)
    same = evaluate("data_randomization", digits_torch, ex, randomized_model=digits_torch)
    np.testing.assert_allclose(same.scores, 1.0)
    randomizer = TorchRandomizer(ins.wrap(digits_torch))
    for i, name in enumerate(randomizer.layers()):
        randomizer.randomize(name, i)
    other = evaluate("data_randomization", digits_torch, ex, randomized_model=randomizer.copy)
    cascade = evaluate("randomization", digits_torch, ex)
    np.testing.assert_allclose(other.scores, cascade.scores, rtol=1e-12)


def test_errors_say_what_to_do(digits_torch, digits):
    ex = ins.explain("saliency", digits_torch, digits.x_test[:2])
    with pytest.raises(InputError, match="pass randomized_model=that_model"):
        evaluate("data_randomization", digits_torch, ex)
    with pytest.raises(InputError, match=r"layers \['conv9'\] are not layers with weights.*conv1"):
        evaluate("randomization", digits_torch, ex, layers=["conv9"])
    adapter = reference_model("conv")
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    with pytest.raises(CapabilityError, match="use the data_randomization metric"):
        evaluate("randomization", adapter, "saliency", x)
    # the advice works: randomise a copy yourself and compare with data_randomization
    copy = reference_model("conv", seed=5)
    ev = evaluate("data_randomization", adapter, "saliency", x, randomized_model=copy)
    assert ev.scores.shape == (2,) and np.all(np.abs(ev.scores) < 1)


def test_a_keras_model_that_cannot_be_cloned_gets_the_data_randomization_advice(
    digits_keras, digits, monkeypatch
):
    import keras

    x = digits.x_test[:2]
    ex = ins.explain("saliency", digits_keras, x)

    def refuse(model, *args, **kwargs):
        raise ValueError("custom layer without get_config")

    monkeypatch.setattr(keras.models, "clone_model", refuse)
    with pytest.raises(
        CapabilityError, match="clone_model cannot copy.*use the data_randomization"
    ):
        evaluate("randomization", digits_keras, ex)
    monkeypatch.undo()
    from innersight.models import digits_cnn

    other = digits_cnn("keras")  # a copy the user made (here: the same weights)
    ev = evaluate("data_randomization", digits_keras, ex, randomized_model=other)
    np.testing.assert_allclose(ev.scores, 1.0)


def test_the_reruns_warnings_are_kept_in_meta_not_shown(digits_torch, digits):
    import warnings

    x = digits.x_test[:2]
    with pytest.warns(Warning, match="missed tolerance"):
        ex = ins.explain(
            "integrated_gradients", digits_torch, x, steps=4, max_steps=6, tolerance=1e-9
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning shown here would fail the test
        ev = evaluate("randomization", digits_torch, ex, layers=["logits", "fc1"])
    assert any("missed tolerance" in w for w in ev.meta["rerun_warnings"])
