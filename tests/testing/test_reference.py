"""The reference adapter is the oracle: its numbers are checked against finite differences in
float64, closed forms, and independent torch / Keras computations."""

from __future__ import annotations

import numpy as np
import pytest

from innersight.core import objectives as O
from innersight.core.adapter import ModelAdapter
from innersight.core.errors import InputError, LayerNotFoundError, ObjectiveError
from innersight.testing import SMALL_NET_LAYOUT, ReferenceAdapter, reference_model
from innersight.testing.reference import ReferenceNetwork, objective_seed
from innersight.testing.reference_layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tests import models

RNG = np.random.default_rng(123)


@pytest.fixture(scope="module")
def conv() -> ReferenceAdapter:
    return reference_model("conv", seed=3)


def x64(n: int = 2, shape: tuple[int, ...] = (12, 12, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape))


def fd_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of sum(f(x)) for every coordinate of x (f maps (B, ...) -> (B,))."""
    flat = x.reshape(-1)
    eye = np.eye(flat.size) * eps
    plus = (flat[None] + eye).reshape(flat.size, *x.shape)
    minus = (flat[None] - eye).reshape(flat.size, *x.shape)
    n = x.shape[0]
    fp = f(plus.reshape(-1, *x.shape[1:])).reshape(flat.size, n).sum(1)
    fm = f(minus.reshape(-1, *x.shape[1:])).reshape(flat.size, n).sum(1)
    return ((fp - fm) / (2 * eps)).reshape(x.shape)


def tile(obj, reps):
    from innersight.testing.checks import tile_objective

    return tile_objective(obj, reps)


OBJECTIVES = [
    O.Logit([0, 2]),
    O.Logit(1),
    O.Channel("relu1", [1, 3], crop=2),
    O.Channel("conv2", [5, 0]),
    O.Channel("pool1", 2, crop=1),
    O.Channel("fc1", [3, 7]),
    O.Neuron("relu2", (1, 2, 4)),
    O.Neuron("conv1", [17, 250]),
    O.Neuron("relu3", [0, 6]),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_input_gradient_matches_finite_differences_float64(conv, objective):
    net, x = conv.network, x64(2)
    values, grad, _ = net.value_and_grad(x, objective)
    assert values.shape == (2,)
    fd = fd_gradient(lambda b: net.value_and_grad(b, tile(objective, len(b) // 2))[0], x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert np.abs(grad).max() > 0  # not a vacuous comparison


@pytest.mark.parametrize("objective", OBJECTIVES[:6], ids=repr)
def test_values_follow_the_numpy_spec(conv, objective):
    x = x64(2).astype(np.float32)
    layer = O.layer_of(objective)
    fr = conv.forward(x, taps=[layer] if layer else [])
    values, _ = conv.value_and_grad(x, objective)
    np.testing.assert_allclose(
        values, O.evaluate(objective, fr.outputs, dict(fr.activations)), rtol=1e-6
    )


@pytest.mark.parametrize("layer", ["conv1", "pool1", "conv2", "flatten", "relu3"])
def test_layer_gradient_matches_finite_differences_on_the_activations(conv, layer):
    # (not relu1: its zeros tie inside max-pool windows, where the function has no gradient)
    net, x = conv.network, x64(2)
    logit = O.Logit([2, 0])
    values, grad, act = net.value_and_grad(x, logit, wrt=net.index(layer))
    start = net.index(layer) + 1

    def from_act(a: np.ndarray) -> np.ndarray:
        for lay in net.layers[start:]:
            a, _ = lay.forward(a)
        return O.evaluate(tile(logit, len(a) // 2), a, {})

    np.testing.assert_allclose(values, from_act(act), rtol=1e-12)
    np.testing.assert_allclose(grad, fd_gradient(from_act, act), rtol=1e-6, atol=1e-9)


def test_layer_gradient_of_an_objective_on_the_layer_itself_is_the_exact_mask(conv):
    x = x64(3).astype(np.float32)
    values, act, grad = conv.layer_value_and_grad(x, O.Channel("relu1", [0, 1, 2], crop=3), "relu1")
    expected = np.zeros_like(grad)
    for i in range(3):
        expected[i, 3:7, 3:7, i] = 1 / 16
    np.testing.assert_array_equal(grad, expected)
    np.testing.assert_allclose(
        values, act[np.arange(3), 3:7, 3:7, [0, 1, 2]].mean(axis=(1, 2)), rtol=1e-6
    )
    _, _, grad = conv.layer_value_and_grad(x, O.Neuron("fc1", 5), "fc1")
    np.testing.assert_array_equal(grad, np.eye(8, dtype=np.float32)[[5, 5, 5]])


def test_layer_gradient_is_zero_for_an_objective_before_the_layer(conv):
    x = x64(2).astype(np.float32)
    values, act, grad = conv.layer_value_and_grad(x, O.Channel("conv1", 0), "fc1")
    assert act.shape == (2, 8) and np.all(grad == 0)
    np.testing.assert_allclose(values, conv.value_and_grad(x, O.Channel("conv1", 0))[0])


def test_linear_model_saliency_is_the_weight_column():
    lin = reference_model("linear", seed=1, input_shape=(5, 4, 2), num_classes=4)
    kernel = lin.network.layers[1].kernel
    x = np.random.default_rng(0).random((3, 5, 4, 2), dtype=np.float32)
    _, grads = lin.value_and_grad(x, O.Logit([0, 3, 1]))
    for i, k in enumerate([0, 3, 1]):
        np.testing.assert_allclose(
            grads[i], kernel[:, k].reshape(5, 4, 2).astype(np.float32), rtol=1e-6
        )


def _two_relu_net() -> tuple[ReferenceNetwork, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    w = {
        "W1": rng.standard_normal((4, 5)),
        "b1": rng.standard_normal(5) * 0.3,
        "W2": rng.standard_normal((5, 3)),
        "b2": rng.standard_normal(3) * 0.3,
        "W3": rng.standard_normal((3, 2)),
        "b3": rng.standard_normal(2),
    }
    layers = [
        Dense("d1", w["W1"], w["b1"]),
        ReLU("r1"),
        Dense("d2", w["W2"], w["b2"]),
        ReLU("r2"),
        Dense("d3", w["W3"], w["b3"]),
    ]
    return ReferenceNetwork(layers, (4,)), w


@pytest.mark.parametrize("mode", ["plain", "guided", "deconv"])
def test_relu_modes_against_the_direct_formula(mode):
    net, w = _two_relu_net()
    x = np.random.default_rng(1).standard_normal((6, 4))
    _, grad, _ = net.value_and_grad(x, O.Logit(1), relu=mode)
    for i in range(6):
        z1 = x[i] @ w["W1"] + w["b1"]
        z2 = np.maximum(z1, 0) @ w["W2"] + w["b2"]
        g = w["W3"][:, 1]  # d logit / d relu2 output
        for z, weight in ((z2, w["W2"]), (z1, w["W1"])):
            if mode == "plain":
                g = g * (z > 0)
            elif mode == "guided":
                g = np.maximum(g * (z > 0), 0)
            else:
                g = np.maximum(g, 0)
            g = weight @ g
        np.testing.assert_allclose(grad[i], g, rtol=1e-12)
    if mode != "plain":  # the override must change something on this net
        assert not np.allclose(grad, net.value_and_grad(x, O.Logit(1))[1])


@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_relu_modes_on_the_conv_net_match_torch_backward_hooks(small_weights, mode):
    torch = pytest.importorskip("torch")
    ref = ReferenceAdapter.from_weights(small_weights)
    net = models.torch_small(small_weights).double()

    def hook(module, grad_input, grad_output):
        g = grad_input[0] if mode == "guided" else grad_output[0]
        return (g.clamp(min=0),)

    handles = [
        m.register_full_backward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.ReLU)
    ]
    try:
        x = np.random.default_rng(5).random((3, 12, 12, 3))
        t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        out = net(t)
        (g,) = torch.autograd.grad(out[torch.arange(3), torch.tensor([0, 1, 2])].sum(), t)
    finally:
        for h in handles:
            h.remove()
    _, grad, _ = ref.network.value_and_grad(x, O.Logit([0, 1, 2]), relu=mode)
    np.testing.assert_allclose(grad, g.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)


def test_max_pool_routes_ties_to_the_first_maximum_like_torch_and_tensorflow():
    x = np.zeros((1, 4, 4, 1))
    x[0, 2:4, 0:2, 0] = 1.0
    x[0, 0, 2, 0] = x[0, 1, 3, 0] = 0.5
    pool = MaxPool2D("p")
    y, cache = pool.forward(x)
    grad = pool.backward(np.ones_like(y), cache)[0, ..., 0]
    expected = np.zeros((4, 4))
    expected[[0, 0, 2, 2], [0, 2, 0, 2]] = 1
    np.testing.assert_array_equal(grad, expected)


def test_odd_sizes_and_conv_shapes():
    layers = [Conv2D("c", np.ones((2, 3, 1, 2)), np.zeros(2)), MaxPool2D("p"), Flatten("f")]
    net = ReferenceNetwork(layers, (7, 8, 1))
    assert net.output_shapes == ((6, 6, 2), (3, 3, 2), (18,))
    x = x64(2, (7, 8, 1))
    fd = fd_gradient(
        lambda b: net.value_and_grad(b, tile(O.Neuron("f", [4, 11]), len(b) // 2))[0], x
    )
    np.testing.assert_allclose(
        net.value_and_grad(x, O.Neuron("f", [4, 11]))[1], fd, rtol=1e-6, atol=1e-9
    )


# -- agreement with torch and Keras -----------------------------------------------------------
def test_small_net_matches_torch(small_weights, torch_small):
    torch = pytest.importorskip("torch")
    ref = ReferenceAdapter.from_weights(small_weights)
    x = np.random.default_rng(2).random((4, 12, 12, 3), dtype=np.float32)
    names = [i.name for i in ref.layers()]
    assert names == [n for n, _ in torch_small.named_children()]
    acts = {}
    hooks = [
        m.register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach()))
        for n, m in torch_small.named_children()
    ]
    try:
        t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        out = torch_small(t)
        (g,) = torch.autograd.grad(out[:, 1].sum(), t)
    finally:
        for h in hooks:
            h.remove()
    fr = ref.forward(x, taps=names)
    np.testing.assert_allclose(fr.outputs, out.detach().numpy(), rtol=1e-5, atol=1e-6)
    for name in ("relu1", "pool1", "conv2", "relu2", "fc1", "relu3"):
        a = acts[name].numpy()
        a = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
        np.testing.assert_allclose(fr.activations[name], a, rtol=1e-5, atol=1e-6, err_msg=name)
    _, grad = ref.value_and_grad(x, O.Logit(1))
    np.testing.assert_allclose(grad, g.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_small_net_matches_keras(small_weights, keras_small):
    ref = ReferenceAdapter.from_weights(small_weights)
    import keras

    x = np.random.default_rng(2).random((4, 12, 12, 3), dtype=np.float32)
    probe = keras.Model(
        keras_small.inputs[0], [keras_small.get_layer(n).output for n in models.KERAS_TO_TORCH]
    )
    got = dict(zip(models.KERAS_TO_TORCH.values(), (np.asarray(a) for a in probe(x)), strict=True))
    fr = ref.forward(x, taps=list(models.KERAS_TO_TORCH.values()))
    for name, value in got.items():
        np.testing.assert_allclose(fr.activations[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(fr.outputs, np.asarray(keras_small(x)), rtol=1e-5, atol=1e-6)


# -- the adapter surface ----------------------------------------------------------------------
def test_adapter_protocol_and_layers(conv):
    assert isinstance(conv, ModelAdapter) and conv.backend == "numpy"
    assert {str(c) for c in conv.capabilities} == {
        "forward",
        "layer_taps",
        "input_gradients",
        "layer_gradients",
        "relu_override",
        "several_inputs",
    }
    infos = conv.layers()
    assert [i.name for i in infos] == [name for name, _ in SMALL_NET_LAYOUT]
    assert [(i.kind, i.output_shape, i.num_params) for i in infos][:4] == [
        ("Conv2D", (10, 10, 4), 112),
        ("ReLU", (10, 10, 4), 0),
        ("MaxPool2D", (5, 5, 4), 0),
        ("Conv2D", (3, 3, 6), 222),
    ]
    assert conv.input_shape == (12, 12, 3) and conv.name == "reference_conv"


def test_inputs_are_validated_and_never_mutated(conv):
    x = np.random.default_rng(0).random((2, 12, 12, 3))
    before = x.copy()
    fr = conv.forward(x, taps="relu1")
    assert fr.outputs.dtype == np.float32 and fr.activations["relu1"].dtype == np.float32
    conv.value_and_grad(x, O.Logit(0), relu="guided")
    np.testing.assert_array_equal(x, before)
    with pytest.raises(InputError, match="expected"):
        conv.forward(np.zeros((2, 3, 12, 12), np.float32))
    with pytest.raises(InputError, match="relu='leaky'"):
        conv.value_and_grad(x, O.Logit(0), relu="leaky")
    with pytest.raises(ObjectiveError, match="out of range"):
        conv.value_and_grad(x, O.Logit(3))
    with pytest.raises(ObjectiveError, match="unknown objective"):
        conv.value_and_grad(x, "logit")  # type: ignore[arg-type]
    with pytest.raises(LayerNotFoundError, match="did you mean 'relu2'"):
        conv.layer_value_and_grad(x, O.Logit(0), "relu22")


def test_factories_reject_bad_arguments():
    with pytest.raises(InputError, match="'resnet' is unknown"):
        reference_model("resnet")
    with pytest.raises(InputError, match=r"takes \(T,\) token ids"):
        reference_model("tokens", input_shape=(4, 2))
    with pytest.raises(InputError, match="too small"):
        reference_model(input_shape=(6, 6, 1))
    with pytest.raises(InputError, match="no 'fc2/kernel'"):
        ReferenceAdapter.from_weights(
            {k: v for k, v in models.small_weights().items() if not k.startswith("fc2")}
        )
    with pytest.raises(InputError, match="repeated: r"):
        ReferenceNetwork([Flatten("r"), ReLU("r")], (3,))
    with pytest.raises(InputError, match="ReferenceNetwork"):
        ReferenceAdapter("not a network")  # type: ignore[arg-type]


def test_weights_are_copies_and_read_only(small_weights):
    ref = ReferenceAdapter.from_weights(small_weights)
    kernel = ref.network.layers[0].kernel
    assert not kernel.flags.writeable
    assert not np.shares_memory(kernel, small_weights["conv1/kernel"])


def test_objective_seed_sums_to_one_per_sample():
    act = np.zeros((2, 5, 5, 3))
    seed = objective_seed(O.Channel("a", [0, 2], crop=1), act)
    np.testing.assert_allclose(seed.sum(axis=(1, 2, 3)), [1, 1])
    assert seed[0, 0].sum() == 0 and seed[1, 2, 2, 2] == pytest.approx(1 / 9)
