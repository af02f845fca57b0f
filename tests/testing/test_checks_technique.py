"""Technique checks on small techniques written here: good ones pass, each broken one fails with
its own message."""

from __future__ import annotations

import numpy as np
import pytest

import innersight
from innersight.core import Explanation, Technique, hookimpl, objectives
from innersight.core.manager import get_plugin_manager
from innersight.testing import (
    ConformanceError,
    check_all_techniques,
    check_technique,
    reference_model,
)


class Saliency(Technique):
    name = "test_saliency"
    summary = "max |d logit / d x| over channels"
    requires = frozenset({"input_gradients"})

    def explain(self, model, inputs, *, target: int | None = None):
        target = model.predict_classes(inputs) if target is None else target
        _, grads = model.value_and_grad(inputs, objectives.Logit(target))
        return Explanation(self.name, "heatmap", np.abs(grads).max(-1), inputs, {"target": target})


class NoisySaliency(Technique):
    name = "test_noisy"
    summary = "SmoothGrad-like, seeded"
    requires = frozenset({"input_gradients"})

    def explain(self, model, inputs, *, samples: int = 3, seed: int | None = None):
        rng = np.random.default_rng(seed)
        total = np.zeros(inputs.shape, np.float32)
        for _ in range(samples):
            noisy = inputs + rng.normal(0, 0.1, inputs.shape).astype(np.float32)
            total += model.value_and_grad(noisy, objectives.Logit(0))[1]
        return Explanation(
            self.name, "heatmap", total.sum(-1), inputs, {"samples": samples, "seed": seed}
        )


class Activations(Technique):
    name = "test_activations"
    summary = "layer grid"
    requires = frozenset({"layer_taps"})

    def explain(self, model, inputs, *, layer: str):
        acts = model.forward(inputs, taps=[layer]).activations
        return Explanation(self.name, "layer_grid", {layer: acts[layer]}, inputs, {"layer": layer})


class Generator(Technique):
    name = "test_generator"
    summary = "makes its own images"
    requires = frozenset({"input_gradients"})
    needs_inputs = False

    def explain(self, model, inputs, *, steps: int = 3):
        x = np.full((2, *model.input_shape), 0.5, np.float32)
        for _ in range(steps):
            x = x + 0.1 * model.value_and_grad(x, objectives.Logit([0, 1]))[1]
        return Explanation(self.name, "image_set", x, None, {"steps": steps})


class NeedsWeights(Technique):
    name = "test_needs_weights"
    summary = "first-layer filters"
    requires = frozenset({"weights"})

    def explain(self, model, inputs):
        raise AssertionError("never run on the reference")


def _broken(name, explain):
    def run(self, model, inputs, *, seed: int = 0):
        return explain(self, model, inputs)

    return type(name, (Technique,), {"name": name, "summary": name, "explain": run})()


def _unseeded(self, model, inputs):
    return Explanation(self.name, "heatmap", np.random.random(inputs.shape[:3]), inputs)


def _mutates(self, model, inputs):
    inputs *= 2
    return Explanation(self.name, "heatmap", inputs.sum(-1), None)


def _one_for_all(self, model, inputs):
    return Explanation(self.name, "heatmap", inputs[:1].sum(-1), inputs)


def _weird_kind(self, model, inputs):
    return Explanation(self.name, "hologram", inputs.sum(-1), inputs)


def _crashes(self, model, inputs):
    return model.forward(inputs, taps=["conv9"])


def _touches_model(self, model, inputs):
    model.network.layers[0].scratch = 1
    return Explanation(self.name, "heatmap", inputs.sum(-1), inputs)


def _wrong_name(self, model, inputs):
    return Explanation("something_else", "heatmap", inputs.sum(-1), inputs)


def _object_values(self, model, inputs):
    return Explanation(
        self.name, "heatmap", np.array([{"a": 1}] * len(inputs), dtype=object), inputs
    )


def _other_inputs(self, model, inputs):
    return Explanation(self.name, "heatmap", inputs.sum(-1), inputs + 1)


