"""Occlusion, checked against a brute-force loop, a linear model's closed form and a box-shaped
receptive field, on the numpy reference, torch and Keras adapters."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

import innersight as ins
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique
from innersight.testing.reference_layers import Dense, Flatten
from tests import models

SHAPE = (12, 12, 3)


# torch's float32 CPU kernels give batch-size-dependent outputs (about 1e-6 of their scale), so
# float32 torch results are compared within TORCH32 * max |output|; float64 models within 1e-6.
TORCH32 = 5e-6


@pytest.fixture(params=["numpy", "torch"])
def small(request, small_weights, torch_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return ins.wrap(torch_small)


def tolerance(model, images) -> float:
    scale = float(np.abs(model.forward(images).outputs).max())
    return (1e-6 if model.backend == "numpy" else TORCH32) * scale


def corners(size: int, window: int, stride: int) -> list[int]:
    out, corner = [], 0
    while corner + window <= size:
        out.append(corner)
        corner += stride
    if out[-1] + window < size:
        out.append(size - window)
    return out


def softmax(out):
    out = np.exp(out - out.max())
    return out / out.sum()


def brute_force(adapter, x, targets, window, stride, baseline, *, transform=None):
    """One forward per occluded image, pixel-by-pixel accumulation."""
    n, h, w, _ = x.shape
    (wh, ww), (sh, sw) = window, stride
    sums, counts = np.zeros((n, h, w)), np.zeros((n, h, w))

    def score(image, t):
        out = adapter.forward(image[None]).outputs[0].astype(np.float64)
        return (out if transform is None else transform(out))[t]

    for i in range(n):
        s0 = score(x[i], targets[i])
        for r in corners(h, wh, sh):
            for c in corners(w, ww, sw):
                occluded = x[i].copy()
                occluded[r : r + wh, c : c + ww] = baseline[i, r : r + wh, c : c + ww]
                drop = s0 - score(occluded, targets[i])
                for p in range(r, r + wh):
                    for q in range(c, c + ww):
                        sums[i, p, q] += drop
                        counts[i, p, q] += 1
    return sums / counts


def linear_closed_form(weights, x, targets, window, stride, baseline):
    """score = sum(W[:, t] * x) + b: hiding a window drops the score by sum_window W * (x - base)."""
    n, h, w, _ = x.shape
    (wh, ww), (sh, sw) = window, stride
    sums, counts = np.zeros((n, h, w)), np.zeros((n, h, w))
    for i in range(n):
        contrib = (weights[:, targets[i]].reshape(SHAPE) * (x[i] - baseline[i])).astype(np.float64)
        for r in corners(h, wh, sh):
            for c in corners(w, ww, sw):
                sums[i, r : r + wh, c : c + ww] += contrib[r : r + wh, c : c + ww].sum()
                counts[i, r : r + wh, c : c + ww] += 1
    return sums / counts


def linear_models(weights, bias, backends=("numpy", "torch", "keras")):
    """The same linear classifier (flatten + dense, Keras kernel layout) on each backend."""
    classes = weights.shape[1]
    out = {}
    if "numpy" in backends:
        layers = [Flatten("flatten"), Dense("fc", weights, bias)]
        out["numpy"] = ReferenceAdapter(ReferenceNetwork(layers, SHAPE, name="linear"))
    if "keras" in backends:
        import keras

        km = keras.Sequential(
            [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(classes)]
        )
        km.layers[-1].set_weights([weights, bias])
        out["keras"] = ins.wrap(km)
    if "torch" in backends:
        import torch

        tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), classes))
        with torch.no_grad():  # torch flattens (C, H, W)
            chw = weights.reshape(*SHAPE, classes).transpose(3, 2, 0, 1).reshape(classes, -1)
            tm[1].weight.copy_(torch.from_numpy(np.ascontiguousarray(chw)))
            tm[1].bias.copy_(torch.from_numpy(bias))
        out["torch"] = ins.wrap(tm)
    return out


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((int(np.prod(SHAPE)), 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    return weights, linear_models(weights, bias)


def explain(model, x, **params):
    params.setdefault("progress", False)
    return ins.explain("occlusion", model, x, **params)


@pytest.mark.parametrize(
    ("window", "stride"), [((5, 5), (4, 4)), ((3, 5), (2, 4)), ((4, 4), (4, 4)), ((12, 1), (5, 1))]
)
def test_matches_brute_force_on_reference(images, small_weights, window, stride):
    model = ReferenceAdapter.from_weights(small_weights)
    ex = explain(model, images, window=window, stride=stride, target=[0, 1, 2, 1])
    expected = brute_force(model, images, [0, 1, 2, 1], window, stride, np.zeros_like(images))
    scale = np.abs(ex.meta["score"]).max()
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6 * scale)
    assert ex.meta["window_rows"] == corners(12, window[0], stride[0])
    assert ex.meta["window_cols"] == corners(12, window[1], stride[1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_brute_force_on_torch_with_partial_last_window(torch_small, images, dtype):
    import copy

    net = copy.deepcopy(torch_small).double() if dtype == "float64" else torch_small
    model = ins.wrap(net)
    ex = explain(model, images, window=5, stride=4)
    assert ex.meta["window_rows"] == [0, 4, 7]  # 0, 4 leave rows 9..11 uncovered: 7 is added
    assert ex.meta["windows"] == 9 and len(ex.meta["window_positions"]) == 9
    expected = brute_force(model, images, ex.meta["target"], (5, 5), (4, 4), np.zeros_like(images))
    scale = float(np.abs(model.forward(images).outputs).max())
    atol = (1e-6 if dtype == "float64" else TORCH32) * scale
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=atol)
    assert np.abs(ex.values).max() > 1e-2 * scale  # the check is not vacuous


def test_score_depends_on_a_box_only():
    weights = np.random.default_rng(8).standard_normal((int(np.prod(SHAPE)), 4))
    box = np.zeros(SHAPE, bool)
    box[3:6, 6:9] = True  # rows 3..5, cols 6..8
    w = np.where(box.reshape(-1, 1), np.abs(weights) + 0.5, 0.0).astype(np.float32)
    models_ = linear_models(w, np.zeros(4, np.float32), ("numpy", "torch"))
    x = np.random.default_rng(3).random((2, *SHAPE), dtype=np.float32) + 0.1
    rows, cols = corners(12, 3, 2), corners(12, 3, 2)
    touched = np.zeros((12, 12), bool)  # pixels of windows that overlap the box
    for r in rows:
        for c in cols:
            if box[r : r + 3, c : c + 3].any():
                touched[r : r + 3, c : c + 3] = True
    for name in ("numpy", "torch"):
        values = explain(models_[name], x, window=3, stride=2, target=1).values
        # zero up to float32 rounding of the score, which in torch depends on the batch size
        # and the CPU's kernels (seen: 1.9e-6 with torch 2.11 on a Xeon)
        tol = 1e-7 if name == "numpy" else 1e-5 * np.abs(values).max()
        assert np.abs(values[:, ~touched]).max() <= tol, name
        assert (values[:, touched] > 0).any(), name
        for v in values:
            peak = np.unravel_index(v.argmax(), v.shape)
            assert box[peak[0], peak[1], 0], (name, peak)


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_linear_model_closed_form(linear, backend):
    weights, backends = linear
    x = np.random.default_rng(4).random((3, *SHAPE), dtype=np.float32)
    ex = explain(backends[backend], x, window=(5, 3), stride=(4, 2), target=[3, 0, 2])
    expected = linear_closed_form(weights, x, [3, 0, 2], (5, 3), (4, 2), np.zeros_like(x))
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def per_input_baseline(x):
    """One baseline per input: the first image's is negative noise, the second's a ramp."""
    rng = np.random.default_rng(11)
    ramp = np.linspace(0, 2, x[0].size, dtype=np.float32).reshape(x.shape[1:])
    return np.stack([-rng.random(x.shape[1:], dtype=np.float32), ramp])


def blur(x, size):
    return uniform_filter(x.astype(np.float64), size=(1, *size, 1), mode="nearest")


@pytest.mark.parametrize(
    ("baseline", "make"),
    [
        ("mean", lambda x, win: np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)),
        ("blur", lambda x, win: blur(x, win)),
        (0.25, lambda x, win: np.full(x.shape, 0.25)),
        ("black", lambda x, win: np.zeros(x.shape)),
        (
            "array",
            lambda x, win: np.broadcast_to(np.linspace(-1, 1, x[0].size).reshape(SHAPE), x.shape),
        ),
        ("per-input", lambda x, win: per_input_baseline(x)),
    ],
)
@pytest.mark.parametrize("window", [(5, 5), (4, 6)])
def test_baselines_against_linear_closed_form(linear, baseline, make, window):
    """Every baseline core.baselines takes (one per input too, as integrated gradients takes
    them), with occlusion's own "blur": a box blur of the window's size."""
    weights, backends = linear
    x = np.random.default_rng(5).random((2, *SHAPE), dtype=np.float32)
    base = make(x, window)
    arg = {
        "array": np.linspace(-1, 1, x[0].size).reshape(SHAPE),
        "per-input": per_input_baseline(x),
    }.get(baseline, baseline)
    ex = explain(backends["numpy"], x, window=window, stride=2, target=2, baseline=arg)
    expected = linear_closed_form(weights, x, [2, 2], window, (2, 2), base)
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1


def test_probability_score_is_softmax_of_the_outputs(small, images):
    ex = explain(small, images, window=5, stride=4, score="probability", target=0)
    assert ex.meta["score_source"] == "softmax of the outputs"
    logits = small.forward(images).outputs.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ex.meta["score"], probs[:, 0], rtol=1e-6)
    expected = brute_force(
        small, images, [0] * 4, (5, 5), (4, 4), np.zeros_like(images), transform=softmax
    )
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 1e-3


def test_probability_of_a_single_output_is_its_sigmoid():
    weights = np.random.default_rng(9).standard_normal((int(np.prod(SHAPE)), 1)) * 0.2
    model = ReferenceAdapter(
        ReferenceNetwork([Flatten("flatten"), Dense("fc", weights, np.zeros(1))], SHAPE)
    )
    x = np.random.default_rng(10).random((2, *SHAPE), dtype=np.float32)
    ex = explain(model, x, window=6, stride=3, score="probability")
    assert ex.meta["score_source"] == "sigmoid of the single output"
    expected = brute_force(
        model, x, [0, 0], (6, 6), (3, 3), np.zeros_like(x), transform=lambda o: 1 / (1 + np.exp(-o))
    )
    np.testing.assert_allclose(ex.values, expected, rtol=0, atol=1e-7)
    assert np.abs(expected).max() > 1e-2
    squashed = ReferenceAdapter(
        ReferenceNetwork([Flatten("flatten"), Dense("fc", weights * 0, np.full(1, 0.3))], SHAPE)
    )
    ex = explain(squashed, x, window=6, stride=3, score="probability")
    assert ex.meta["score_source"].startswith("outputs used as they are (one output in [0, 1]")
    np.testing.assert_allclose(ex.meta["score"], [0.3, 0.3], rtol=1e-6)


def test_batch_sizes_give_identical_results(small, images):
    runs = {bs: explain(small, images, window=5, stride=4, batch_size=bs) for bs in (1, 3, "auto")}
    for bs in (3, "auto"):
        if small.backend == "numpy":
            np.testing.assert_array_equal(runs[bs].values, runs[1].values)
        else:
            atol = tolerance(small, images)
            np.testing.assert_allclose(runs[bs].values, runs[1].values, rtol=0, atol=atol)
    items = len(images) * 9  # the originals (4 images) and 9 windows per image, batched alike
    assert runs[1].meta["forwards"] == 4 + items
    assert runs[3].meta["batch_size"] == 3 and runs[3].meta["forwards"] == 2 + items // 3
    assert runs["auto"].meta["batch_size"] > 1 and runs["auto"].meta["forwards"] < items // 4


def test_predicted_targets_come_from_the_originals_forward(small, images, monkeypatch):
    """target=None: the predicted classes are read from the forward of the unoccluded inputs,
    not from a separate predict_classes pass; the values equal those for the explicit classes."""
    predicted = small.predict_classes(images)
    explicit = explain(small, images, window=5, stride=4, target=predicted, batch_size=3)
    calls: list[int] = []
    forward = small.forward
    monkeypatch.setattr(small, "forward", lambda x, **kw: calls.append(len(x)) or forward(x, **kw))
    implicit = explain(small, images, window=5, stride=4, batch_size=3)
    assert implicit.meta["target"] == predicted.tolist()
    np.testing.assert_array_equal(implicit.values, explicit.values)
    assert sum(calls) == len(images) * (1 + 9)  # the originals and 9 windows per image, no more
    assert implicit.meta["forwards"] == explicit.meta["forwards"] == len(calls)


def test_torch_and_keras_agree(torch_small, keras_small, small_weights, images):
    # same weights copied into both frameworks; tolerance: 1e-5 of the largest |value| (seen: 3e-7)
    t = explain(torch_small, images, window=4, stride=2, target=1)
    k = explain(keras_small, images, window=4, stride=2, target=1)
    assert np.abs(t.values - k.values).max() <= 1e-5 * np.abs(t.values).max()
    # a Keras model ending in softmax already gives probabilities: used as they are
    kp = explain(
        models.keras_small(small_weights, softmax=True),
        images,
        window=4,
        stride=2,
        target=1,
        score="probability",
    )
    assert kp.meta["score_source"].startswith("outputs used as they are")
    # score="logit" on the softmax head reads its pre-softmax logit: the torch map (no softmax)
    kl = explain(
        models.keras_small(small_weights, softmax=True), images, window=4, stride=2, target=1
    )
    assert kl.meta["score_source"].startswith("logits (the pre-activation")
    assert np.abs(t.values - kl.values).max() <= 1e-5 * np.abs(t.values).max()
    tp = explain(torch_small, images, window=4, stride=2, target=1, score="probability")
    assert np.abs(tp.values - kp.values).max() <= 1e-5 * np.abs(tp.values).max()


def test_explanation_contents(small, images):
    ex = explain(small, images, window=(5, 6), stride=(4, 3), baseline="mean")
    assert ex.kind == "heatmap" and ex.values.shape == (4, 12, 12)
    assert ex.values.dtype == np.float32
    np.testing.assert_array_equal(ex.meta["target"], small.predict_classes(images))
    assert ex.params == {
        "target": ex.meta["target"],
        "window": [5, 6],
        "stride": [4, 3],
        "baseline": "mean",
        "score": "logit",
        "edges": "aligned",
        "batch_size": "auto",
    }
    assert ex.meta["window_cols"] == [0, 3, 6]
    assert ex.meta["window_positions"][:4] == [[0, 0], [0, 3], [0, 6], [4, 0]]
    outputs = small.forward(images).outputs
    np.testing.assert_allclose(
        ex.meta["score"], outputs[np.arange(4), ex.meta["target"]], rtol=1e-6
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"window": 13},
            r"window \(13, 13\) is larger than the 12x12 images; use a window of at most \(12, 12\)",
        ),
        ({"window": (5, 20)}, r"window \(5, 20\) is larger than the 12x12 images"),
        ({"stride": 0}, r"stride must be a positive int or a pair of them \(rows, cols\), got 0"),
        ({"window": -3}, r"window must be a positive int or a pair of them .*got -3; pass e\.g\."),
        ({"window": 12, "stride": 13}, r"stride \(13, 13\) is larger than the 12x12 images"),
        (
            {"window": 4, "stride": 5},
            r"stride \(5, 5\) is larger than window \(4, 4\).*leave pixels",
        ),
        ({"window": "big"}, r"window must be a positive int or a pair of them .*got 'big'"),
        ({"stride": (1, 2, 3)}, r"stride must be a positive int .*got \(1, 2, 3\)"),
        ({"window": 2.5}, r"window must be a positive int .*got 2.5"),
        ({"window": True}, r"window must be a positive int .*got True"),
        (
            {"baseline": np.zeros((12, 12))},
            r"baseline has shape \(12, 12\); pass a number \(e\.g\. 0\.0\), 'zeros', 'mean', "
            r"'blur', or an array shaped like one input \(12, 12, 3\) or like the batch "
            r"\(4, 12, 12, 3\)",
        ),
        ({"baseline": "median"}, r"baseline='median' is unknown; pass a number"),
        ({"baseline": True}, r"baseline=True is not a baseline; pass a number"),
        ({"baseline": float("nan")}, r"baseline contains NaN or Inf values; pass finite numbers"),
        ({"baseline": np.full(SHAPE, np.inf)}, r"baseline contains NaN or Inf values"),
        ({"baseline": {"a": 1}}, r"baseline must be a number, a name or an array, got dict"),
        ({"baseline": None}, r"baseline=None is not a baseline"),
        ({"score": "prob"}, r"score='prob' is unknown; use one of 'logit', 'probability'"),
        ({"edges": "captum"}, r"edges='captum' is unknown; use one of 'aligned', 'truncate'"),
        ({"method": "fast"}, r"method='fast' is unknown; use one of 'naive', 'incremental'"),
        ({"batch_size": 0}, r"batch_size must be a positive int or 'auto', got 0"),
    ],
)
def test_error_messages(params, message, images, small_weights):
    params = {"window": 5, "stride": 4, **params}
    with pytest.raises(ins.InputError, match=message):
        explain(ReferenceAdapter.from_weights(small_weights), images, **params)


def test_the_advice_of_the_messages_works(images, small_weights):
    """The examples the messages give run: window=8 (validate.pair's example) and a baseline
    shaped like the batch."""
    model = ReferenceAdapter.from_weights(small_weights)
    assert explain(model, images, window=8, stride=4).meta["windows"] == 4
    per_input = np.zeros(images.shape, np.float32)
    zero = explain(model, images, window=5, stride=4, baseline=0.0)
    same = explain(model, images, window=5, stride=4, baseline=per_input)
    np.testing.assert_array_equal(same.values, zero.values)
    assert same.params["baseline"].shape == images.shape


def test_error_for_non_image_inputs_and_bad_target(small_weights, images):
    vector = ReferenceAdapter(ReferenceNetwork([Dense("fc", np.ones((10, 2)), np.zeros(2))], (10,)))
    rows = np.ones((2, 10), np.float32)
    with pytest.raises(
        ins.CapabilityError,
        match=r"technique 'occlusion' takes images \(N, H, W, C\); got tabular rows \(N, F\)\. "
        r"Techniques that take tabular inputs: .*feature_ablation",
    ):
        explain(vector, rows)
    # the advice works: feature_ablation (occlusion of single features) runs on the rows
    ablated = ins.explain("feature_ablation", vector, rows, target=0, progress=False)
    np.testing.assert_allclose(ablated.values, rows, rtol=1e-6)  # score drop of x_i * 1
    model = ReferenceAdapter.from_weights(small_weights)
    with pytest.raises(ins.ObjectiveError, match="target 7 is out of range: valid values are 0..2"):
        explain(model, images, window=5, stride=4, target=7)


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_conformance(backend, small_weights, torch_small, keras_small, images):
    model = {
        "numpy": ReferenceAdapter.from_weights(small_weights),
        "torch": torch_small,
        "keras": keras_small,
    }[backend]
    check_technique("occlusion", ins.wrap(model), images[:2], window=5, stride=4, progress=False)
    check_technique(
        "occlusion",
        ins.wrap(model),
        images[:2],
        window=6,
        stride=3,
        baseline=np.ones(SHAPE, np.float32),
        progress=False,
    )


def test_progress_false_is_silent_and_callbacks_see_every_item(small_weights, images, capsys):
    model = ReferenceAdapter.from_weights(small_weights)
    explain(model, images, window=5, stride=4, progress=False)
    assert capsys.readouterr() == ("", "")
    seen = []
    explain(
        model, images, window=5, stride=4, batch_size=8, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(8, 36), (16, 36), (24, 36), (32, 36), (36, 36)]
    explain(model, images, window=5, stride=4, progress=True)
    # a bar was drawn (tqdm clears it at the end; how far it got depends on its refresh rate)
    assert re.search(r"occlusion\b.*\d+/36", capsys.readouterr().err)


def test_occluded_batches_are_built_in_place():
    """One buffer per chunk size, reused: every chunk equals a fresh copy with its windows
    pasted, whether a slot keeps its image (only the old window is restored) or changes it."""
    from innersight.plugins._windows import OccludedBatches

    rng = np.random.default_rng(12)
    inputs = rng.random((3, 10, 9, 2), dtype=np.float32)
    base = rng.random(inputs.shape, dtype=np.float32) - 2.0
    batches = OccludedBatches(inputs, base, (3, 4))
    seen: dict[int, int] = {}
    for size in (5, 5, 3, 5, 5, 7, 7, 3):
        image = rng.integers(0, 2 if size == 5 else 3, size)
        top, left = rng.integers(0, 9, size), rng.integers(0, 8, size)
        batch = batches(image, top, left)
        expected = inputs[image].copy()
        for i in range(size):
            expected[i, top[i] : top[i] + 3, left[i] : left[i] + 4] = base[
                image[i], top[i] : top[i] + 3, left[i] : left[i] + 4
            ]
        np.testing.assert_array_equal(batch, expected)
        if size in seen and size != 3:  # 3 was dropped in between (two sizes are kept)
            assert id(batch) == seen[size]
        seen[size] = id(batch)
    np.testing.assert_array_equal(
        inputs, np.random.default_rng(12).random(inputs.shape, dtype=np.float32)
    )
