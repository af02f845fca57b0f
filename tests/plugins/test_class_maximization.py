"""class_maximization: the digits CNN sees every class in its image; torch == Keras; messages."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.plugins.class_maximization import probabilities
from innersight.testing import check_technique, reference_model

DIGITS = {"size": (32, 32, 1)}  # the torch digits CNN declares no input shape
SMALL = {"size": (12, 12, 3)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two intra-op threads on two busy cores make each tiny torch call ~10x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_every_digit_image_is_classified_as_its_class(backend, digits_torch, digits_keras):
    model = digits_torch if backend == "torch" else digits_keras
    kw = DIGITS if backend == "torch" else {}
    ex = ins.explain("class_maximization", model, progress=False, **kw)
    assert ex.values.shape == (10, 32, 32, 1) and ex.meta["classes"] == list(range(10))
    # recomputed independently from the images: softmax of the model's own outputs
    outputs = ins.wrap(model).forward(ex.values).outputs
    prob = softmax(outputs.astype(np.float64))[np.arange(10), np.arange(10)]
    # measured with the defaults: every class >= 0.999 on both backends (seeds 0, 1, 2)
    assert np.all(prob > 0.9), prob
    np.testing.assert_allclose(ex.meta["probability"], prob, rtol=1e-5)
    assert ex.meta["predicted"] == list(range(10))
    # objective = logit - l2 ||x||^2, and it went up from the gray start
    norms = np.sum(ex.values.astype(np.float64) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(
        ex.meta["objective"], outputs[np.arange(10), np.arange(10)] - 0.05 * norms, rtol=1e-4
    )
    assert np.all(np.array(ex.meta["objective"]) > np.array(ex.meta["initial_objective"]) + 10)


def test_l2_keeps_images_small_and_zero_l2_maximises_the_logit(keras_small):
    norms = []
    # measured norms: ~[21, 12, 19] at l2=0, ~[4.5, 2.8, 4.5] at 0.01, ~[1.3, 1.2, 1.7] at 0.1;
    # larger weights level off near the size of one normalised step (lr * sqrt(pixels) ~ 0.4)
    for l2 in (0.0, 0.01, 0.1):
        ex = ins.explain("class_maximization", keras_small, l2=l2, steps=60, progress=False)
        norms.append(np.sqrt(np.sum(ex.values.astype(np.float64) ** 2, axis=(1, 2, 3))))
        if l2 == 0:
            np.testing.assert_allclose(ex.meta["objective"], ex.meta["logit"], rtol=1e-6)
    assert np.all(norms[0] > norms[1]) and np.all(norms[1] > norms[2])


def test_subset_and_chunking_agree_with_the_full_run(digits_keras):
    kw = {"steps": 20, "progress": False}
    full = ins.explain("class_maximization", digits_keras, **kw)
    sub = ins.explain("class_maximization", digits_keras, classes=[7, 2], batch_size=1, **kw)
    np.testing.assert_allclose(sub.values, full.values[[7, 2]], atol=1e-5)


@pytest.mark.parametrize("steps", [5, 20])
def test_torch_and_keras_give_the_same_images(steps, digits_torch, digits_keras):
    # max |diff| relative to the image range: measured ~4e-8 after 5 and 20 steps; float32
    # round-off is amplified by the normalised steps (~1e-2 after the full 200)
    k = ins.explain("class_maximization", digits_keras, steps=steps, progress=False)
    t = ins.explain("class_maximization", digits_torch, steps=steps, progress=False, **DIGITS)
    assert np.abs(t.values - k.values).max() / np.ptp(k.values) < 1e-5


def test_snapshots_make_an_animated_gif(tmp_path, keras_small):
    from PIL import Image

    ex = ins.explain("class_maximization", keras_small, steps=20, snapshot_every=5, progress=False)
    assert len(ex.meta["frames"]) == 5  # start, steps 5, 10, 15, end
    path = ex.save(tmp_path / "classes.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.is_animated
        first = np.asarray(gif.convert("RGB"))
    assert first.shape == ex.to_image().shape


def test_probabilities_of_softmax_models_are_taken_as_they_are():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_array_equal(probabilities(p), p)
    np.testing.assert_allclose(probabilities(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]])
    np.testing.assert_allclose(probabilities(np.array([[0.0]])), [[0.0]])
    np.testing.assert_allclose(probabilities(np.array([[-2.0]])), [[1 / (1 + np.e**2)]])


def test_error_messages(keras_small, torch_small):
    cm = "class_maximization"
    with pytest.raises(
        ins.InputError, match=r"classes \[3\] are out of range.*3 outputs, .*0\.\.2"
    ):
        ins.explain(cm, keras_small, classes=[0, 3])
    with pytest.raises(
        ins.InputError, match=r"l2 must be a finite number >= 0, got -1; pass e\.g\. l2=0\.05"
    ):
        ins.explain(cm, keras_small, l2=-1)
    with pytest.raises(ins.InputError, match="steps must be a positive int, got -5"):
        ins.explain(cm, keras_small, steps=-5)
    with pytest.raises(ins.InputError, match="param='sigmoid' is unknown"):
        ins.explain(cm, keras_small, param="sigmoid")
    with pytest.raises(ins.InputError, match=r"init must be 'noise' or one finite image"):
        ins.explain(cm, keras_small, init=np.zeros((2, 12, 12, 3)))
    with pytest.raises(ins.InputError, match="does not declare its input shape"):
        ins.explain(cm, torch_small)


def test_progress_false_is_silent(capsys, keras_small):
    ins.explain("class_maximization", keras_small, steps=3, progress=False)
    assert capsys.readouterr().err == ""


def test_conformance_on_the_reference_and_torch_backends(torch_small):
    check_technique("class_maximization", reference_model("conv"), None, steps=5)
    adapter = ins.wrap(torch_small, input_shape=(12, 12, 3))
    check_technique("class_maximization", adapter, None, steps=5, param="pixel", jitter=0)


@pytest.mark.slow
def test_a_cnn_trained_in_this_test_gets_class_images_above_90_percent(digits):
    """Not only the shipped weights: a digits CNN trained here (short recipe, seed 1)."""
    import torch

    from innersight.models import DIGITS_SPEC, build
    from innersight.models.train_digits import train

    weights = train(seed=1, epochs=6)
    model = build(DIGITS_SPEC, "torch", weights)
    with torch.no_grad():
        logits = model(torch.from_numpy(digits.x_test.transpose(0, 3, 1, 2))).numpy()
    assert (logits.argmax(1) == digits.y_test).mean() >= 0.97
    ex = ins.explain("class_maximization", model, progress=False, **DIGITS)
    outputs = ins.wrap(model).forward(ex.values).outputs
    prob = softmax(outputs.astype(np.float64))[np.arange(10), np.arange(10)]
    assert np.all(prob > 0.9), prob
