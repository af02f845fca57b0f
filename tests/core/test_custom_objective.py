"""objectives.Custom: a score of the user's own, on the scores Logit reads, on every backend.

Numbers, not shapes: a difference of two logits must give exactly the difference of the two
Logit gradients; a softmax head must be read before the softmax; a segmentation-style output
must be summed under a mask channels-last.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import ObjectiveError, objectives

torch = pytest.importorskip("torch")


def _convnet(softmax: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
    ]
    return torch.nn.Sequential(*layers, *([torch.nn.Softmax(-1)] if softmax else [])).eval()


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)


def test_numpy_specification_applies_fn_to_the_scores() -> None:
    scores = np.arange(12, dtype=np.float64).reshape(3, 4)
    spec = objectives.evaluate(objectives.Custom(lambda s: s[:, 3] - s[:, 1]), scores, {})
    np.testing.assert_array_equal(spec, [2.0, 2.0, 2.0])


@pytest.mark.parametrize("softmax", [False, True])
def test_torch_difference_of_logits_equals_difference_of_logit_gradients(softmax, x) -> None:
    plain = ins.wrap(_convnet())
    model = ins.wrap(_convnet(softmax))
    v, g = model.value_and_grad(x, objectives.Custom(lambda s: s[:, 3] - s[:, 1]))
    v3, g3 = plain.value_and_grad(x, objectives.Logit(3))
    v1, g1 = plain.value_and_grad(x, objectives.Logit(1))
    np.testing.assert_allclose(v, v3 - v1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, g3 - g1, rtol=1e-5, atol=1e-7)


def test_torch_segmentation_output_is_channels_last_under_a_mask(x) -> None:
    torch.manual_seed(1)
    seg = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1)).eval()
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[2:5, 3:7] = 1.0
    mask_t = torch.as_tensor(mask)
    custom = objectives.Custom(lambda s: (s[..., 1] * mask_t).sum(dim=(1, 2)), name="class 1")
    values, grads = ins.wrap(seg).value_and_grad(x, custom)
    out = seg(torch.as_tensor(x).permute(0, 3, 1, 2)).detach().numpy()  # (N, 2, H, W)
    np.testing.assert_allclose(values, (out[:, 1] * mask).sum(axis=(1, 2)), rtol=1e-5)
    # the score is linear in the conv output: the input gradient is the transposed conv of the
    # mask, the same for every sample
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_layer_gradients_take_a_custom_objective(x) -> None:
    model = ins.wrap(_convnet())
    custom = objectives.Custom(lambda s: s[:, 3] - s[:, 1])
    _, acts, g = model.layer_value_and_grad(x, custom, "1")
    _, _, g3 = model.layer_value_and_grad(x, objectives.Logit(3), "1")
    _, _, g1 = model.layer_value_and_grad(x, objectives.Logit(1), "1")
    assert acts.shape == (3, 6, 6, 4)
    np.testing.assert_allclose(g, g3 - g1, rtol=1e-5, atol=1e-7)


def test_wrong_shape_and_untraceable_results_are_explained(x) -> None:
    model = ins.wrap(_convnet())
    with pytest.raises(ObjectiveError, match=r"returned shape \(3, 5\) for 3 samples.*\(N,\)"):
        model.value_and_grad(x, objectives.Custom(lambda s: s))
    with pytest.raises(ObjectiveError, match="must return a torch tensor"):
        model.value_and_grad(x, objectives.Custom(lambda s: s.detach().numpy()[:, 0]))
    # the advice works: reduce to one value per sample
    values, _ = model.value_and_grad(x, objectives.Custom(lambda s: s.sum(dim=1)))
    assert values.shape == (3,)


def test_keras_difference_of_logits_read_before_the_softmax(x) -> None:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    adapter = ins.wrap(model)
    margin = objectives.Custom(lambda s: s[:, 3] - s[:, 1])
    v, g = adapter.value_and_grad(x, margin)
    v3, g3 = adapter.value_and_grad(x, objectives.Logit(3))
    v1, g1 = adapter.value_and_grad(x, objectives.Logit(1))
    np.testing.assert_allclose(v, v3 - v1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, g3 - g1, rtol=1e-4, atol=1e-7)
    saliency = ins.explain("saliency", model, x, target=lambda s: s[:, 3] - s[:, 1])
    np.testing.assert_allclose(saliency.values, np.abs(g3 - g1).max(-1), rtol=1e-4, atol=1e-7)
    with pytest.raises(ObjectiveError, match=r"returned shape \(3, 5\) for 3 samples"):
        adapter.value_and_grad(x, objectives.Custom(lambda s: s))
