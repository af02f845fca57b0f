"""Score-CAM's batching and scoring: one forward per chunk under the memory budget, never one
per channel; the channels it scores; what scores a masked input.

The adapter is wrapped in a proxy that records every ``forward`` (batch size and taps): the
masked inputs are the forwards that tap only the logits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import innersight as ins
from innersight.core import (
    LOGITS,
    BatchPlanner,
    LayerNotFoundError,
    PresetContext,
    bytes_per_sample,
)
from innersight.plugins.score_cam import ScoreCAM, top_channels
from tests.plugins.test_cam_family import recipe_cam, rel_err

torch = pytest.importorskip("torch")


class Recording:
    """An adapter that records its forwards; ``no_logits`` refuses the LOGITS tap as a
    backend that does not serve it would."""

    def __init__(self, inner, no_logits: bool = False) -> None:
        self._inner, self.no_logits, self.calls = inner, no_logits, []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def forward(self, x, *, taps=()):
        taps = tuple(taps)
        if self.no_logits and LOGITS in taps:
            raise LayerNotFoundError(f"layer {LOGITS!r} not found in this test adapter")
        self.calls.append((len(x), taps))
        return self._inner.forward(x, taps=taps)

    def masked(self) -> list[int]:
        """Batch sizes of the forwards that scored masked inputs."""
        return [n for n, taps in self.calls if taps in ((LOGITS,), ())]


def score_cam(model, x, **params):
    params.setdefault("progress", False)
    return ScoreCAM().run(model, x, **params)


@pytest.fixture(autouse=True)
def fresh_planner():
    BatchPlanner.clear_cache()  # "auto" remembers chunk sizes per model and input shape
    yield
    BatchPlanner.clear_cache()


def test_one_forward_per_chunk_never_one_per_channel(torch_small, images):
    """4 inputs x 6 channels = 24 masked inputs: 5 forwards of at most 5 with batch_size=5,
    one forward of all 24 (masks of every input together) with batch_size=64."""
    model = Recording(ins.wrap(torch_small))
    five = score_cam(model, images, layer="relu2", target=1, batch_size=5)
    assert model.masked() == [5, 5, 5, 5, 4]
    assert (five.meta["forwards"], five.meta["batch_size"], five.meta["masked_inputs"]) == (
        5,
        5,
        24,
    )
    assert model.calls[0] == (4, ("relu2", LOGITS))  # activations and unmasked scores: one pass
    model.calls.clear()
    whole = score_cam(model, images, layer="relu2", target=1, batch_size=64)
    assert model.masked() == [24] and whole.meta["forwards"] == 1
    single = score_cam(model, images, layer="relu2", target=1, batch_size=1)
    assert single.meta["forwards"] == 24
    for other in (whole, single):
        np.testing.assert_allclose(other.values, five.values, rtol=1e-5, atol=1e-7)


def test_auto_chunks_stay_under_the_memory_budget(torch_small, images, monkeypatch):
    adapter = ins.wrap(torch_small)
    shapes = [info.output_shape for info in ins.core.shaped_layers(adapter, images[:1])]
    monkeypatch.setenv("INNERSIGHT_MEMORY_BUDGET", str(3 * bytes_per_sample((12, 12, 3), shapes)))
    model = Recording(adapter)
    ex = score_cam(model, images, layer="relu1", target=0)  # 4 x 4 channels
    assert sum(model.masked()) == ex.meta["masked_inputs"] == 16
    assert max(model.masked()) <= 3
    assert ex.meta["forwards"] == len(model.masked()) >= math.ceil(16 / 3)


def test_max_channels_scores_the_channels_that_vary_most(digits_torch, digits):
    """relu3 has 64 channels; max_channels=8 scores the 8 with the largest map variance per
    input, with the scores the full run gives them, softmax over those 8."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    adapter = ins.wrap(digits_torch)
    full = score_cam(adapter, x, layer="relu3", target=y)
    some = score_cam(adapter, x, layer="relu3", target=y, max_channels=8)
    acts = adapter.forward(x, taps=["relu3"]).activations["relu3"].astype(np.float64)
    spread = acts.reshape(3, -1, 64).var(axis=1)
    expected = np.sort(np.argsort(-spread, axis=1)[:, :8], axis=1)
    np.testing.assert_array_equal(some.meta["channels"], expected)
    np.testing.assert_array_equal(top_channels(acts, 8), expected)
    assert some.meta["masked_inputs"] == 24 and full.meta["masked_inputs"] == 192
    scores = np.take_along_axis(np.array(full.meta["channel_scores"]), expected, axis=1)
    np.testing.assert_allclose(some.meta["channel_scores"], scores, rtol=1e-5)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    chosen = np.take_along_axis(acts, expected[:, None, None, :], axis=3)
    cam = np.maximum(np.einsum("nhwk,nk->nhw", chosen, weights), 0)
    np.testing.assert_allclose(some.meta["cam"], cam, rtol=1e-5, atol=1e-7)
    unscored = np.ones((3, 64), bool)
    np.put_along_axis(unscored, expected, False, axis=1)
    assert not np.array(some.meta["weights"])[unscored].any()


