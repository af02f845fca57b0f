"""Occlusion's score on softmax heads (the logit that gradient techniques explain, read from the
LOGITS tap) and its window edges (``edges="truncate"`` is Captum's ``Occlusion``, exactly).

Every map is checked against a second computation: a brute-force loop that scores each occluded
image with a twin of the model that has no final softmax, or ``captum.attr.Occlusion``.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.core import LOGITS, ForwardResult, InnersightWarning, LayerNotFoundError
from innersight.plugins._windows import window_corners
from innersight.testing import ReferenceAdapter

torch = pytest.importorskip("torch")

SHAPE = (12, 12, 3)


def explain(model, x, **params):
    params.setdefault("progress", False)
    return ins.explain("occlusion", model, x, **params)


def corners(size: int, window: int, stride: int, edges: str = "aligned") -> list[int]:
    """Written out: regular corners, then the far edge (aligned) or one more stride (truncate)."""
    out, corner = [], 0
    while corner + window <= size:
        out.append(corner)
        corner += stride
    if out[-1] + window < size:
        out.append(size - window if edges == "aligned" else out[-1] + stride)
    return out


def brute_force(score_fn, x, targets, window, stride, *, edges="aligned", baseline=0.0):
    """One scoring call per occluded image; per-pixel mean of the drops of covering windows.

    ``score_fn(batch)`` returns (N, K) float64 scores; windows past the edge are cut there.
    """
    n, h, w, _ = x.shape
    (wh, ww), (sh, sw) = window, stride
    sums, counts = np.zeros((n, h, w)), np.zeros((n, h, w))
    for i in range(n):
        s0 = score_fn(x[i : i + 1])[0, targets[i]]
        for r in corners(h, wh, sh, edges):
            for c in corners(w, ww, sw, edges):
                occluded = x[i].copy()
                occluded[r : r + wh, c : c + ww] = baseline
                drop = s0 - score_fn(occluded[None])[0, targets[i]]
                for p in range(r, min(r + wh, h)):
                    for q in range(c, min(c + ww, w)):
                        sums[i, p, q] += drop
                        counts[i, p, q] += 1
    return sums / counts


# -- score="logit" on softmax heads ---------------------------------------------------------------
def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def torch_softmax_head(seed=0):
    """conv -> relu -> flatten -> linear -> nn.Softmax, with large logits (a saturated softmax),
    and its twin without the Softmax (the same modules)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 10 * 10, 3),
        torch.nn.Softmax(dim=1),
    )
    with torch.no_grad():
        net[3].weight.mul_(40.0)
    return net, torch.nn.Sequential(*list(net)[:-1])


def keras_softmax_head(seed=0):
    """The Keras form: Conv2D(relu) -> Flatten -> Dense(softmax), and its twin whose Dense has
    the same kernel and bias and no activation."""
    import keras

    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32) * 0.5
    dense = rng.standard_normal((4 * 10 * 10, 3)).astype(np.float32) * 2.0

    def build(activation):
        inp = keras.Input(SHAPE)
        h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
        h = keras.layers.Flatten(name="flatten")(h)
        out = keras.layers.Dense(3, activation=activation, name="fc")(h)
        model = keras.Model(inp, out)
        model.get_layer("conv").set_weights([kernel, np.zeros(4, np.float32)])
        model.get_layer("fc").set_weights([dense, np.zeros(3, np.float32)])
        return model

    return build("softmax"), build(None)


def _torch_scores(net):
    dtype = next(net.parameters()).dtype

    def score(batch):
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
            return net(t.to(dtype)).double().numpy()

    return score


