"""Class/filter maximization defaults on the models people bring: a flexible input size, 1000
classes, ImageNet-normalised and 0..255 inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import innersight as ins
from innersight.featurevis.ascent import resolve_range

keras = pytest.importorskip("keras")
L = keras.layers

MEAN, STD = 0.45, 0.226  # ImageNet-style normalisation: x = (pixel - MEAN) / STD
NORM_RANGE = ((0 - MEAN) / STD, (1 - MEAN) / STD)  # about -1.99 .. 2.43


def folded(scale: float, offset: float) -> keras.Model:
    """The trained digits CNN behind a Rescaling layer: pixel = x * scale + offset."""
    from innersight.models import digits_cnn

    inp = keras.Input((32, 32, 1))
    return keras.Model(inp, digits_cnn("keras")(L.Rescaling(scale, offset)(inp)))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def flexible_net(classes: int = 3) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = L.Conv2D(6, 3, activation="relu", name="conv")(inp)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(classes, name="fc")(h), name="flexible")


# -- item 11a: a flexible input takes the example inputs' size -----------------------------------
@pytest.mark.parametrize("technique", ["class_maximization", "filter_maximization"])
def test_a_flexible_keras_input_takes_the_size_of_the_example_inputs(technique):
    model = flexible_net()
    x = np.random.default_rng(0).random((2, 14, 18, 3), dtype=np.float32)
    kw = {"steps": 4, "progress": False}
    if technique == "filter_maximization":
        kw["layer"] = "conv"
    ex = ins.explain(technique, model, x, **kw)
    assert ex.values.shape[1:] == (14, 18, 3) and ex.params["size"] == [14, 18, 3]
    # without inputs: advice that works on Keras (no wrap(input_shape=...), which Keras refuses)
    with pytest.raises(ins.InputError) as info:
        ins.explain(technique, model, **kw)
    msg = str(info.value)
    assert "does not declare its input shape ((?, ?, 3)); pass size=(H, W, 3)" in msg
    assert "input_shape" not in msg
    with pytest.raises(ins.InputError, match="unknown option 'input_shape'"):
        ins.wrap(model, input_shape=(14, 18, 3))
    # following it gives the same images (the example inputs, in 0..1, also gave that range)
    sized = ins.explain(technique, model, size=(14, 18, 3), value_range=(0, 1), **kw)
    np.testing.assert_array_equal(sized.values, ex.values)


# -- item 5a: a bounded default set of classes ----------------------------------------------------
def test_many_classes_default_to_the_first_ten_and_say_so(caplog, capsys):
    model = flexible_net(classes=1000)
    kw = {"steps": 2, "size": (8, 8, 3), "param": "pixel"}
    with caplog.at_level(logging.INFO, logger="innersight"):
        ex = ins.explain("class_maximization", model, progress=True, **kw)
    assert ex.meta["classes"] == list(range(10)) and len(ex.values) == 10
    rule = ex.meta["classes_rule"]
    assert rule.startswith("the first 10 of 1000 classes (pass classes=[...]")
    assert [r.getMessage() for r in caplog.records] == [f"classes: {rule}"]
    assert f"class_maximization: classes: {rule}" in capsys.readouterr().err  # above the bar
    # silent with progress=False (the report and the demo): nothing printed
    ins.explain("class_maximization", model, progress=False, **kw)
    assert capsys.readouterr().err == ""


def test_many_classes_with_inputs_default_to_their_top_predictions():
    model = flexible_net(classes=1000)
    x = np.random.default_rng(1).random((5, 8, 8, 3), dtype=np.float32)
    x[3] = x[1]  # two inputs with the same prediction give one class
    predicted = ins.wrap(model).predict_classes(x)
    want = list(dict.fromkeys(predicted.tolist()))
    assert len(want) < 5
    ex = ins.explain("class_maximization", model, x, steps=2, param="pixel", progress=False)
    assert ex.meta["classes"] == want and ex.params["classes"] == want
    assert ex.meta["classes_rule"].startswith(
        f"the top predicted class of each of the 5 example inputs: {want} (of 1000"
    )
    explicit = ins.explain(
        "class_maximization", model, x, classes=want, steps=2, param="pixel", progress=False
    )
    np.testing.assert_array_equal(explicit.values, ex.values)
    assert explicit.meta["classes_rule"] == "given"


def test_ten_classes_or_fewer_keep_all_of_them(digits_keras, keras_small):
    x = np.zeros((1, 12, 12, 3), np.float32)
    ex = ins.explain("class_maximization", keras_small, x, steps=2, progress=False)
    assert ex.meta["classes"] == [0, 1, 2] and ex.meta["classes_rule"] == "all 3 classes"


# -- item 5c: the input range of the example inputs ---------------------------------------------
def test_ranges_read_from_example_inputs():
    rng = np.random.default_rng(0)
    assert resolve_range(None, rng.uniform(0.1, 0.9, (2, 4))).params() == [0.0, 1.0]
    assert resolve_range(None, rng.uniform(-0.7, 0.9, (2, 4))).params() == [-1.0, 1.0]
    assert resolve_range(None, rng.uniform(3, 200, (2, 4))).params() == [0.0, 255.0]
    x = rng.uniform(NORM_RANGE[0], NORM_RANGE[1], (2, 4))
    assert resolve_range(None, x).params() == [x.min(), x.max()]
    assert resolve_range(None, None).params() is None  # 0..1, not enforced
    assert resolve_range((-2, 3), x).params() == [-2.0, 3.0]  # given wins
    with pytest.raises(ins.InputError, match=r"value_range must be \(low, high\) with low < high"):
        resolve_range((1, 1), None)
    with pytest.raises(ins.InputError, match=r"constant \(300\).*pass value_range=\(low, high\)"):
        resolve_range(None, np.full((2, 3), 300.0))


@pytest.mark.parametrize(
    ("name", "scale", "offset", "lo", "hi"),
    [
        ("0..255", 1 / 255, 0.0, 0.0, 255.0),
        ("imagenet", STD, MEAN, *NORM_RANGE),
    ],
)
def test_models_on_other_input_ranges_get_the_same_images_in_their_units(
    digits_keras, name, scale, offset, lo, hi
):
    """In units of the range the objective is the very same function, so the images are the
    0..1 model's images mapped into the other range (a second computation of the same thing).

    Few steps: clipped pixels make exact ties in max-pooling, where float32 round-off of the
    rescaling (~1e-7) picks another winner; measured max |diff| / range: 6e-8 after 1 step,
    1e-7 after 2, 4e-3 after 5 (ImageNet-style) -- the same function, chaotic at ties.
    """
    model = folded(scale, offset)
    kw = {"steps": 2, "classes": [0, 3, 7], "progress": False}
    base = ins.explain("class_maximization", digits_keras, value_range=(0, 1), **kw)
    other = ins.explain("class_maximization", model, value_range=(lo, hi), **kw)
    np.testing.assert_allclose(other.values, lo + (hi - lo) * base.values, atol=1e-6 * (hi - lo))
    assert np.all(np.array(base.meta["objective"]) > np.array(base.meta["initial_objective"]))
    assert other.values.min() >= lo and other.values.max() <= hi


@pytest.mark.parametrize(
    ("name", "scale", "offset"), [("0..255", 1 / 255, 0.0), ("imagenet", STD, MEAN)]
)
def test_class_images_stay_in_the_inputs_range_and_are_classified_as_their_class(
    digits, name, scale, offset
):
    model = folded(scale, offset)
    x = ((digits.x_test[:8] - offset) / scale).astype(np.float32)  # the model's own inputs
    lo, hi = float(x.min()), float(x.max())
    ex = ins.explain("class_maximization", model, x, progress=False)
    assert ex.meta["classes"] == list(range(10))
    want = (0.0, 255.0) if name == "0..255" else (lo, hi)
    assert ex.params["value_range"] == list(want)
    assert ex.values.min() >= want[0] and ex.values.max() <= want[1]
    outputs = ins.wrap(model).forward(ex.values).outputs.astype(np.float64)
    prob = softmax(outputs)[np.arange(10), np.arange(10)]
    # measured with the defaults: >= 0.99 for every class in both ranges
    assert np.all(prob > 0.9), prob
    assert ex.meta["predicted"] == list(range(10))


def test_filter_images_stay_in_the_range_and_lr_is_relative_to_it(digits_keras):
    from innersight.models import digits_cnn

    inp = keras.Input((32, 32, 1))
    h = L.Rescaling(1 / 255)(inp)
    for layer in digits_cnn("keras").layers:  # flat, so that conv2 is a top-level layer
        h = layer(h)
    model = keras.Model(inp, h)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    kw = {"layer": "conv2", "filters": [0, 5, 9], "steps": 15, "progress": False}
    ex = ins.explain("filter_maximization", model, x, **kw)
    assert ex.params["value_range"] == [0.0, 255.0]
    assert ex.values.min() >= 0.0 and ex.values.max() <= 255.0
    # the same run on the 0..1 model, mapped to 0..255 (lr is a fraction of the range)
    base = ins.explain("filter_maximization", digits_keras, value_range=(0, 1), **kw)
    np.testing.assert_allclose(ex.values, 255 * base.values, atol=0.05)
