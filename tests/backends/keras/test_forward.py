"""KerasAdapter.forward, layers() and the traced-function cache: numbers against Keras itself."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from innersight.backends.keras import compiled  # noqa: E402
from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.errors import CapabilityError, InputError, LayerNotFoundError  # noqa: E402
from tests import models  # noqa: E402

L = keras.layers


def test_layers_describe_the_top_level_layers(keras_small):
    infos = KerasAdapter(keras_small).layers()
    assert [(i.name, i.kind, i.output_shape, i.num_params) for i in infos] == [
        ("conv1", "Conv2D", (10, 10, 4), 3 * 3 * 3 * 4 + 4),
        ("pool1", "MaxPooling2D", (5, 5, 4), 0),
        ("conv2", "Conv2D", (3, 3, 6), 3 * 3 * 4 * 6 + 6),
        ("flatten", "Flatten", (54,), 0),
        ("fc1", "Dense", (8,), 54 * 8 + 8),
        ("fc2", "Dense", (3,), 8 * 3 + 3),
    ]


def test_functional_model_layers_skip_the_input_layer():
    inp = keras.Input((6,), name="pixels")
    model = keras.Model(inp, L.Dense(2, name="head")(L.Dense(4, name="body")(inp)))
    assert [i.name for i in KerasAdapter(model).layers()] == ["body", "head"]


def test_outputs_equal_the_model_in_inference_mode(keras_small, images):
    out = KerasAdapter(keras_small).forward(images).outputs
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, keras_small(images, training=False).numpy())


def test_taps_equal_a_hand_built_sub_model(keras_small, images):
    names = ["conv2", "conv1", "fc2", "flatten"]
    fr = KerasAdapter(keras_small).forward(images, taps=names)
    assert list(fr.activations) == names
    ref = keras.Model(keras_small.inputs[0], [keras_small.get_layer(n).output for n in names])
    for name, want in zip(names, ref(images, training=False), strict=True):
        assert fr.activations[name].dtype == np.float32
        np.testing.assert_allclose(fr.activations[name], want.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fr.outputs, fr.activations["fc2"], rtol=1e-6)


def test_dropout_and_batchnorm_run_in_inference_mode():
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(6), L.BatchNormalization(), L.Dropout(0.9), L.Dense(2)]
    )
    bn = model.layers[1]
    bn.set_weights([rng.random(6) + 0.5, rng.random(6), rng.random(6), rng.random(6) + 0.5])
    x = rng.random((8, 5), dtype=np.float32)
    out = KerasAdapter(model).forward(x).outputs
    np.testing.assert_allclose(out, model(x, training=False).numpy(), rtol=1e-6)


def test_predict_classes_is_the_argmax_of_the_outputs(keras_small, images):
    want = keras_small(images).numpy().argmax(axis=1)
    got = KerasAdapter(keras_small).predict_classes(images)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_user_arrays_are_never_mutated_or_aliased(keras_small, images):
    before = images.copy()
    fr = KerasAdapter(keras_small).forward(images, taps=["conv1"])
    np.testing.assert_array_equal(images, before)
    assert not np.shares_memory(fr.activations["conv1"], images)


def test_wrong_input_shape_says_what_was_expected(keras_small):
    adapter = KerasAdapter(keras_small)
    with pytest.raises(InputError, match=r"shape \(2, 3, 12, 12\), expected \(N, 12, 12, 3\)"):
        adapter.forward(np.zeros((2, 3, 12, 12), np.float32))


def test_unknown_tap_suggests_a_name(keras_small, images):
    with pytest.raises(LayerNotFoundError, match=r"layer 'conv3' not found.*did you mean 'conv"):
        KerasAdapter(keras_small).forward(images, taps=["conv3"])


def test_shared_layer_cannot_be_tapped_but_the_rest_can():
    shared = L.Dense(4, name="shared")
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2, name="head")(shared(shared(inp))))
    adapter = KerasAdapter(model)
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with pytest.raises(CapabilityError, match=r"layer 'shared'.*is called 2 times"):
        adapter.forward(x, taps=["shared"])
    np.testing.assert_allclose(adapter.forward(x).outputs, model(x).numpy(), rtol=1e-6)


def test_nested_model_is_one_tappable_layer(small_weights, images):
    inner = models.keras_small(small_weights)
    inp = keras.Input((12, 12, 3))
    outer = keras.Model(inp, L.Activation("linear", name="identity")(inner(inp)))
    fr = KerasAdapter(outer).forward(images, taps=["small_net"])
    np.testing.assert_allclose(fr.activations["small_net"], inner(images).numpy(), rtol=1e-6)


def _forward_functions(adapter):
    return [fn for fn in adapter._cache.values() if isinstance(fn, compiled.Traced)]


def test_one_trace_serves_every_batch_size_and_tap_order(keras_small):
    adapter = KerasAdapter(keras_small)
    rng = np.random.default_rng(0)
    for n in (1, 3, 7, 2):
        adapter.forward(rng.random((n, 12, 12, 3), dtype=np.float32), taps=["conv1", "fc1"])
        adapter.forward(rng.random((n, 12, 12, 3), dtype=np.float32), taps=["fc1", "conv1"])
    (fn,) = _forward_functions(adapter)
    assert fn.function.experimental_get_tracing_count() == 1


def test_caches_belong_to_the_instance_and_stay_bounded(keras_small, images):
    first = KerasAdapter(keras_small)
    first.forward(images)
    second = KerasAdapter(keras_small)
    assert len(first._cache) == 1 and len(second._cache) == 0
    names = [i.name for i in first.layers()]
    tap_sets = [(a,) for a in names] + [(a, b) for a in names for b in names if a < b]
    assert len(tap_sets) > compiled.CACHE_SIZE
    for taps in tap_sets:
        first.forward(images[:1], taps=taps)
    assert len(first._cache) == compiled.CACHE_SIZE


def test_sequential_that_gains_a_layer_is_read_again(small_weights, images):
    model = models.keras_small(small_weights)
    adapter = KerasAdapter(model)
    adapter.forward(images)
    model.add(L.Dense(5, name="extra"))
    assert adapter.layers()[-1].name == "extra"
    np.testing.assert_allclose(adapter.forward(images).outputs, model(images).numpy(), rtol=1e-6)
