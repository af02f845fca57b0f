"""Common parameters (progress, seed): every registered technique accepts them, the same way.

A loop that passes ``progress=False`` and ``seed=0`` to every technique must run silently (it
used to fail on saliency: "has no parameter 'progress'"); ``parameters()`` lists both for every
technique; a technique that declares ``seed`` gets the value, one that does not never sees it.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

import innersight as ins
from innersight.core import (
    COMMON_PARAMETERS,
    Explanation,
    PresetContext,
    Technique,
    shaped_layers,
)

TECHNIQUES = sorted(ins.techniques())
#: The built-ins that take ``seed`` and record the seed they ran with in ``meta["seed"]``.
SEEDED = ("class_maximization", "embeddings", "filter_maximization", "smoothgrad")


@pytest.fixture(scope="module")
def setup(torch_small):
    """The small torch conv net (no declared input shape: explain must probe it), four images
    and the quick preset context the report builds for it."""
    adapter = ins.wrap(torch_small)
    x = np.random.default_rng(1).random((4, 12, 12, 3), dtype=np.float32)
    layers = shaped_layers(adapter, x[:1])
    ctx = PresetContext(
        "quick",
        adapter,
        tuple(layers),
        sample_shape=x.shape[1:],
        num_classes=int(adapter.forward(x[:1]).outputs.shape[-1]),
        labels=np.array([0, 1, 2, 0]),
    )
    return torch_small, x, ctx


def quick(name: str, ctx: PresetContext) -> dict[str, Any]:
    tech = ins.techniques()[name]
    return {k: v for k, v in tech.presets(ctx).items() if v is not None}


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_technique_takes_progress_false_and_seed_and_is_silent(name, setup, capfd):
    model, x, ctx = setup
    tech = ins.techniques()[name]
    if tech.missing_capabilities(ins.wrap(model)):
        pytest.skip(f"{name} needs {tech.missing_capabilities(ins.wrap(model))}")
    ex = ins.explain(name, model, x, **quick(name, ctx), progress=False, seed=0)
    assert isinstance(ex, Explanation) and ex.technique == name
    assert capfd.readouterr() == ("", "")
    if name in SEEDED:
        assert ex.meta["seed"] == 0


@pytest.mark.parametrize("name", TECHNIQUES)
def test_parameters_lists_the_common_ones(name):
    params = ins.techniques()[name].parameters()
    for common in COMMON_PARAMETERS:
        assert common in params, f"{name}.parameters() lacks {common!r}: {list(params)}"
        assert params[common].kind is inspect.Parameter.KEYWORD_ONLY


def test_common_parameters_come_after_the_techniques_own_with_the_shared_defaults():
    saliency = ins.techniques()["saliency"].parameters()
    assert list(saliency) == ["target", "reduce_channels", "progress", "seed"]
    assert saliency["progress"].default is None and saliency["seed"].default == 0
    # a technique that declares one keeps its own place and default
    smoothgrad = ins.techniques()["smoothgrad"].parameters()
    assert list(smoothgrad).index("seed") < list(smoothgrad).index("magnitude")
    assert smoothgrad["progress"].default is None


@pytest.mark.parametrize("name", SEEDED)
def test_a_technique_that_declares_seed_gets_it(name, setup):
    model, x, ctx = setup
    params = quick(name, ctx)
    if name == "smoothgrad":
        params["samples"] = 3
    a = ins.explain(name, model, x, **params, progress=False, seed=7)
    b = ins.explain(name, model, x, **params, progress=False, seed=7)
    c = ins.explain(name, model, x, **params, progress=False, seed=8)
    assert a.meta["seed"] == 7 and c.meta["seed"] == 8
    assert a.params["seed"] == 7 and c.params["seed"] == 8
    np.testing.assert_array_equal(a.values, b.values)
    if name != "embeddings":  # its PCA of 4 points is exact: the seed changes nothing there
        assert not np.array_equal(a.values, c.values)


class _Spy(Technique):
    """Records what ``explain`` received."""

    name = "spy"
    received: dict[str, Any]

    def explain(self, model, inputs, *, target=None, seed=3):  # type: ignore[override]
        self.received = {"target": target, "seed": seed}
        return Explanation(self.name, "heatmap", np.zeros(inputs.shape[:3]), inputs)


class _Plain(Technique):
    name = "plain"

    def explain(self, model, inputs, *, target=None):  # type: ignore[override]
        return Explanation(self.name, "heatmap", np.full(inputs.shape[:3], target), inputs)


def test_run_passes_declared_common_parameters_and_drops_the_others(setup):
    model, x, _ = setup
    spy = _Spy()
    spy.run(ins.wrap(model), x, target=1, seed=11, progress=False)
    assert spy.received == {"target": 1, "seed": 11}
    assert list(spy.parameters()) == ["target", "seed", "progress"]
    plain = _Plain().run(ins.wrap(model), x, target=2, seed=11, progress=False)
    assert np.all(plain.values == 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        _Plain().explain(ins.wrap(model), x, seed=1)  # explain itself is the plugin's own
