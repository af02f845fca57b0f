"""Keras models that fail in ways TensorFlow reports badly: targets out of range on a softmax
head, and models whose own call fails in graph mode. Each gets one innersight error that names
the model and the cause; the CLI prints it as one line."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import innersight as ins  # noqa: E402
from innersight.backends.keras.errors import ModelCallError  # noqa: E402
from innersight.cli import main  # noqa: E402

L = keras.layers
GRADIENT_TECHNIQUES = ["saliency", "grad_cam", "integrated_gradients"]


def head_model(activation: str) -> keras.Model:
    """8 pooled features into 4 classes: targets 4..7 fit the features but not the head."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, activation=activation, name="fc")(h), name="head4")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).random((2, 10, 10, 3), dtype=np.float32)


@pytest.mark.parametrize("technique", GRADIENT_TECHNIQUES)
@pytest.mark.parametrize("activation", ["softmax", "linear"])
@pytest.mark.parametrize("target", [4, 7, 9, -1, [0, 5]])
def test_out_of_range_targets_name_the_count_on_softmax_and_linear_heads(
    x, technique, activation, target
):
    bad = target[1] if isinstance(target, list) else target
    model = head_model(activation)
    with pytest.raises(ins.ObjectiveError) as info:
        ins.explain(technique, model, x, target=target)
    assert str(info.value).startswith(
        f"target {bad} is out of range: valid values are 0..3 (Keras model 'head4' has 4 outputs)"
    )
    # the advice works: a target in the range runs, and explains that class's logit
    ex = ins.explain(technique, model, x, target=3)
    assert np.all(np.isfinite(ex.values)) and np.ptp(ex.values) > 0


def failing_layer_model() -> keras.Model:
    class Fragile(L.Layer):
        """Builds fine, then raises in call once armed (a bug in the user's layer)."""

        armed = False

        def call(self, t):
            if self.armed:
                raise ValueError("shapes do not match in my custom layer")
            return t

    inp = keras.Input((6, 6, 3))
    fragile = Fragile(name="fragile")
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(fragile(inp))), name="custom_net")
    fragile.armed = True
    return model


def scope_name_model() -> keras.Model:
    inp = keras.Input((6, 6, 3))
    out = L.Dense(2, name="fc (head)")(L.Flatten()(inp))
    return keras.Model(inp, out, name="oddly_named")


def test_a_layer_name_tensorflow_refuses_gives_one_error_naming_model_and_layer(x):
    model = scope_name_model()
    xs = x[:, :6, :6]
    assert model(xs).shape == (2, 2)  # fine eagerly: only graph mode refuses the name
    with pytest.raises(ModelCallError) as info:
        ins.explain("saliency", model, xs)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("Keras model 'oddly_named' failed when innersight ran it: ValueError:")
    assert "TensorFlow refuses the layer name 'fc (head)' in graph mode" in msg
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, ins.InnersightError)
    # the advice works: the same model with a plain layer name runs
    inp = keras.Input((6, 6, 3))
    fixed = keras.Model(inp, L.Dense(2, name="fc_head")(L.Flatten()(inp)))
    fixed.get_layer("fc_head").set_weights(model.get_layer("fc (head)").get_weights())
    ex = ins.explain("saliency", fixed, xs)
    assert np.all(np.isfinite(ex.values)) and np.ptp(ex.values) > 0


def test_a_layer_that_raises_in_call_gives_one_error_with_the_cause(x):
    model = failing_layer_model()
    for call in (
        lambda: ins.wrap(model).forward(x[:, :6, :6]),
        lambda: ins.explain("saliency", model, x[:, :6, :6]),
    ):
        with pytest.raises(ModelCallError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg
        assert msg.startswith(
            "Keras model 'custom_net' failed when innersight ran it: ValueError: shapes do not "
            "match in my custom layer. innersight runs the model in graph mode"
        )
        assert isinstance(info.value.__cause__, ValueError)
        assert isinstance(info.value, ValueError)  # `except ValueError` around it still works


def test_an_op_failing_at_run_time_is_reported_without_the_tensorflow_traceback():
    import tensorflow as tf

    inp = keras.Input((None, None, 3))
    flat = L.Lambda(lambda t: tf.reshape(t, [-1, 48]), name="fixed_reshape")(inp)
    model = keras.Model(inp, L.Dense(2)(flat), name="reshaper")
    ok = np.zeros((1, 4, 4, 3), np.float32)  # 48 values per sample: fine
    assert ins.wrap(model).forward(ok).outputs.shape == (1, 2)
    with pytest.raises(ModelCallError) as info:
        ins.wrap(model).forward(np.zeros((1, 5, 5, 3), np.float32))
    msg = str(info.value)
    assert "\n" not in msg and "File " not in msg and "{{node" not in msg
    assert msg.startswith(
        "Keras model 'reshaper' failed when innersight ran it: InvalidArgumentError: Input to "
        "reshape is a tensor with 75 values, but the requested shape requires a multiple of 48."
    )


@pytest.mark.parametrize("command", ["report", "run"])
def test_the_cli_prints_one_line_for_a_model_that_fails(tmp_path, capsys, command, x):
    path = tmp_path / "odd.keras"
    scope_name_model().save(path)
    np.save(tmp_path / "x.npy", x[:, :6, :6])
    out = tmp_path / ("r.html" if command == "report" else "out")
    argv = [command, str(path), str(tmp_path / "x.npy"), "-o", str(out)]
    if command == "run":
        argv.insert(1, "saliency")
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("innersight: error: Keras model 'oddly_named' failed")
    assert "'fc (head)'" in lines[0] and "Traceback" not in err