def test_an_adapter_without_the_logits_tap_is_scored_on_its_outputs(torch_small, images):
    plain = score_cam(ins.wrap(torch_small), images, layer="relu1", target=2)
    model = Recording(ins.wrap(torch_small), no_logits=True)
    ex = score_cam(model, images, layer="relu1", target=2)
    assert ex.meta["score_source"] == "the outputs (the adapter serves no logits tap)"
    assert plain.meta["score_source"] == "the logits tap"
    assert model.calls[0] == (4, ("relu1",))  # the activations, after LOGITS was refused
    assert len(model.calls) > 1 and all(taps == () for _, taps in model.calls[1:])
    np.testing.assert_allclose(ex.values, plain.values, rtol=1e-6)


def test_probability_is_the_recipe_on_the_model_with_a_softmax(torch_small, images):
    """pytorch-grad-cam scores the model's raw outputs: on the net followed by a Softmax,
    that is ``score="probability"`` (measured 1.2e-7)."""
    with_softmax = torch.nn.Sequential(torch_small, torch.nn.Softmax(dim=1)).eval()
    targets = [0, 1, 2, 0]
    ref = recipe_cam("score_cam", with_softmax, torch_small.relu1, images, targets)
    ex = score_cam(
        ins.wrap(torch_small), images, layer="relu1", target=targets, score="probability"
    )
    assert ex.meta["score_source"] == "softmax over the classes of the logits tap"
    assert rel_err(ex.meta["cam"], ref) <= 1e-5
    logit = score_cam(ins.wrap(torch_small), images, layer="relu1", target=targets)
    assert rel_err(logit.meta["cam"], ref) > 1e-2  # a different weighting


def test_a_keras_softmax_head_is_scored_on_its_logit(small_weights, images):
    """``score="logit"`` reads the input of the final softmax, as every Logit objective does."""
    pytest.importorskip("keras")
    from tests.models import keras_small

    soft = score_cam(ins.wrap(keras_small(small_weights, softmax=True)), images, target=1)
    bare = score_cam(ins.wrap(keras_small(small_weights)), images, target=1)
    np.testing.assert_allclose(soft.meta["channel_scores"], bare.meta["channel_scores"], rtol=1e-5)
    np.testing.assert_allclose(soft.values, bare.values, rtol=1e-5, atol=1e-7)


def test_a_target_out_of_range_fails_before_any_masked_forward(torch_small, images):
    model = Recording(ins.wrap(torch_small))
    with pytest.raises(ins.ObjectiveError, match="target"):
        score_cam(model, images, layer="relu2", target=7)
    assert model.masked() == []


@pytest.mark.parametrize(("profile", "channels"), [("report", 32), ("quick", 16), ("full", 256)])
def test_presets_bound_the_channels(digits_torch, digits, profile, channels):
    adapter = ins.wrap(digits_torch)
    preset = ScoreCAM().presets(PresetContext(profile, adapter))
    assert preset == {"max_channels": channels}
    if profile == "quick":
        x = digits.x_test[:2]
        ex = score_cam(adapter, x, **preset)
        assert ex.meta["layer"] == "pool3" and ex.meta["masked_inputs"] == 2 * 16
