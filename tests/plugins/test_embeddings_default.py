"""The embeddings' default layer is what the final dense layer really receives, even when
functional operations (F.relu, pooling, flatten in forward()) make it."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import LayerNotFoundError, is_input_tap
from innersight.plugins.embeddings import layer_features
from innersight.testing import ReferenceAdapter, ReferenceNetwork
from innersight.testing.reference_layers import Conv2D, Dense, GlobalAvgPool2D, ReLU

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class FunctionalHead(nn.Module):
    """conv1..conv4, then F.relu -> adaptive average pool -> flatten -> fc in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.conv3 = nn.Conv2d(6, 6, 3)
        self.conv4 = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        x = F.adaptive_avg_pool2d(F.relu(self.conv4(x)), 2)
        return self.fc(torch.flatten(x, 1))


def images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).random((n, 12, 12, 3), dtype=np.float32)


def test_features_are_the_pooled_vector_the_linear_layer_receives():
    torch.manual_seed(0)
    model = FunctionalHead().eval()
    x = images()
    feats = layer_features(ins.wrap(model), x, progress=False)
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        h = F.relu(model.conv3(F.relu(model.conv2(F.relu(model.conv1(t))))))
        pooled = torch.flatten(F.adaptive_avg_pool2d(F.relu(model.conv4(h)), 2), 1).numpy()
    np.testing.assert_allclose(feats.values, pooled, rtol=1e-6, atol=1e-7)
    assert feats.layer == "fc@input" and feats.shape == (32,)
    assert "tapped as 'fc@input': no layer outputs it" in feats.rule and "'conv4'" in feats.rule
    ex = ins.explain("embeddings", model, x, progress=False)
    assert ex.meta["layer"] == "fc@input" and ex.meta["feature_shape"] == [32]
    again = ins.explain("embeddings", model, x, layer=ex.meta["layer"], progress=False)
    np.testing.assert_array_equal(again.values, ex.values)


def test_a_layer_that_outputs_the_input_gives_its_name():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="fc"),
        ]
    )
    feats = layer_features(ins.wrap(model), images(), progress=False)
    assert feats.layer == "gap"
    assert "input of the final dense layer 'fc' " in feats.rule and "output of 'gap'" in feats.rule
    gap = ins.wrap(model).forward(images(), taps=["gap"]).activations["gap"]
    np.testing.assert_array_equal(feats.values, gap)


class NoInputTaps(ReferenceAdapter):
    """A third-party adapter that serves plain layer taps only."""

    def check_taps(self, taps):
        taps = super().check_taps(taps)
        for tap in taps:
            if is_input_tap(tap):
                raise LayerNotFoundError(f"no input taps here: {tap!r}")
        return taps


def test_adapter_without_input_taps_falls_back_and_says_so():
    rng = np.random.default_rng(1)
    layers = [
        Conv2D("conv", rng.standard_normal((3, 3, 3, 4)), np.zeros(4)),
        ReLU("relu"),
        GlobalAvgPool2D("gap"),
        Dense("fc", rng.standard_normal((4, 3)), np.zeros(3)),
    ]
    network = ReferenceNetwork(layers, (12, 12, 3), name="no_taps")
    served = layer_features(ReferenceAdapter(network), images(), progress=False)
    assert served.layer == "gap" and "which is the output of 'gap'" in served.rule
    fallback = layer_features(NoInputTaps(network), images(), progress=False)
    assert fallback.layer == "gap"
    assert fallback.rule.startswith(
        "default: the output of 'gap', the layer listed before the final dense layer 'fc'; "
        "this numpy adapter does not serve input taps"
    )
    np.testing.assert_array_equal(fallback.values, served.values)
