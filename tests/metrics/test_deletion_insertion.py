"""Deletion and insertion (RISE): closed forms on a linear model, in all three backends."""

from __future__ import annotations

import numpy as np
import pytest

from innersight.api import evaluate
from innersight.core import Explanation, InputError, gaussian_blur
from innersight.metrics._pixel_curves import step_counts
from tests.metrics import _linear

BACKENDS = ["reference", "torch", "keras"]


def _setup(backend: str, seed: int = 0):
    if backend != "reference":
        pytest.importorskip(backend)
    w, b = _linear.weights(seed)
    adapter = _linear.model(backend, w, b)
    x = np.random.default_rng(seed + 1).random((3, *_linear.SHAPE), dtype=np.float32)
    targets = np.array([0, 2, 1])
    # input x gradient of the target logit: each pixel's exact contribution
    attr = _linear.contributions(x, w)[np.arange(3), :, targets].reshape(3, 4, 4)
    ex = Explanation(
        "input_x_gradient", "heatmap", attr.astype(np.float32), x, {"target": targets.tolist()}
    )
    return adapter, ex, x, w, b, targets, attr.reshape(3, -1)


def _trapezoid(y: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    return ((y[:, 1:] + y[:, :-1]) / 2 * np.diff(fraction)).sum(axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [16, 5])
def test_deletion_matches_the_closed_form_of_a_linear_model(backend, steps):
    adapter, ex, x, w, b, targets, attr = _setup(backend)
    ev = evaluate("deletion", adapter, ex, steps=steps, score="logit")
    counts = step_counts(16, steps)
    want = _linear.closed_form(x, np.zeros_like(x), w, b, targets, attr, counts, insertion=False)
    np.testing.assert_allclose(ev.curves["deletion"].y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.curves["deletion"].x, counts / 16)
    np.testing.assert_allclose(ev.scores, _trapezoid(want, counts / 16), rtol=1e-5, atol=1e-5)
    # the first point is the untouched input, the last the all-black baseline: f(0) = b
    np.testing.assert_allclose(ev.curves["deletion"].y[:, -1], b[targets], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_insertion_reveals_the_input_on_a_given_baseline(backend):
    adapter, ex, x, w, b, targets, attr = _setup(backend)
    base = np.random.default_rng(7).random(_linear.SHAPE, dtype=np.float32)
    ev = evaluate("insertion", adapter, ex, steps=16, baseline=base, score="logit")
    counts = step_counts(16, 16)
    batch = np.broadcast_to(base, x.shape)
    want = _linear.closed_form(x, batch, w, b, targets, attr, counts, insertion=True)
    np.testing.assert_allclose(ev.curves["insertion"].y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.scores, _trapezoid(want, counts / 16), rtol=1e-5, atol=1e-5)


def test_probability_scores_are_the_softmax_of_the_logits():
    adapter, ex, x, w, b, targets, attr = _setup("reference")
    ev = evaluate("deletion", adapter, ex, steps=8, score="probability")
    counts = step_counts(16, 8)
    want = _linear.closed_form(
        x, np.zeros_like(x), w, b, targets, attr, counts, insertion=False, probability=True
    )
    np.testing.assert_allclose(ev.curves["deletion"].y, want, rtol=1e-6, atol=1e-7)


def test_the_attribution_order_is_the_best_order_on_a_linear_model():
    """Removing the largest contributions first gives the lowest deletion area of all orders:
    the metric rewards the exact attribution over a shuffled one."""
    adapter, ex, x, _w, _b, _targets, _attr = _setup("reference")
    best = evaluate("deletion", adapter, ex, steps=16, score="logit").scores
    shuffled = np.random.default_rng(3).permuted(np.asarray(ex.values), axis=2)
    worse = evaluate(
        "deletion", adapter, Explanation("shuffled", "heatmap", shuffled, x, ex.params),
        steps=16, score="logit",
    ).scores  # fmt: skip
    assert np.all(best < worse)


def test_masked_copies_are_scored_in_batches_and_the_batch_size_does_not_matter():
    adapter, ex, *_ = _setup("reference")
    one = evaluate("deletion", adapter, ex, steps=16, score="logit", batch_size=51)
    other = evaluate("deletion", adapter, ex, steps=16, score="logit", batch_size=4)
    assert one.meta["forwards"] == 1  # 3 inputs x 17 steps in one batch, not 51 forwards
    assert other.meta["forwards"] == 13
    np.testing.assert_allclose(one.scores, other.scores, rtol=1e-12)


def test_torch_and_keras_agree_on_the_demo_model(digits_torch, digits_keras, digits):
    import innersight as ins

    x = digits.x_test[:3]
    ex = ins.explain("saliency", digits_torch, x)
    a = evaluate("deletion", digits_torch, ex, steps=20)
    b = evaluate("deletion", digits_keras, ex, steps=20)
    np.testing.assert_allclose(a.curves["deletion"].y, b.curves["deletion"].y, atol=2e-5)
    assert a.meta["score_source"] == b.meta["score_source"]


def test_named_baselines_are_the_core_resolvers_with_blur_sigma():
    """ "blur" is :func:`innersight.core.gaussian_blur` with the metric's ``blur_sigma`` (numbers
    against scipy in tests/core/test_baselines.py); "black" is zeros, "mean" the mean colour."""
    adapter, ex, x, w, b, targets, attr = _setup("reference")
    for name, array in [
        ("blur", gaussian_blur(x, 1.5)),
        ("black", np.zeros_like(x)),
        ("mean", np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)),
    ]:
        named = evaluate("insertion", adapter, ex, steps=8, baseline=name, blur_sigma=1.5)
        given = evaluate("insertion", adapter, ex, steps=8, baseline=np.array(array))
        np.testing.assert_allclose(
            named.curves["insertion"].y, given.curves["insertion"].y, rtol=1e-5, atol=1e-7
        )
    # the closed form of the linear model on the blurred baseline
    blurred = gaussian_blur(x, 1.5)
    ev = evaluate(
        "insertion", adapter, ex, steps=16, baseline="blur", blur_sigma=1.5, score="logit"
    )
    want = _linear.closed_form(x, blurred, w, b, targets, attr, step_counts(16, 16), insertion=True)
    np.testing.assert_allclose(ev.curves["insertion"].y, want, rtol=1e-5, atol=1e-5)


def test_bad_parameters_say_what_to_pass():
    adapter, ex, *_ = _setup("reference")
    with pytest.raises(
        InputError,
        match=r"baseline='white' is unknown; pass a number \(e\.g\. 0\.0\), 'zeros', 'mean', "
        r"'blur', or an array shaped like one input \(4, 4, 2\)",
    ):
        evaluate("deletion", adapter, ex, baseline="white")
    assert len(evaluate("deletion", adapter, ex, baseline="zeros", steps=4).scores) == 3
    with pytest.raises(
        InputError, match=r"steps must be a positive int, got 0; pass e.g. steps=100"
    ):
        evaluate("deletion", adapter, ex, steps=0)
    assert len(evaluate("deletion", adapter, ex, steps=100).scores) == 3  # the advice works
    with pytest.raises(
        InputError,
        match=r"blur_sigma must be a finite number > 0, got 0; pass e\.g\. blur_sigma=5\.0",
    ):
        evaluate("insertion", adapter, ex, blur_sigma=0)
    assert len(evaluate("insertion", adapter, ex, blur_sigma=5.0, steps=4).scores) == 3


@pytest.mark.parametrize("channels", [(2,), ()])
def test_in_place_masked_copies_equal_the_masked_images_in_any_visiting_order(channels):
    """MaskedCopies writes only the pixels between two steps of the same image into a reused
    slot; whatever the chunk sizes and order of visits (the planner's probes change sizes, a
    slot may move to another image or back to an earlier step), every copy equals
    ``np.where(rank < count, end, start)`` bit for bit."""
    from innersight.metrics._pixel_curves import MaskedCopies, pixel_ranks

    rng = np.random.default_rng(4)
    n, shape = 3, (5, 7)
    start = rng.standard_normal((n, *shape, *channels)).astype(np.float32)
    end = rng.standard_normal((n, *shape, *channels)).astype(np.float32)
    maps = rng.integers(0, 4, (n, *shape)).astype(np.float32)  # ties: ranked by position
    ranks = pixel_ranks(maps)
    counts = step_counts(35, 11)
    copies = MaskedCopies(start, end, ranks, counts)
    k = len(counts)
    items = np.arange(n * k)
    visits = [items[i : i + 4] for i in range(0, n * k, 4)]  # chunks of 4, in order
    visits += [items[i : i + 7] for i in range(0, n * k, 7)][::-1]  # of 7, backwards
    visits += [rng.permutation(items)[:5] for _ in range(20)]  # scattered
    for chunk in visits:
        image, step = np.divmod(chunk, k)
        got = copies(image, step).copy()
        mask = ranks[image] < counts[step][:, None, None]
        want = np.where(mask.reshape(*mask.shape, *([1] * len(channels))), end[image], start[image])
        np.testing.assert_array_equal(got, want)
