"""The Keras backend as a plugin: found through the hook, lazy imports, what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import innersight  # noqa: E402
from innersight.backends.keras.adapter import KerasAdapter  # noqa: E402
from innersight.core.errors import CapabilityError, InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
L = keras.layers


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=120,
    )


def test_wrap_returns_keras_adapter_through_the_plugin_manager(keras_small):
    adapter = innersight.wrap(keras_small)
    assert isinstance(adapter, KerasAdapter)
    assert adapter.backend == "keras"
    assert adapter.name == "small_net"
    assert adapter.input_shape == (12, 12, 3)
    assert {str(c) for c in adapter.capabilities} == {
        "cropped_forward",
        "forward",
        "layer_taps",
        "input_gradients",
        "layer_gradients",
        "relu_override",
        "several_inputs",
        "layer_override",
        "deeplift",
        "lrp",
    }
    assert isinstance(adapter, innersight.ModelAdapter)


def test_import_innersight_imports_neither_keras_nor_tensorflow():
    proc = _run(
        """
        import sys
        import innersight
        import innersight.backends.keras
        innersight.get_plugin_manager()
        loaded = sorted(m for m in ("keras", "tensorflow") if m in sys.modules)
        print("LOADED", loaded)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


def test_keras_hook_is_asked_before_every_other_backend():
    hook = innersight.get_plugin_manager().pm.hook.innersight_wrap_model
    impls = hook.get_hookimpls()  # pluggy calls the last one first
    assert impls[-1].plugin_name == "innersight.backends.keras"
    assert impls[-1].tryfirst


def test_other_objects_are_left_to_other_backends():
    from innersight.backends.keras import innersight_wrap_model

    assert innersight_wrap_model(model=object(), options={}) is None
    assert innersight_wrap_model(model=np.zeros(3), options={}) is None


def test_unknown_option_lists_the_valid_ones(keras_small):
    with pytest.raises(InputError, match=r"unknown option 'input_layout'.*valid options: logits"):
        innersight.wrap(keras_small, input_layout="NHWC")
    with pytest.raises(InputError, match=r"did you mean 'logits'"):
        innersight.wrap(keras_small, logit=True)


def test_invalid_logits_value(keras_small):
    with pytest.raises(InputError, match=r"logits='yes' is not valid; use 'auto', True or False"):
        innersight.wrap(keras_small, logits="yes")


def test_unbuilt_model_is_refused_with_how_to_build_it():
    model = keras.Sequential([L.Dense(3)])
    with pytest.raises(InputError, match=r"not built.*keras.Input\(shape\).*call it once"):
        innersight.wrap(model)


def test_model_built_by_calling_it_once_is_served():
    model = keras.Sequential([L.Dense(3)])
    x = np.random.default_rng(0).random((2, 5), dtype=np.float32)
    model(x)
    adapter = innersight.wrap(model)
    assert adapter.input_shape == (5,)
    np.testing.assert_allclose(adapter.forward(x).outputs, model(x).numpy(), rtol=1e-6)


def test_subclassed_model_is_refused_with_a_functional_recipe():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(CapabilityError, match=r"subclassed Keras model Net.*keras.Model\(inputs"):
        innersight.wrap(net)


def test_multi_output_model_is_refused():
    inp = keras.Input((4,))
    model = keras.Model(inp, [L.Dense(2)(inp), L.Dense(3)(inp)])
    with pytest.raises(CapabilityError, match=r"has 2 outputs; expected exactly one"):
        innersight.wrap(model)


def test_a_bare_layer_is_refused_with_how_to_make_a_model():
    layer = L.Dense(2)
    with pytest.raises(InputError, match=r"Keras Dense layer, expected a model.*keras.Sequential"):
        innersight.wrap(layer)
