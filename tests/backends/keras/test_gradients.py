"""value_and_grad and layer_value_and_grad against finite differences and closed forms.

Finite differences run on a float64 copy of the small net (same weights), central differences,
so the tolerance only has to absorb the adapter's float32 arithmetic.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core import LOGITS, objectives  # noqa: E402
from innersight.core.errors import (  # noqa: E402
    CapabilityError,
    InputError,
    LayerNotFoundError,
    ObjectiveError,
)
from innersight.core.objectives import Channel, Logit, Neuron  # noqa: E402
from tests import models  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def small64(small_weights):
    """The small net in float64, for finite differences."""
    layers = [
        L.Conv2D(4, 3, activation="relu", name="conv1", dtype="float64"),
        L.MaxPooling2D(2, name="pool1", dtype="float64"),
        L.Conv2D(6, 3, activation="relu", name="conv2", dtype="float64"),
        L.Flatten(name="flatten", dtype="float64"),
        L.Dense(8, activation="relu", name="fc1", dtype="float64"),
        L.Dense(3, name="fc2", dtype="float64"),
    ]
    model = keras.Sequential([keras.Input(models.INPUT_SHAPE, dtype="float64"), *layers])
    for name in ("conv1", "conv2", "fc1", "fc2"):
        w = [small_weights[f"{name}/kernel"], small_weights[f"{name}/bias"]]
        model.get_layer(name).set_weights([a.astype(np.float64) for a in w])
    return model


@pytest.fixture
def noise():
    """Inputs that keep most units of the small net active (N(0.5, 1) noise)."""
    return (np.random.default_rng(7).standard_normal((3, 12, 12, 3)) + 0.5).astype(np.float32)


def _values64(model, objective, x):
    """objectives.evaluate on a float64 forward of ``model``; x is (B, ...)."""
    layer = objectives.layer_of(objective)
    outs = [model.outputs[0]] + ([model.get_layer(layer).output] if layer else [])
    res = keras.Model(model.inputs[0], outs)(x.astype(np.float64))
    if not layer:
        return res.numpy(), {}
    return res[0].numpy(), {layer: res[1].numpy()}


def fd_grad(fn, x, eps=1e-5):
    """Central differences of per-sample scalars: fn(batch (B, ...), sample i) -> (B,)."""
    x = x.astype(np.float64)
    size = x[0].size
    steps = (np.eye(size) * eps).reshape(size, *x.shape[1:])
    grads = np.empty_like(x)
    for i in range(len(x)):
        values = fn(np.concatenate([x[i] + steps, x[i] - steps]), i)
        grads[i] = ((values[:size] - values[size:]) / (2 * eps)).reshape(x.shape[1:])
    return grads


def _one(objective, i):
    """The objective for sample i alone, evaluated on a batch of perturbations of it."""
    if isinstance(objective, Logit):
        return Logit(np.atleast_1d(objective.index)[i % np.size(objective.index)])
    idx = objective.index
    if not isinstance(idx, tuple) and np.ndim(idx):
        idx = int(np.asarray(idx)[i])
    if isinstance(objective, Channel):
        return Channel(objective.layer, idx, objective.crop)
    return Neuron(objective.layer, idx)


def _fd_for(model64, objective, x):
    def fn(batch, i):
        obj = _one(objective, i)
        out, acts = _values64(model64, obj, batch)
        return objectives.evaluate(obj, out, acts)

    return fd_grad(fn, x)


OBJECTIVES = [
    Logit([2, 0, 1]),
    Channel("conv2", [5, 1, 3], crop=1),
    Channel("conv1", 2),
    Channel("fc1", [3, 0, 5]),
    Neuron("conv2", 14),
    Neuron("conv1", (4, 7, 1)),
    Neuron("fc1", [5, 3, 3]),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_values_match_evaluate_and_grads_match_finite_differences(
    keras_small, small64, noise, objective
):
    values, grads = KerasAdapter(keras_small).value_and_grad(noise, objective)
    assert values.dtype == np.float32 and grads.dtype == np.float32
    assert grads.shape == noise.shape
    layer = objectives.layer_of(objective)
    fr = KerasAdapter(keras_small).forward(noise, taps=[layer] if layer else [])
    want = objectives.evaluate(objective, fr.outputs, dict(fr.activations))
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
    fd = _fd_for(small64, objective, noise)
    assert np.abs(fd).max() > 1e-3  # not a vacuous comparison
    np.testing.assert_allclose(grads, fd, rtol=1e-3, atol=1e-4)


def test_saliency_of_a_linear_model_is_the_kernel_column():
    dense = L.Dense(5)
    model = keras.Sequential([keras.Input((12, 12, 3)), L.Flatten(), dense])
    x = np.random.default_rng(0).random((5, 12, 12, 3), dtype=np.float32)
    targets = np.array([3, 0, 4, 1, 3])
    _, grads = KerasAdapter(model).value_and_grad(x, Logit(targets))
    kernel = dense.kernel.numpy()
    for i, t in enumerate(targets):
        np.testing.assert_allclose(grads[i], kernel[:, t].reshape(12, 12, 3), rtol=1e-6)


def test_channel_and_neuron_objectives_run_only_up_to_their_layer(keras_small, noise):
    adapter = KerasAdapter(keras_small)
    adapter.value_and_grad(noise, Channel("conv2", 1))
    adapter.value_and_grad(noise, Neuron("pool1", 3))
    for fn in adapter._cache.values():
        ops = {op.type for op in fn.concrete.graph.get_operations()}
        assert "Conv2D" in ops and "MatMul" not in ops  # fc1/fc2 never run


def test_new_targets_and_batch_sizes_do_not_retrace(keras_small):
    adapter = KerasAdapter(keras_small)
    rng = np.random.default_rng(0)
    for n, target in [(1, 0), (4, [0, 1, 2, 1]), (2, [2, 2]), (3, 1)]:
        x = rng.random((n, 12, 12, 3), dtype=np.float32)
        adapter.value_and_grad(x, Logit(target))
        adapter.value_and_grad(x, Channel("conv2", target, crop=n % 2))
    fns = adapter._cache.values()
    assert len(fns) == 2
    assert [fn.function.experimental_get_tracing_count() for fn in fns] == [1, 1]


def test_alternating_targets_and_crops_each_get_their_own_values(keras_small, noise):
    """Small arguments are converted once and reused (compiled._tensor): a target met before
    must never be served another target's tensor, nor a crop another crop's."""
    adapter = KerasAdapter(keras_small)
    logits = adapter.forward(noise, taps=[LOGITS]).activations[LOGITS]
    acts = adapter.forward(noise, taps=["conv2"]).activations["conv2"]
    for target in [0, 1, 0, [2, 0, 1], 2, [2, 0, 1], 1]:
        idx = np.broadcast_to(np.asarray(target), (len(noise),))
        values, _ = adapter.value_and_grad(noise, Logit(target))
        np.testing.assert_allclose(values, logits[np.arange(len(noise)), idx], rtol=1e-5)
    for crop in [0, 1, 0, 1]:
        values, _ = adapter.value_and_grad(noise, Channel("conv2", 3, crop=crop))
        h, w = acts.shape[1:3]
        want = acts[:, crop : h - crop, crop : w - crop, 3].mean(axis=(1, 2))
        np.testing.assert_allclose(values, want, rtol=1e-5)


def test_the_callers_batch_is_read_not_kept(keras_small, noise):
    """The TensorFlow engine passes a validated float32 batch to tf.constant without a copy of
    its own (TensorFlow copies it): the caller's array is unchanged, and no result shares its
    memory."""
    adapter = KerasAdapter(keras_small)
    x = noise.copy()
    values, grads = adapter.value_and_grad(x, Logit(1))
    out = adapter.forward(x, taps=["conv1"])
    np.testing.assert_array_equal(x, noise)
    for result in (values, grads, out.outputs, out.activations["conv1"]):
        assert not np.shares_memory(result, x)
    x[:] = 0  # changing the caller's array afterwards changes nothing already returned
    again, _ = adapter.value_and_grad(noise, Logit(1))
    np.testing.assert_array_equal(values, again)


# -- logits="auto" ------------------------------------------------------------------------------
def test_logits_auto_reads_pre_softmax_scores_of_a_fused_dense(small_weights, keras_small, noise):
    soft = models.keras_small(small_weights, softmax=True)
    adapter = KerasAdapter(soft)
    assert adapter.logits_source == "pre-softmax scores of 'fc2'"
    target = Logit([0, 2, 1])
    values, grads = adapter.value_and_grad(noise, target)
    want_v, want_g = KerasAdapter(keras_small).value_and_grad(noise, target)
    np.testing.assert_allclose(values, want_v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads, want_g, rtol=1e-5, atol=1e-7)
    probs = soft(noise).numpy()
    np.testing.assert_allclose(adapter.forward(noise).outputs, probs, rtol=1e-6)
    np.testing.assert_array_equal(adapter.predict_classes(noise), probs.argmax(axis=1))


def test_logits_false_reads_the_probabilities(small_weights, noise):
    soft = models.keras_small(small_weights, softmax=True)
    values, _ = KerasAdapter(soft, logits=False).value_and_grad(noise, Logit([0, 2, 1]))
    probs = soft(noise).numpy()
    np.testing.assert_allclose(values, probs[np.arange(3), [0, 2, 1]], rtol=1e-6)


def test_pre_activation_uses_live_weights(small_weights, noise):
    soft = models.keras_small(small_weights, softmax=True)
    adapter = KerasAdapter(soft)
    before, _ = adapter.value_and_grad(noise, Logit(1))
    soft.get_layer("fc2").bias.assign(small_weights["fc2/bias"] + np.float32(1.5))
    after, _ = adapter.value_and_grad(noise, Logit(1))
    np.testing.assert_allclose(after, before + 1.5, rtol=1e-5)


def _dense_head(final):
    inp = keras.Input((6,))
    h = L.Dense(4, activation="relu", name="body")(inp)
    return keras.Model(inp, final(L.Dense(3, name="scores")(h))), inp


@pytest.mark.parametrize(
    "final",
    [
        lambda t: L.Activation("softmax", name="probs")(t),
        lambda t: L.Softmax(name="probs")(t),
        lambda t: L.Activation("sigmoid", name="probs")(t),
        lambda t: keras.ops.softmax(t),
    ],
    ids=["activation-softmax", "softmax-layer", "activation-sigmoid", "ops-softmax"],
)
def test_logits_auto_reads_the_input_of_a_final_activation(final):
    model, _ = _dense_head(final)
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    scores = keras.Model(model.inputs[0], model.get_layer("scores").output)(x).numpy()
    values, _ = KerasAdapter(model).value_and_grad(x, Logit([0, 1, 2, 0]))
    np.testing.assert_allclose(values, scores[np.arange(4), [0, 1, 2, 0]], rtol=1e-6)


def test_sigmoid_dense_gives_the_pre_sigmoid_score():
    dense = L.Dense(1, activation="sigmoid")
    model = keras.Sequential([keras.Input((4,)), dense])
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    values, grads = KerasAdapter(model).value_and_grad(x, Logit(0))
    kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
    np.testing.assert_allclose(values, (x @ kernel + bias)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(grads, np.tile(kernel[:, 0], (3, 1)), rtol=1e-6)


def test_unknown_fused_softmax_warns_with_auto_and_refuses_with_true():
    model = keras.Sequential([keras.Input((4, 4, 2)), L.Conv2D(3, 1, activation="softmax")])
    x = np.random.default_rng(0).random((2, 4, 4, 2), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = KerasAdapter(model)  # no warning until a Logit objective needs the scores
        adapter.forward(x)
    with pytest.warns(UserWarning, match=r"applies softmax inside itself.*logits=False") as rec:
        values, _ = adapter.value_and_grad(x, Logit(5))
    assert rec[0].filename == __file__  # points at the caller
    np.testing.assert_allclose(values, model(x).numpy().reshape(2, -1)[:, 5], rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.value_and_grad(x, Logit(5), relu="guided")  # once per adapter
    with pytest.raises(CapabilityError, match=r"logits=True but final layer .* applies softmax"):
        KerasAdapter(model, logits=True)


def test_softmax_hidden_in_a_lambda_is_found_in_the_traced_graph():
    inp = keras.Input((4,))
    out = L.Lambda(lambda t: keras.ops.softmax(t), name="hidden")(L.Dense(3)(inp))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    adapter = KerasAdapter(model)
    with pytest.warns(UserWarning, match=r"Softmax op inside a layer") as rec:
        adapter.value_and_grad(x, Logit(1))
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.layer_value_and_grad(x, Logit(1), "hidden")
    with pytest.raises(CapabilityError, match=r"logits=True but the model's output is computed by"):
        KerasAdapter(model, logits=True).value_and_grad(x, Logit(1))


# -- layer gradients (Grad-CAM) -----------------------------------------------------------------
@pytest.mark.parametrize("objective", [Logit([1, 0, 2]), Neuron("fc1", [3, 0, 5])], ids=repr)
def test_layer_gradients_match_finite_differences_on_the_activation(
    keras_small, small64, noise, objective
):
    adapter = KerasAdapter(keras_small)
    values, acts, grads = adapter.layer_value_and_grad(noise, objective, "conv2")
    fr = adapter.forward(noise, taps=["conv2", "fc1"])
    np.testing.assert_allclose(acts, fr.activations["conv2"], rtol=1e-6)
    want = objectives.evaluate(objective, fr.outputs, dict(fr.activations))
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
    # The rest of the float64 net, from conv2's output onward.
    tail_in = keras.Input((3, 3, 6), dtype="float64")
    h = small64.get_layer("fc1")(small64.get_layer("flatten")(tail_in))
    tail = keras.Model(tail_in, [small64.get_layer("fc2")(h), h])

    def fn(batch, i):
        out, fc1 = (t.numpy() for t in tail(batch))
        return objectives.evaluate(_one(objective, i), out, {"fc1": fc1})

    fd = fd_grad(fn, acts)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(grads, fd, rtol=1e-4, atol=1e-5)


def test_layer_gradient_of_a_channel_w_r_t_its_own_layer_is_the_averaging_mask(keras_small, noise):
    objective = Channel("conv2", [4, 0, 5], crop=1)  # conv2 is 3x3: the crop leaves the centre
    values, acts, grads = KerasAdapter(keras_small).layer_value_and_grad(noise, objective, "conv2")
    np.testing.assert_allclose(values, acts[np.arange(3), 1, 1, [4, 0, 5]], rtol=1e-6)
    want = np.zeros_like(acts)
    want[np.arange(3), 1, 1, [4, 0, 5]] = 1.0
    np.testing.assert_array_equal(grads, want)


def test_layer_gradient_is_zero_where_the_objective_does_not_depend_on_it(keras_small, noise):
    _, acts, grads = KerasAdapter(keras_small).layer_value_and_grad(
        noise, Channel("conv1", 0), "fc1"
    )
    assert acts.shape == (3, 8)
    np.testing.assert_array_equal(grads, 0)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("objective", "error", "match"),
    [
        (Logit(3), ObjectiveError, r"target 3 is out of range: valid values are 0..2"),
        (Logit([0, 1]), ObjectiveError, r"target has 2 entries for 3 samples"),
        (
            Channel("conv2", 6),
            ObjectiveError,
            r"channel of layer 'conv2' 6 .*valid values are 0..5",
        ),
        (Channel("conv1", 0, crop=5), ObjectiveError, r"crop=5 leaves nothing.*0 <= crop <= 4"),
        (Neuron("conv1", (10, 0, 0)), ObjectiveError, r"neuron \(10, 0, 0\) is outside layer"),
        (
            Neuron("fc1", 8),
            ObjectiveError,
            r"neuron index of layer 'fc1' 8 .*valid values are 0..7",
        ),
        (Neuron("fc3", 0), LayerNotFoundError, r"layer 'fc3' not found.*did you mean 'fc"),
        ("logit", ObjectiveError, r"unknown objective 'logit'; expected innersight.objectives"),
    ],
)
def test_objective_errors_name_the_valid_range(keras_small, noise, objective, error, match):
    with pytest.raises(error, match=match):
        KerasAdapter(keras_small).value_and_grad(noise, objective)


def test_input_gradients_of_an_integer_input_model_are_refused():
    inp = keras.Input((4,), dtype="uint8")
    model = keras.Model(inp, L.Dense(2, name="head")(L.Rescaling(1 / 255, name="scale")(inp)))
    adapter = KerasAdapter(model)
    x = np.random.default_rng(0).integers(0, 255, (2, 4)).astype(np.float32)
    with pytest.raises(CapabilityError, match=r"takes uint8 inputs.*would all be zero"):
        adapter.value_and_grad(x, Logit(1))
    _, acts, grads = adapter.layer_value_and_grad(x, Logit(1), "scale")
    np.testing.assert_allclose(acts, x / 255, rtol=1e-6)
    kernel = model.get_layer("head").kernel.numpy()
    np.testing.assert_allclose(grads, np.tile(kernel[:, 1], (2, 1)), rtol=1e-6)


def test_variable_input_size_needs_no_retrace_and_checks_the_crop():
    inp = keras.Input((None, None, 3))
    conv = L.Conv2D(4, 3, activation="relu", name="conv")(inp)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(conv)))
    adapter = KerasAdapter(model)
    assert adapter.layers()[0].output_shape == (None, None, 4)
    rng = np.random.default_rng(0)
    objective = Channel("conv", [1, 2], crop=2)
    for size in (8, 12, 9):
        x = rng.random((2, size, size, 3), dtype=np.float32)
        fr = adapter.forward(x, taps=["conv"])
        values, _ = adapter.value_and_grad(x, objective)
        want = objectives.evaluate(objective, fr.outputs, dict(fr.activations))
        np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ObjectiveError, match=r"crop=3 leaves nothing of layer 'conv' \(6x6\)"):
        adapter.value_and_grad(rng.random((1, 8, 8, 3), dtype=np.float32), Channel("conv", 0, 3))
    traced = [f for f in adapter._cache.values() if hasattr(f, "function")]
    assert [f.function.experimental_get_tracing_count() for f in traced] == [1, 1]


def test_bad_relu_mode_lists_the_valid_ones(keras_small, noise):
    with pytest.raises(
        InputError, match=r"relu='guide' is not supported; use one of plain, guided"
    ):
        KerasAdapter(keras_small).value_and_grad(noise, Logit(0), relu="guide")


def test_layer_gradient_of_an_unknown_layer(keras_small, noise):
    with pytest.raises(LayerNotFoundError, match=r"layer 'conv9' not found"):
        KerasAdapter(keras_small).layer_value_and_grad(noise, Logit(0), "conv9")
