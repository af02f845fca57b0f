"""innersight.port: Keras <-> torch ports compute the same function, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.models import digits_cnn, seed_convnet
from innersight.models.digits import resize_matrix

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
from torch import nn  # noqa: E402

L = keras.layers


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def torch_out(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def real_photos(size=150):
    """Two real photographs resized to size x size, 0..1 (scikit-image's cat if installed)."""
    try:
        from skimage import data

        images = [data.chelsea(), data.astronaut()]
    except ImportError:
        from sklearn.datasets import load_sample_images

        images = list(load_sample_images().images)
    out = []
    for img in images:
        rows, cols = resize_matrix(img.shape[0], size), resize_matrix(img.shape[1], size)
        out.append(np.einsum("ij,jkc,lk->ilc", rows, img / 255.0, cols, optimize=True))
    return np.stack(out).astype(np.float32)


def assert_same_function(src, dst, x, *, tol=1e-5):
    """Outputs AND every layer that layer_map pairs agree to ``tol`` (relative L2)."""
    mapping = port.layer_map(src, dst)
    a, b = ins.wrap(src), ins.wrap(dst)
    fa = a.forward(x, taps=list(mapping))
    fb = b.forward(x, taps=list(mapping.values()))
    assert rel_err(fa.outputs, fb.outputs) < tol
    for name_a, name_b in mapping.items():
        act_a, act_b = fa.activations[name_a], fb.activations[name_b]
        assert act_a.shape == act_b.shape, (name_a, name_b)
        assert rel_err(act_a, act_b) < tol, (name_a, name_b, rel_err(act_a, act_b))
    return mapping


def kind(layer):
    """Layer class, with ReLU/Softmax layers counted as Activation layers (what a port builds)."""
    return "Activation" if isinstance(layer, (L.ReLU, L.Softmax)) else type(layer).__name__


# -- a model with every supported layer type -------------------------------------------------------
def every_layer_keras(head: str, seed: int = 0):
    """Same padding, strides 2 (asymmetric 'same'), dilation 2, groups 2, BN with real stats,
    max/avg pools, tanh/sigmoid/softmax/relu fused and separate, dropout, GAP or Flatten+BN1d."""
    keras.utils.set_random_seed(seed)
    layers = [
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv_same"),
        L.BatchNormalization(epsilon=1e-2, name="bn"),
        L.Conv2D(8, 3, strides=2, padding="same", name="conv_s2"),  # 20 -> 10, pads (0, 1)
        L.Activation("tanh", name="tanh"),
        L.Conv2D(8, 4, padding="same", name="conv_even"),  # even kernel: pads (1, 2)
        L.Conv2D(8, 3, dilation_rate=2, groups=2, padding="same", activation="sigmoid", name="dil"),
        L.MaxPooling2D(2, name="maxpool"),
        L.AveragePooling2D(2, strides=1, name="avgpool"),
        L.Conv2D(16, 2, strides=2, name="conv_valid", use_bias=False),
        L.ReLU(name="relu"),
        L.Dropout(0.5, name="drop"),
    ]
    if head == "gap":
        layers += [L.GlobalAveragePooling2D(name="gap"), L.Dense(12, activation="tanh", name="fc")]
    else:
        layers += [
            L.Flatten(name="flatten"),
            L.BatchNormalization(name="bn1d"),
            L.Dense(12, name="fc"),
        ]
    layers += [L.Dense(5, name="logits"), L.Softmax(name="softmax")]
    model = keras.Sequential([keras.Input((20, 20, 4)), *layers], name=f"every_{head}")
    rng = np.random.default_rng(seed)
    for bn in (la for la in model.layers if isinstance(la, L.BatchNormalization)):
        n = bn.moving_mean.shape[0]
        bn.set_weights(
            [
                rng.uniform(0.5, 2, n),
                rng.normal(0, 0.5, n),
                rng.normal(0, 0.3, n),
                rng.uniform(0.2, 3, n),
            ]
        )
    return model


def every_layer_torch(seed: int = 0):
    """A native torch model: nested Sequentials, int and 'same' paddings, BN with real stats."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Conv2d(6, 8, 4, padding="same", groups=2),  # even kernel: asymmetric 'same'
        nn.Sigmoid(),
        nn.Conv2d(8, 8, 3, dilation=2, padding=2, bias=False),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),  # 8 -> 4, symmetric: Keras needs ZeroPadding2D
        nn.AvgPool2d(2, stride=1),
        nn.Dropout(0.2),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(8, 7),
        nn.BatchNorm1d(7),
        nn.ReLU(),
        nn.Linear(7, 4),
        nn.Softmax(dim=1),
    )
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.2, 3)
                m.weight.uniform_(0.5, 2)
                m.bias.normal_(0, 0.5)
    return net.eval()


@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_every_layer_keras_to_torch_and_back(head):
    model = every_layer_keras(head)
    x = np.random.default_rng(1).normal(size=(4, 20, 20, 4)).astype(np.float32)
    net = port.keras_to_torch(model)
    assert not net.training and "conv_same_relu" in dict(net.named_children())
    assert isinstance(net.conv_s2_pad, nn.ZeroPad2d) and net.conv_s2_pad.padding == (0, 1, 0, 1)
    assert net.conv_even_pad.padding == (1, 2, 1, 2) and net.conv_even.padding == (0, 0)
    mapping = assert_same_function(model, net, x)
    assert mapping["conv_same"] == "conv_same_relu" and mapping["softmax"] == "softmax"
    if head == "flatten":  # reordered (h, w, c) vs (c, h, w): no equal-output counterpart
        assert "flatten" not in mapping and "bn1d" not in mapping and mapping["fc"] == "fc"
    back = port.torch_to_keras(net, (20, 20, 4))
    assert [la.name for la in back.layers[1:]] == [la.name for la in model.layers]
    for la, lb in zip(model.layers, back.layers[1:], strict=True):
        assert kind(la) == kind(lb) and la.get_config().get("padding") == lb.get_config().get(
            "padding"
        )
        for wa, wb in zip(la.get_weights(), lb.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
    assert_same_function(model, back, x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # the source's own
def test_every_layer_torch_to_keras_and_back():
    net = every_layer_torch()
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 3)).astype(np.float32)
    model = port.torch_to_keras(net, (16, 16, 3))
    names = [la.name for la in model.layers]
    assert "0_0" in names and "5_pad" in names and "8_1" in names  # nested paths, '.' -> '_'
    assert assert_same_function(ins.wrap(net, input_shape=(16, 16, 3)), model, x)["0.2"] == "0_2"
    again = port.keras_to_torch(model)
    assert_same_function(model, again, x)
    for (na, pa), (nb, pb) in zip(
        net.state_dict().items(), again.state_dict().items(), strict=True
    ):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy(), err_msg=f"{na} vs {nb}")


@pytest.mark.parametrize("direction", ["keras_to_torch", "torch_to_keras"])
def test_digits_cnn_ports_on_real_digits(direction, digits):
    x = digits.x_test[:64]
    if direction == "keras_to_torch":
        src = digits_cnn("keras")
        dst = port.keras_to_torch(src)
    else:
        src = ins.wrap(digits_cnn("torch"), input_shape=(32, 32, 1))
        dst = port.torch_to_keras(src.model, (32, 32, 1))
    assert_same_function(src, dst, x)
    rand = np.random.default_rng(3).random((8, 32, 32, 1), dtype=np.float32)
    assert_same_function(src, dst, rand)
    pred = ins.wrap(dst).predict_classes(x)
    assert (pred == digits.y_test[:64]).mean() > 0.9  # the trained model survived the port


@pytest.mark.parametrize("direction", ["keras_to_torch", "torch_to_keras"])
def test_seed_convnet_ports_on_a_real_photo(direction):
    photos = real_photos(150)
    rand = np.random.default_rng(4).random((2, 150, 150, 3), dtype=np.float32)
    if direction == "keras_to_torch":
        src = seed_convnet("keras", seed=5)
        dst = port.keras_to_torch(src)
    else:
        src = ins.wrap(seed_convnet("torch", seed=5), input_shape=(150, 150, 3))
        dst = port.torch_to_keras(src.model, (150, 150, 3))
    assert_same_function(src, dst, photos)
    assert_same_function(src, dst, rand)


def test_keras_round_trip_keeps_names_and_weights_exactly():
    model = seed_convnet("keras", input_shape=(64, 64, 3), seed=7)
    back = port.torch_to_keras(port.keras_to_torch(model), (64, 64, 3))
    assert [la.name for la in back.layers[1:]] == [la.name for la in model.layers]
    assert back.get_layer("conv1").get_config()["activation"] == "relu"
    for la, lb in zip(model.layers, back.layers[1:], strict=True):
        for wa, wb in zip(la.get_weights(), lb.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)


def test_layer_map_matches_the_reference_builds():
    from innersight.models import DIGITS_SPEC, torch_name

    mapping = port.layer_map(digits_cnn("keras"), digits_cnn("torch"))
    for keras_layer, torch_layer in mapping.items():
        assert torch_name(DIGITS_SPEC, keras_layer) == torch_layer
    assert "flatten" not in mapping  # a 4x4x64 map: same numbers, other order


# -- errors --------------------------------------------------------------------------------------
def test_unsupported_keras_layer_is_named():
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, name="rnn"), L.Dense(2)])
    with pytest.raises(
        ins.CapabilityError, match=r"cannot port layer 'rnn' \(LSTM\) of keras model"
    ):
        port.keras_to_torch(model)


def test_unsupported_torch_module_is_named():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Upsample(scale_factor=2)))
    with pytest.raises(
        ins.CapabilityError, match=r"cannot port layer '1.1' \(Upsample\).*supported: Conv2d"
    ):
        port.torch_to_keras(net, (8, 8, 1))


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (
            lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
            "padding_mode='reflect'",
        ),
        (
            lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, dilation=2)),
            "strides .2, 2. together with dilation",
        ),
        (
            lambda: nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1)),
            r"padding \(1, 1, 1, 1\).*neither 'valid' nor",
        ),
        (lambda: nn.Sequential(nn.Softmax(dim=-1)), "softmax over dim=-1 of a rank-4"),
        (
            lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()),
            "outputs a flattened 6x6x2 feature map",
        ),
    ],
)
def test_torch_configurations_keras_cannot_express(net, message):
    with pytest.raises(ins.CapabilityError, match=message):
        port.torch_to_keras(net(), (8, 8, 1))


def test_non_chains_and_bad_arguments():
    inp = keras.Input((4,))
    branch = keras.Model(inp, L.Add(name="add")([L.Dense(4)(inp), inp]))
    with pytest.raises(ins.CapabilityError, match="not a linear chain: layer 'add'"):
        port.keras_to_torch(branch)
    with pytest.raises(ins.InputError, match="only torch nn.Sequential models.*got Linear"):
        port.torch_to_keras(nn.Linear(2, 2), (2,))
    with pytest.raises(ins.InputError, match=r"input_shape=\(3, 3\) is not a channels-last shape"):
        port.torch_to_keras(nn.Sequential(nn.ReLU()), (3, 3))
    with pytest.raises(ins.InputError, match="expected a Keras model.*got ndarray"):
        port.keras_to_torch(np.zeros(3))
    with pytest.raises(ins.InputError, match="not ports of each other: layer 1 is conv"):
        port.layer_map(digits_cnn("keras"), seed_convnet("keras", input_shape=(64, 64, 1)))


def _keras(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers])


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        (
            lambda: _keras((6,), L.Dense(2, activation="gelu", name="g")),
            ins.CapabilityError,
            r"'g' \(Dense\).*activation 'gelu' is not supported; use one of relu",
        ),
        (
            lambda: _keras((3, 8, 8), L.Conv2D(2, 3, data_format="channels_first", name="cf")),
            ins.CapabilityError,
            "'cf' .*data_format='channels_first'",
        ),
        (
            lambda: _keras((8, 8, 3), L.ReLU(max_value=6.0, name="r6")),
            ins.CapabilityError,
            "'r6' .*ReLU with max_value",
        ),
        (
            lambda: _keras(
                (7, 7, 3), L.MaxPooling2D(2, padding="same", name="mp"), L.Flatten(), L.Dense(2)
            ),
            ins.CapabilityError,
            r"'mp' .*padding \(0, 1, 0, 1\).*asymmetric",
        ),
        (
            lambda: _keras((8, 8, 3), L.Conv2D(2, 3, name="c"), L.Dense(2, name="d")),
            ins.CapabilityError,
            r"'d' \(Dense\).*applied to an \(6, 6, 2\) input.*Flatten first",
        ),
        (
            lambda: _keras((8, 8, 3), L.BatchNormalization(axis=1, name="bn")),
            ins.CapabilityError,
            "'bn' .*batch norm over axis 1",
        ),
        (
            lambda: _keras((None, None, 3), L.Conv2D(2, 3)),
            ins.InputError,
            r"unknown sizes; pass input_shape=\(H, W, C\)",
        ),
    ],
)
def test_keras_configurations_torch_cannot_express(model, error, message):
    with pytest.raises(error, match=message):
        port.keras_to_torch(model())


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (
            lambda: nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)),
            "track_running_stats=False",
        ),
        (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2)), "output_size=2; use output_size=1"),
        (lambda: nn.Sequential(nn.Flatten(0)), "start_dim=0, end_dim=-1; use nn.Flatten()"),
        (
            lambda: nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)),
            r"ceil_mode=True changes its output \(\(4, 4\) instead of \(3, 3\)\)",
        ),
        (lambda: nn.Sequential(nn.AvgPool2d(3, padding=1)), "count_include_pad=True with padding"),
    ],
)
def test_more_torch_modules_keras_cannot_express(net, message):
    with pytest.raises(ins.CapabilityError, match=message):
        port.torch_to_keras(net(), (7, 7, 1))


def test_layer_map_of_two_torch_models_needs_an_input_size():
    with pytest.raises(
        ins.InputError, match="can only be matched for a known input size; pass input_shape"
    ):
        port.layer_map(digits_cnn("torch"), digits_cnn("torch"))
    mapping = port.layer_map(digits_cnn("torch"), digits_cnn("torch"), input_shape=(32, 32, 1))
    assert mapping["conv1"] == "conv1" and mapping["relu3"] == "relu3"