def _keras_scores(model):
    return lambda batch: np.asarray(model(batch, training=False), dtype=np.float64)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_logit_score_on_a_softmax_head_is_the_pre_softmax_logit(backend):
    if backend == "torch":
        model, twin = torch_softmax_head()
        logits_of = _torch_scores(twin)
    else:
        pytest.importorskip("keras")
        model, twin = keras_softmax_head()
        logits_of = _keras_scores(twin)
    x = np.random.default_rng(3).random((3, *SHAPE), dtype=np.float32)
    targets = [0, 1, 2]
    ex = explain(model, x, window=5, stride=4, target=targets)

    expected = brute_force(logits_of, x, targets, (5, 5), (4, 4))
    scale = np.abs(expected).max()
    assert scale > 2.0  # logit drops of several units ...
    probs = explain(model, x, window=5, stride=4, target=targets, score="probability")
    assert np.abs(probs.values).max() < 0.5 * scale  # ... that a saturated softmax flattens
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(
        ex.meta["score"], logits_of(x)[np.arange(3), targets], rtol=1e-5, atol=1e-5
    )
    assert ex.meta["score_source"].startswith("logits (the pre-activation of the model's final")


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_probability_score_on_a_softmax_head_stays_the_outputs(backend):
    if backend == "torch":
        model, _ = torch_softmax_head(seed=1)
        probs_of = _torch_scores(model)
    else:
        pytest.importorskip("keras")
        model, _ = keras_softmax_head(seed=1)
        probs_of = _keras_scores(model)
    x = np.random.default_rng(4).random((2, *SHAPE), dtype=np.float32)
    ex = explain(model, x, window=6, stride=3, target=[2, 0], score="probability")
    assert ex.meta["score_source"].startswith("outputs used as they are (already probabilities")
    expected = brute_force(probs_of, x, [2, 0], (6, 6), (3, 3))
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6)


class _ProbabilitiesNoTap(ReferenceAdapter):
    """An adapter as a third party may write it: softmax outputs, no LOGITS tap."""

    def forward(self, x, *, taps=()):
        taps = list(taps)
        if LOGITS in taps:
            raise LayerNotFoundError(f"layer {LOGITS!r} not found in numpy model {self.name}")
        result = super().forward(x, taps=taps)
        probs = _softmax(result.outputs.astype(np.float64)).astype(np.float32)
        return ForwardResult(outputs=probs, activations=result.activations)


def test_an_adapter_without_the_logits_tap_is_scored_on_its_outputs(small_weights, images):
    plain = ReferenceAdapter.from_weights(small_weights)
    model = _ProbabilitiesNoTap(plain.network)
    with pytest.warns(InnersightWarning, match=r"score='logit' on numpy model .* measures"):
        ex = explain(model, images, window=5, stride=4, target=1, batch_size=8)
    assert ex.meta["score_source"] == (
        "outputs (they look like probabilities: the model ends in a softmax; "
        "the adapter serves no logits tap)"
    )
    expected = brute_force(
        lambda b: _softmax(plain.forward(b).outputs.astype(np.float64)),
        images,
        [1] * 4,
        (5, 5),
        (4, 4),
    )
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 1e-3
    # the warning's advice: score='probability' says so on purpose, same map, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        on_purpose = explain(
            model, images, window=5, stride=4, target=1, score="probability", batch_size=8
        )
    np.testing.assert_allclose(on_purpose.values, ex.values, rtol=0, atol=1e-7)
    # the calls refused for want of the tap are not counted: 1 for the 4 originals, 36 windows
    # in chunks of 8
    assert ex.meta["forwards"] == on_purpose.meta["forwards"] == 6


class _ProbabilitiesWithTap(ReferenceAdapter):
    """Softmax outputs, and a LOGITS tap serving the pre-softmax scores (as the torch and Keras
    adapters do for a final softmax): occlusion must read the tap, whatever the backend."""

    def forward(self, x, *, taps=()):
        taps = list(taps)
        result = super().forward(x, taps=[t for t in taps if t != LOGITS])
        acts = dict(result.activations)
        if LOGITS in taps:
            acts[LOGITS] = result.outputs
        probs = _softmax(result.outputs.astype(np.float64)).astype(np.float32)
        return ForwardResult(outputs=probs, activations=acts)


def test_the_logits_tap_is_read_where_an_adapter_serves_it(small_weights, images):
    plain = ReferenceAdapter.from_weights(small_weights)
    model = _ProbabilitiesWithTap(plain.network)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        ex = explain(model, images, window=(5, 3), stride=(4, 2), target=[0, 2, 1, 0])
    expected = brute_force(
        lambda b: plain.forward(b).outputs.astype(np.float64),
        images,
        [0, 2, 1, 0],
        (5, 3),
        (4, 2),
    )
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert ex.meta["score_source"].startswith("logits (the pre-activation of the model's final")
    probs = explain(
        model, images, window=(5, 3), stride=(4, 2), target=[0, 2, 1, 0], score="probability"
    )
    assert probs.meta["score_source"].startswith("outputs used as they are (already probabilities")
    assert np.abs(probs.values - ex.values).max() > 0.1  # the two scores differ here


def test_logits_that_are_the_outputs_keep_the_plain_source(small_weights, images):
    ex = explain(ReferenceAdapter.from_weights(small_weights), images, window=5, stride=4)
    assert ex.meta["score_source"] in ("outputs", "outputs (the adapter serves no logits tap)")


