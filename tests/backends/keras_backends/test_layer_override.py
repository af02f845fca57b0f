"""layer_override on Keras' torch and JAX backends, one fresh interpreter per backend (Keras fixes
its backend when it is imported): the override gradient at the real activations is
layer_value_and_grad's, the residual model's closed form holds, layer integrated gradients of
the small net and of the token model (integer ids, padding-id baseline) equals the torch
adapter's on the twins, and JAX refuses guided ReLUs by name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 300

SCRIPT = r"""
import numpy as np
import torch
import keras
import innersight as ins
from innersight.core import CapabilityError, input_tap, objectives as O
from innersight.plugins.layer_integrated_gradients import LayerIntegratedGradients
from tests import models
from tests.backends.keras.test_layer_override import parts, residual_model

weights = models.small_weights(seed=0)
adapter = ins.wrap(models.keras_small(weights))
assert adapter.keras_backend == keras.backend.backend()
x = np.random.default_rng(0).random((4, 12, 12, 3)).astype(np.float32)
targets = [0, 1, 2, 0]
for objective in (O.Logit(targets), O.Channel("conv2", 1)):
    for layer in ("conv1", "conv2", "fc1"):
        values, acts, grads = adapter.layer_value_and_grad(x, objective, layer)
        v, g = adapter.layer_override_value_and_grad(x, objective, layer, acts)
        np.testing.assert_allclose(v, values, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(g, grads, rtol=1e-6, atol=1e-7)
tap = input_tap("fc1")
acts = adapter.forward(x, taps=[tap]).activations[tap]
_, _, grads = adapter.layer_value_and_grad(x, O.Logit(targets), "flatten")
_, g = adapter.layer_override_value_and_grad(x, O.Logit(targets), tap, acts)
np.testing.assert_allclose(g, grads, rtol=1e-6, atol=1e-7)

model = residual_model()
xr = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
r = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
t = [2, 0, 1]
inner, skip, (w, b) = parts(model, xr)
v, g = ins.wrap(model).layer_override_value_and_grad(xr, O.Logit(t), input_tap("act"), r)
np.testing.assert_allclose(v, ((np.maximum(r, 0) + inner + skip) @ w + b)[np.arange(3), t], rtol=1e-5)
np.testing.assert_allclose(g, w[:, t].T * (r > 0), rtol=1e-6)

params = dict(layer="conv2", target=targets, baseline=0.2, steps=6, progress=False)
k = LayerIntegratedGradients().run(adapter, x, **params)
params["layer"] = "relu2"
ref = LayerIntegratedGradients().run(ins.wrap(models.torch_small(weights)), x, **params)
assert np.abs(k.values - ref.values).max() <= 1e-5 * np.abs(ref.values).max()

from tests.plugins.test_layer_integrated_gradients import TokenNet, keras_token_twin, token_adapter

ids = np.random.default_rng(0).integers(1, 11, (3, 7)).astype(np.int64)
ids[:, -2:] = 0
net = TokenNet().eval()
params = dict(layer="emb", target=[0, 1, 2], baseline=0, steps=20, reduce="sum", progress=False)
t = LayerIntegratedGradients().run(token_adapter(net), ids, **params)
k = LayerIntegratedGradients().run(token_adapter(keras_token_twin(net)), ids, **params)
assert np.abs(k.values - t.values).max() <= 1e-5 * np.abs(t.values).max()

if keras.backend.backend() == "jax":
    try:
        adapter.layer_override_value_and_grad(x, O.Logit(0), "fc1", acts[:, :8], relu="guided")
    except CapabilityError as err:
        assert "jax backend" in str(err) and "relu='plain'" in str(err), err
    else:
        raise AssertionError("guided ReLUs through a replaced layer were not refused on JAX")
print("OK")
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_layer_override_on_keras_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0 and "OK" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