BROKEN = {
    "t_unseeded": (_unseeded, "is not deterministic: values\\['values'\\] differ between two runs"),
    "t_mutates": (_mutates, "mutated its inputs in place \\(1296 entries changed\\)"),
    "t_one_for_all": (
        _one_for_all,
        "raised PluginError: technique 't_one_for_all' .* returned 1 results for 3",
    ),
    "t_weird_kind": (_weird_kind, "Explanation.kind 'hologram' has no renderer"),
    "t_crashes": (_crashes, "raised LayerNotFoundError: layer 'conv9' not found"),
    "t_touches_model": (
        _touches_model,
        "left the model changed:\n  layer 'conv1': __dict__ keys: added \\['scratch'\\]",
    ),
    "t_wrong_name": (
        _wrong_name,
        "Explanation.technique is 'something_else', expected 't_wrong_name'",
    ),
    "t_object_values": (
        _object_values,
        "raised PluginError: technique 't_object_values' .* returned values of dtype object",
    ),
    "t_other_inputs": (_other_inputs, "Explanation.inputs \\(vs. the inputs given\\) differs"),
}


MINE = ["test_saliency", "test_activations", "test_needs_weights", "t_mutates"]


@pytest.fixture(scope="module")
def ref():
    return reference_model()


def test_good_techniques_pass(ref):
    check_technique(Saliency(), ref, None, target=1)
    check_technique(Saliency())  # defaults: the reference model and noise inputs
    check_technique(NoisySaliency(), ref)  # seed=0 is added for it
    check_technique(Activations(), ref, None, layer="pool1")
    check_technique(Generator(), ref)


def test_temporary_registration_is_undone():
    check_technique(Saliency())
    assert "test_saliency" not in innersight.techniques()


@pytest.mark.parametrize("name", BROKEN)
def test_broken_techniques_fail(ref, name):
    explain, message = BROKEN[name]
    with pytest.raises(ConformanceError, match=f"check_technique\\('{name}'\\): {message}"):
        check_technique(_broken(name, explain), ref)


def test_missing_capability_fails():
    with pytest.raises(
        ConformanceError,
        match=r"check_technique\('test_needs_weights'\): technique 'test_needs_weights' needs "
        "weights, which the numpy adapter for reference_conv does not provide",
    ):
        check_technique(NeedsWeights())


def test_a_name_clash_fails():
    class Plugin:
        @hookimpl
        def innersight_register_techniques(self):
            return [Saliency()]

    manager = get_plugin_manager()
    manager.register(Plugin(), "clash")
    try:
        check_technique("test_saliency")  # by name: the registered one
        check_technique(Saliency())  # an instance of the same class: fine
        impostor = _broken("test_saliency", _unseeded)
        with pytest.raises(
            ConformanceError, match="another technique \\(Saliency\\) is registered"
        ):
            check_technique(impostor)
    finally:
        manager.unregister("clash")


def test_check_all_techniques_reports_passed_skipped_and_failed(ref):
    class Plugin:
        @hookimpl
        def innersight_register_techniques(self):
            return [Saliency(), Activations(), NeedsWeights(), _broken("t_mutates", _mutates)]

    manager = get_plugin_manager()
    manager.register(Plugin(), "several")
    try:
        with pytest.raises(ConformanceError) as info:
            check_all_techniques(ref, names=MINE)
        text = str(info.value)
        assert "- check_technique('t_mutates'): mutated its inputs" in text
        assert "test_needs_weights: skipped: the adapter lacks weights" in text
        assert "test_saliency: passed" in text and "test_activations: passed" in text
    finally:
        manager.unregister("several")


def test_check_all_techniques_returns_the_report(ref):
    class Plugin:
        @hookimpl
        def innersight_register_techniques(self):
            return [Saliency(), NeedsWeights(), Activations()]

    manager = get_plugin_manager()
    manager.register(Plugin(), "good")
    try:
        report = check_all_techniques(
            ref, params={"test_activations": {"layer": "relu1"}}, names=MINE[:3]
        )
    finally:
        manager.unregister("good")
    assert report["test_saliency"] == "passed" and report["test_activations"] == "passed"
    assert report == {
        "test_activations": "passed",
        "test_needs_weights": "skipped: the adapter lacks weights",
        "test_saliency": "passed",
    }
    with pytest.raises(ConformanceError, match="no registered technique named 'nope'"):
        check_all_techniques(ref, names=["nope"])
