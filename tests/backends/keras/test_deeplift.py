"""The Keras adapter's ``deeplift_value_and_grad``: TensorFlow in this process (an RNN's ReLU
refused, Custom and layer objectives, several inputs), Keras on torch and on JAX in
subprocesses (Keras fixes its backend at import), each against native torch and Captum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import innersight as ins
from innersight.core import CapabilityError, ObjectiveError
from innersight.core.objectives import Channel, Custom, Logit
from tests import models

ROOT = Path(__file__).resolve().parents[3]
TARGETS = np.array([0, 1, 2, 0])

# Run in a fresh interpreter on the Keras backend KERAS_BACKEND names; prints one JSON line.
SCRIPT = """
import json
import warnings
import numpy as np, torch
import keras
import innersight as ins
from innersight.core.objectives import Logit
from innersight.testing import diff as changes, snapshot
from tests import models
from tests.plugins._deeplift_models import captum, keras_mlp, mlp, rel_error
w = models.small_weights(0)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 12, 12, 3)).astype(np.float32)
b = (0.3 * rng.standard_normal((4, 12, 12, 3))).astype(np.float32)
t = Logit(np.array([0, 1, 2, 0]))
keras_model = models.keras_small(w, softmax=True)
before = snapshot(keras_model)
diff, m = ins.wrap(keras_model).deeplift_value_and_grad(x, b, t)
out = {"changes": changes(before, snapshot(keras_model))}
ref_diff, ref = ins.wrap(models.torch_small(w)).deeplift_value_and_grad(x, b, t)
out["rel"] = rel_error((x - b) * m, (x - b) * ref)
out["diff_rel"] = rel_error(diff, ref_diff)
for act in ("sigmoid", "tanh", "elu"):
    net = mlp(act)
    xs, bs = rng.standard_normal((4, 6)).astype(np.float32), np.zeros((4, 6), np.float32)
    _, ms = ins.wrap(keras_mlp(net, act)).deeplift_value_and_grad(xs, bs, t)
    out[act] = rel_error((xs - bs) * ms, captum("deeplift", net, xs, bs, [0, 1, 2, 0])[0])
print("RESULT " + json.dumps(out))
"""


def run_on(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((4, 12, 12, 3)).astype(np.float32),
        (0.3 * rng.standard_normal((4, 12, 12, 3))).astype(np.float32),
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras_on_other_backends_equals_native_torch_and_captum(backend):
    """ReLU + MaxPool + a fused softmax (read at its logit) against native torch; sigmoid,
    tanh and ELU MLPs against Captum; the model left as it was."""
    pytest.importorskip(backend)
    result = run_on(backend)
    assert result["rel"] <= 1e-5 and result["diff_rel"] <= 1e-5, result
    # The secant slope (f(u) - f(u0)) / (u - u0) divides float32 differences, ill-conditioned
    # where u is close to u0: a sigmoid that rounds unlike torch's by 1e-7 moves it by up to
    # 4e-5 of the largest attribution on this MLP (XLA's on JAX; TensorFlow's gives 4e-5 too).
    smooth = 1e-4 if backend == "jax" else 1e-5
    assert max(result[a] for a in ("sigmoid", "tanh", "elu")) <= smooth, result
    assert result["changes"] == []


def test_an_unknown_keras_backend_is_refused_with_advice(small_weights, images, monkeypatch):
    x, b = images
    adapter = ins.wrap(models.keras_small(small_weights))
    monkeypatch.setattr(adapter, "keras_backend", "openvino")  # a backend without gradients
    with pytest.raises(CapabilityError, match="openvino backend.*KERAS_BACKEND=tensorflow"):
        adapter.deeplift_value_and_grad(x, b, Logit(0))


def test_relu_inside_an_rnn_is_refused(images):
    import keras

    rnn = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.SimpleRNN(4, activation="relu"), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    with pytest.raises(CapabilityError, match="nested function or control flow.*integrated_grad"):
        ins.wrap(rnn).deeplift_value_and_grad(x, np.zeros_like(x), Logit(0))
    ig = ins.explain("integrated_gradients", rnn, x, target=0, method="riemann_trapezoid")
    assert np.isfinite(ig.values).all()  # the advice


def test_custom_score_is_the_difference_of_two_class_maps(small_weights, images):
    x, b = images
    adapter = ins.wrap(models.keras_small(small_weights))
    d0, m0 = adapter.deeplift_value_and_grad(x, b, Logit(0))
    d1, m1 = adapter.deeplift_value_and_grad(x, b, Logit(1))
    d, m = adapter.deeplift_value_and_grad(x, b, Custom(lambda s: s[:, 0] - s[:, 1]))
    np.testing.assert_allclose(m, m0 - m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d, d0 - d1, rtol=1e-5, atol=1e-6)


def test_layer_objectives_are_refused(small_weights, images):
    x, b = images
    with pytest.raises(ObjectiveError, match="explains output scores"):
        ins.wrap(models.keras_small(small_weights)).deeplift_value_and_grad(
            x, b, Channel("conv1", 0)
        )


@pytest.mark.filterwarnings("ignore::UserWarning:captum.*")
def test_several_inputs_match_captum_on_the_torch_twin():
    """Two inputs, packed by ``innersight.explain``, a baseline each; Captum's tuple inputs."""
    import keras
    import torch
    from captum.attr import DeepLift as CaptumDeepLift

    from tests.plugins._deeplift_models import rel_error

    a, b = keras.Input((4,)), keras.Input((3,))
    dense = [keras.layers.Dense(5), keras.layers.Dense(5), keras.layers.Dense(2)]
    hidden = keras.layers.Activation("relu")(keras.layers.Add()([dense[0](a), dense[1](b)]))
    model = keras.Model([a, b], dense[2](hidden))
    twin = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 5), "b": torch.nn.Linear(3, 5)})
    twin["c"], twin["relu"] = torch.nn.Linear(5, 2), torch.nn.ReLU()
    for name, layer in zip("abc", dense, strict=True):
        kernel, bias = layer.get_weights()
        twin[name].weight.data, twin[name].bias.data = torch.tensor(kernel.T), torch.tensor(bias)

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = twin

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.m["c"](self.m["relu"](self.m["a"](x) + self.m["b"](y)))

    rng = np.random.default_rng(6)
    x1, x2 = (rng.standard_normal((3, n)).astype(np.float32) for n in (4, 3))
    manager = ins.get_plugin_manager()
    name = "innersight.plugins.deeplift"
    added = name not in manager.infos
    if added:
        manager.register(__import__(name, fromlist=["_"]), name, distribution="innersight")
    try:
        ex = ins.explain("deeplift", model, (x1, x2), target=[0, 1, 0], baseline=(0.0, 0.5))
    finally:
        if added:
            manager.unregister(name)
    refs = CaptumDeepLift(Twin().eval()).attribute(
        (torch.tensor(x1), torch.tensor(x2)), (0.0, 0.5), target=[0, 1, 0]
    )
    for ours, ref in zip(ex.values, refs, strict=True):
        assert rel_error(ours, ref.detach().numpy()) <= 1e-5
