"""KerasAdapter.with_inputs on TensorFlow: packed inputs, trailing extras, shared traces.

Numbers are checked against a GradientTape on the model's own call, against closed forms
(tests/backends/keras/several_models.py) and against keras.Model sub-models.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import innersight  # noqa: E402
from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core import Capability  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402
from innersight.core.inputspec import InputSpec  # noqa: E402
from innersight.core.objectives import Channel, Logit  # noqa: E402
from innersight.testing.state import diff, snapshot  # noqa: E402
from tests.backends.keras import several_models as sm  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def conv_two():
    """A Conv branch on a (7, 7, 2) image and a Dense branch on a (4,) vector, concatenated."""
    keras.utils.set_random_seed(3)
    a, b = keras.Input((7, 7, 2), name="img"), keras.Input((4,), name="vec")
    h = L.Conv2D(3, 3, activation="relu", name="conv")(a)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    v = L.Dense(5, activation="tanh", name="vd")(b)
    c = L.Concatenate(name="cat")([h, v])
    return keras.Model([a, b], L.Dense(3, name="head")(c), name="conv_two")


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 7, 7, 2)).astype(np.float32), rng.normal(size=(4, 4)).astype(
        np.float32
    )


SPEC = InputSpec(((7, 7, 2), (4,)), ("float32", "float32"))


def tape_grads(model, a, b, k):
    ta, tb = tf.constant(a), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([ta, tb])
        y = model([ta, tb])[:, k]
    ga, gb = tape.gradient(y, [ta, tb])
    return y.numpy(), ga.numpy(), gb.numpy()


def test_packed_gradient_equals_a_gradient_tape_on_the_parts(conv_two, parts):
    before = snapshot(conv_two)
    derived = innersight.wrap(conv_two).with_inputs(SPEC)
    packed = SPEC.pack(parts)
    values, grads = derived.value_and_grad(packed, Logit(2))
    ref_values, ref_a, ref_b = tape_grads(conv_two, *parts, 2)
    ga, gb = SPEC.split(grads)
    assert grads.shape == packed.shape
    np.testing.assert_allclose(values, ref_values, atol=1e-6)
    np.testing.assert_allclose(ga, ref_a, atol=1e-6)
    np.testing.assert_allclose(gb, ref_b, atol=1e-6)
    outputs = derived.forward(packed).outputs
    np.testing.assert_allclose(outputs, conv_two([*parts]).numpy(), atol=1e-6)
    assert diff(before, snapshot(conv_two)) == []


def test_layer_taps_equal_a_sub_model(conv_two, parts):
    derived = KerasAdapter(conv_two).with_inputs(SPEC)
    acts = derived.forward(SPEC.pack(parts), taps=["conv", "vd", "cat"]).activations
    for name in ("conv", "vd", "cat"):
        sub = keras.Model(conv_two.inputs, conv_two.get_layer(name).output)
        np.testing.assert_allclose(acts[name], sub([*parts]).numpy(), atol=1e-6)


def test_layer_value_and_grad_is_the_head_kernel(conv_two, parts):
    """The head is linear in the concatenation: d score_k / d cat = the head's kernel column."""
    derived = KerasAdapter(conv_two).with_inputs(SPEC)
    values, acts, grads = derived.layer_value_and_grad(SPEC.pack(parts), Logit(1), "cat")
    kernel = conv_two.get_layer("head").get_weights()[0]
    np.testing.assert_allclose(grads, np.broadcast_to(kernel[:, 1], grads.shape), atol=1e-7)
    np.testing.assert_allclose(values, tape_grads(conv_two, *parts, 1)[0], atol=1e-6)
    cat = keras.Model(conv_two.inputs, conv_two.get_layer("cat").output)([*parts]).numpy()
    np.testing.assert_allclose(acts, cat, atol=1e-6)


def test_a_channel_objective_on_one_branch_has_no_gradient_in_the_other(conv_two, parts):
    derived = KerasAdapter(conv_two).with_inputs(SPEC)
    _, grads = derived.value_and_grad(SPEC.pack(parts), Channel("conv", 1))
    ga, gb = SPEC.split(grads)
    assert np.abs(ga).max() > 0
    assert np.abs(gb).max() == 0


@pytest.mark.parametrize("relu", ["plain", "guided"])
@pytest.mark.parametrize("batched", [True, False])
def test_relu_modes_and_a_trailing_mask_match_the_closed_form(relu, batched):
    model = sm.relu_two_inputs()
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, *sm.IMG)).astype(np.float32)
    b = rng.normal(size=(5, *sm.VEC)).astype(np.float32)
    mask = np.array([[1.5, -2.0]], np.float32)  # a negative weight: guided differs from plain
    spec = InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), (mask,), (batched,))
    derived = KerasAdapter(model).with_inputs(spec)
    for k in range(sm.CLASSES):
        values, grads = derived.value_and_grad(spec.pack([a, b]), Logit(k), relu=relu)
        ref_values, ref_a, ref_b = sm.closed_form(model, a, b, mask, k, relu)
        ga, gb = spec.split(grads)
        np.testing.assert_allclose(values, ref_values, atol=1e-5)
        np.testing.assert_allclose(ga, ref_a, atol=1e-5)
        np.testing.assert_allclose(gb, ref_b, atol=1e-5)
    if relu == "guided":
        assert derived.last_relu_report == {"overridden": 2, "not_overridden": {}}