# -- edges ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "stride"), [(5, 4), (15, 8), (3, 2), (4, 4), (7, 1)])
@pytest.mark.parametrize("extra", range(30))
def test_truncate_gives_captums_window_count(extra, window, stride):
    size = window + extra
    truncated = window_corners(size, window, stride, "truncate")
    assert len(truncated) == math.ceil((size - window) / stride) + 1  # Captum's shift count
    assert truncated.tolist() == [k * stride for k in range(len(truncated))]
    aligned = window_corners(size, window, stride, "aligned")
    assert aligned.tolist() == corners(size, window, stride)
    assert (aligned.tolist() == truncated.tolist()) == ((size - window) % stride == 0)


def _captum(net, x, targets, window, stride):
    from captum.attr import Occlusion

    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).double()
    out = Occlusion(net).attribute(
        inputs,
        sliding_window_shapes=(x.shape[3], *window),
        strides=(x.shape[3], *stride),
        baselines=0,
        target=list(targets),
    )
    # one value per pixel: every channel of a pixel is hidden by the same windows
    return out.numpy().transpose(0, 2, 3, 1)


def _atol(reference):
    """1e-6, or 1e-6 of the largest value where that is larger: the maps are float32 (their
    rounding alone is 6e-8 of a value); the models and Captum run in float64."""
    return 1e-6 * max(1.0, float(np.abs(reference).max()))


@pytest.mark.parametrize(
    ("window", "stride"),
    [((5, 5), (4, 4)), ((3, 5), (2, 4)), ((4, 4), (4, 4)), ((12, 3), (5, 3)), ((5, 4), (5, 4))],
)
def test_truncate_equals_captum_occlusion(torch_small, images, window, stride):
    pytest.importorskip("captum")
    net = copy.deepcopy(torch_small).double()
    targets = [0, 1, 2, 1]
    ex = explain(net, images, window=window, stride=stride, target=targets, edges="truncate")
    captum = _captum(net, images, targets, window, stride)
    np.testing.assert_allclose(captum[..., 1:], captum[..., :1].repeat(2, axis=-1), atol=1e-12)
    np.testing.assert_allclose(ex.values, captum[..., 0], rtol=0, atol=_atol(captum))
    assert np.abs(captum).max() > 1e-2  # not vacuous
    aligned = explain(net, images, window=window, stride=stride, target=targets)
    uneven = any((12 - w) % s for w, s in zip(window, stride, strict=True))
    assert uneven == (np.abs(aligned.values - captum[..., 0]).max() > 1e-3)
    assert ex.params["edges"] == "truncate" and aligned.params["edges"] == "aligned"


def test_truncate_equals_captum_with_the_defaults_on_32_pixel_digits(digits_torch, digits):
    pytest.importorskip("captum")
    net = copy.deepcopy(digits_torch).double()
    x, y = digits.x_test[:2], digits.y_test[:2].tolist()
    ex = explain(net, x, target=y, edges="truncate")  # window 15, stride 8: 17 % 8 != 0
    assert ex.meta["window_rows"] == [0, 8, 16, 24] and ex.meta["windows"] == 16
    captum = _captum(net, x, y, (15, 15), (8, 8))
    np.testing.assert_allclose(ex.values, captum[..., 0], rtol=0, atol=_atol(captum))
    aligned = explain(net, x, target=y)
    assert aligned.meta["window_rows"] == [0, 8, 16, 17]
    assert np.abs(aligned.values - captum[..., 0]).max() > 1e-3


def test_truncate_matches_brute_force_with_other_baselines(torch_small, images):
    net = copy.deepcopy(torch_small).double()
    ex = explain(net, images, window=5, stride=4, target=2, baseline=0.5, edges="truncate")
    expected = brute_force(
        _torch_scores(net), images, [2] * 4, (5, 5), (4, 4), edges="truncate", baseline=0.5
    )
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6)
    assert ex.meta["window_rows"] == [0, 4, 8] and ex.meta["windows"] == 9


def test_unknown_edges_is_refused_and_the_advice_works(small_weights, images):
    model = ReferenceAdapter.from_weights(small_weights)
    with pytest.raises(
        ins.InputError,
        match=r"edges='captum' is unknown; use one of 'aligned', 'truncate'",
    ):
        explain(model, images, window=5, stride=4, edges="captum")
    assert explain(model, images, window=5, stride=4, edges="truncate").meta["windows"] == 9
