"""The torch backend as a plugin: found through the manager, lazy about importing torch."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import innersight  # noqa: E402
from innersight.backends import torch as torch_backend  # noqa: E402
from innersight.backends.torch.adapter import TorchAdapter  # noqa: E402
from innersight.core import Capability  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402
from tests import models  # noqa: E402


@pytest.fixture
def wrap():
    with warnings.catch_warnings():  # other built-in plugins may be unfinished in a checkout
        warnings.simplefilter("ignore")
        innersight.get_plugin_manager()
    return innersight.wrap


def test_wrap_returns_torch_adapter(wrap, small_weights, images):
    net = models.torch_small(small_weights)
    adapter = wrap(net, input_shape=(12, 12, 3))
    assert isinstance(adapter, TorchAdapter) and isinstance(adapter, innersight.ModelAdapter)
    assert adapter.backend == "torch" and adapter.name == "Sequential"
    assert adapter.capabilities == {
        Capability.FORWARD,
        Capability.LAYER_TAPS,
        Capability.INPUT_GRADIENTS,
        Capability.LAYER_GRADIENTS,
        Capability.RELU_OVERRIDE,
        Capability.CROPPED_FORWARD,
        Capability.SEVERAL_INPUTS,
        Capability.LAYER_OVERRIDE,
        Capability.DEEPLIFT,
        Capability.LRP,
    }
    assert adapter.model is net
    assert wrap(adapter) is adapter
    with torch.no_grad():
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(adapter.forward(images).outputs, expected, rtol=1e-6)


def test_hook_declines_other_models():
    assert torch_backend.innersight_wrap_model(model=object(), options={}) is None
    assert torch_backend.innersight_wrap_model(model=np.zeros(3), options={}) is None
    fake_keras = type("Model", (nn.Module,), {"__module__": "keras.src.models.model"})
    assert torch_backend.innersight_wrap_model(model=fake_keras(), options={}) is None


def test_import_innersight_does_not_import_torch():
    code = "import sys, innersight; print('torch' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_option_lists_valid_ones(wrap, small_weights):
    with pytest.raises(
        InputError,
        match=r"unknown option\(s\) 'input_layuot' for the torch "
        r"backend; valid options: input_layout, input_shape, logits, device, layer_layouts, output; "
        r"did you mean 'input_layout'",
    ):
        wrap(models.torch_small(small_weights), input_layuot="NHWC")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"input_layout": "CHW"}, r"input_layout='CHW' is not supported; use 'NCHW'"),
        ({"input_shape": (12, -1, 3)}, r"input_shape=\(12, -1, 3\) is not a shape; pass positive"),
        ({"input_shape": "12x12"}, r"input_shape='12x12' is not a shape"),
        ({"logits": "yes"}, r"logits='yes' is not supported; use 'auto', True or False"),
        ({"logits": 1}, r"logits=1 is not supported"),
        ({"device": "gpu:7"}, r"device='gpu:7' is not a torch device; pass e.g. 'cpu'"),
    ],
)
def test_invalid_options(small_weights, options, message):
    with pytest.raises(InputError, match=message):
        TorchAdapter(models.torch_small(small_weights), **options)


def test_logits_true_needs_a_final_activation(small_weights):
    with pytest.raises(
        CapabilityError,
        match=r"logits=True, but Sequential does not end in a "
        r"detectable Softmax/LogSoftmax/Sigmoid.*use logits=False",
    ):
        TorchAdapter(models.torch_small(small_weights), logits=True)
    nested = nn.Sequential(models.torch_small(small_weights), nn.Sequential(nn.Softmax(dim=1)))
    assert TorchAdapter(nested, logits=True).options.logits_from == "1.0"


def test_not_a_module():
    with pytest.raises(InputError, match=r"TorchAdapter needs a torch nn\.Module, got list"):
        TorchAdapter([1, 2])


def test_device_defaults_to_parameters(small_weights):
    adapter = TorchAdapter(models.torch_small(small_weights))
    assert adapter.options.device == torch.device("cpu")
    assert adapter.options.dtype == torch.float32
    assert TorchAdapter(nn.ReLU()).options.device == torch.device("cpu")
    assert "TorchAdapter Sequential (NCHW, cpu" in repr(adapter)