def test_one_input_with_an_extra_takes_the_input_in_its_own_shape():
    """packed=False: the image (N, 3, 3, 2) itself, the other inputs as extras (per sample)."""
    model = sm.relu_two_inputs()
    rng = np.random.default_rng(2)
    a = rng.normal(size=(1, *sm.IMG)).astype(np.float32)
    b = rng.normal(size=(1, *sm.VEC)).astype(np.float32)
    mask = np.array([[0.5, 3.0]], np.float32)
    spec = InputSpec((sm.IMG,), ("float32",), (b, mask), (True, True), packed=False)
    derived = KerasAdapter(model).with_inputs(spec)
    assert derived.input_shape == sm.IMG
    batch = np.repeat(a, 3, axis=0) * np.array([1.0, -1.0, 2.0], np.float32)[:, None, None, None]
    values, grads = derived.value_and_grad(batch, Logit(1))
    ref_values, ref_a, _ = sm.closed_form(model, batch, np.repeat(b, 3, 0), mask, 1, "plain")
    np.testing.assert_allclose(values, ref_values, atol=1e-5)
    np.testing.assert_allclose(grads, ref_a, atol=1e-5)
    assert Capability.CROPPED_FORWARD not in derived.capabilities
    assert Capability.CROPPED_FORWARD in KerasAdapter(model).capabilities


def test_twenty_adapters_differing_only_in_extras_trace_once():
    model = sm.relu_two_inputs()
    root = KerasAdapter(model)
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, *sm.IMG)).astype(np.float32)
    b = rng.normal(size=(2, *sm.VEC)).astype(np.float32)
    caches = set()
    for i in range(20):
        mask = np.array([[i, 1.0 - i]], np.float32)
        spec = InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), (mask,), (True,))
        derived = root.with_inputs(spec)
        values, _ = derived.value_and_grad(spec.pack([a, b]), Logit(0))
        np.testing.assert_allclose(
            values, sm.closed_form(model, a, b, mask, 0, "plain")[0], atol=1e-4
        )
        derived.forward(spec.pack([a, b]))
        caches.add(id(derived._cache))
    assert len(caches) == 1
    traced = derived._cache.values()
    assert len(traced) == 2  # one forward, one gradient function
    assert [t.function.experimental_get_tracing_count() for t in traced] == [1, 1]


def test_mixed_integer_and_float_inputs_pack_with_no_gradient_into_the_ids():
    keras.utils.set_random_seed(4)
    ids, vec = keras.Input((3,), dtype="int32", name="ids"), keras.Input((2,), name="vec")
    e = L.GlobalAveragePooling1D(name="pool")(L.Embedding(7, 2, name="emb")(ids))
    out = L.Dense(2, name="out")(L.Concatenate(name="cat")([e, vec]))
    model = keras.Model([ids, vec], out)
    spec = InputSpec(((3,), (2,)), ("int32", "float32"))
    tokens = np.array([[1, 6, 2], [0, 0, 5]], np.int32)
    v = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    derived = KerasAdapter(model).with_inputs(spec)
    values, grads = derived.value_and_grad(spec.pack([tokens, v]), Logit(1))
    np.testing.assert_allclose(values, model([tokens, v]).numpy()[:, 1], atol=1e-6)
    g_ids, g_vec = spec.split(grads)
    assert np.all(g_ids == 0)
    kernel = model.get_layer("out").get_weights()[0]
    np.testing.assert_allclose(g_vec, np.broadcast_to(kernel[2:, 1], g_vec.shape), atol=1e-7)
    with pytest.raises(InputError, match=r"token id 7 is out of range.*ids 0\.\.6"):
        derived.forward(spec.pack([np.where(tokens == 6, 7, tokens), v]))
    with pytest.raises(InputError, match=r"must be integers, got dtype float32 with fractional"):
        derived.forward(spec.pack([tokens + 0.25, v]))


def test_a_multi_input_model_is_refused_by_the_plain_adapter_and_the_advice_works(conv_two, parts):
    adapter = innersight.wrap(conv_two)
    assert adapter.input_shape is None
    with pytest.raises(CapabilityError, match=r"has 2 inputs \(img, vec\); pass them as a tuple"):
        adapter.forward(parts[0])
    with pytest.raises(CapabilityError, match=r"adapter.with_inputs\(InputSpec"):
        adapter.value_and_grad(parts[0], Logit(0))
    outputs = adapter.with_inputs(SPEC).forward(SPEC.pack(parts)).outputs
    np.testing.assert_allclose(outputs, conv_two([*parts]).numpy(), atol=1e-6)


def test_specs_that_do_not_fit_the_model_are_refused_with_what_fits(conv_two):
    adapter = KerasAdapter(conv_two)
    with pytest.raises(InputError, match=r"takes 2 input\(s\) \('img', 'vec'\); got 1 input"):
        adapter.with_inputs(InputSpec(((7, 7, 2),), ("float32",)))
    with pytest.raises(
        InputError, match=r"input 1 \('vec'\) has one sample of shape \(5,\).*\(N, 4\)"
    ):
        adapter.with_inputs(InputSpec(((7, 7, 2), (5,)), ("float32", "float32")))
    model = sm.relu_two_inputs()
    mask = np.ones((3, 2), np.float32)
    with pytest.raises(InputError, match=r"batch axis must have length 1.*shape \(3, 2\)"):
        KerasAdapter(model).with_inputs(
            InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), (mask,), (True,))
        )
    with pytest.raises(InputError, match=r"extra argument 0 .* is a dict that is not an array"):
        KerasAdapter(model).with_inputs(
            InputSpec((sm.IMG, sm.VEC), ("float32", "float32"), ({"a": 1},))
        )
    with pytest.raises(InputError, match=r"with_inputs takes an innersight InputSpec"):
        adapter.with_inputs(((7, 7, 2), (4,)))  # type: ignore[arg-type]
