"""LRP on Keras-on-torch and Keras-on-JAX, one fresh interpreter per backend (Keras fixes its
backend when imported): the Keras twin agrees with the native torch model for every rule and
composite of tests/backends/keras/test_lrp.py, the residual Add model with the explicit numpy
LRP, a linear score with the difference of two logits, and the model is left as it was."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import numpy as np
import torch
import keras
from innersight.backends.keras.adapter import KerasAdapter
from innersight.backends.torch.adapter import TorchAdapter
from innersight.core import objectives
from innersight.core.lrp import Epsilon, single_rule
from innersight.testing import diff, snapshot
from tests.backends.keras import test_lrp as K

assert keras.backend.backend() == {backend!r}
net = K.torch_net()
twin = K.keras_twin(net)
ta, ka = TorchAdapter(net), KerasAdapter(twin)
x = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
before = snapshot(twin)
worst = 0.0
for name, comp in K.RULES.items():
    _, r1 = ta.lrp_relevance(x, objectives.Logit(K.TARGETS), comp)
    _, r2 = ka.lrp_relevance(x, objectives.Logit(K.TARGETS), comp)
    worst = max(worst, K.rel_error(r2, r1))
print("TWINS", worst)
print("UNCHANGED", diff(before, snapshot(twin)) == [])
model = K.residual_model()
xr = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
t = np.array([0, 2, 1])
_, rel = KerasAdapter(model).lrp_relevance(xr, objectives.Logit(t), single_rule(Epsilon(0.01)))
ref = np.stack(
    [K.numpy_residual_lrp(model, a.astype(np.float64), b, 0.01) for a, b in zip(xr, t)]
)
print("RESIDUAL", K.rel_error(rel, ref))
comp = K.RULES["epsilon_plus"]
_, c = ka.lrp_relevance(x, objectives.Custom(lambda s: s[:, 3] - s[:, 1]), comp)
_, c3 = ka.lrp_relevance(x, objectives.Logit(3), comp)
_, c1 = ka.lrp_relevance(x, objectives.Logit(1), comp)
print("CUSTOM", K.rel_error(c, c3 - c1))
"""


def _number(out: str, key: str) -> float:
    found = re.search(rf"^{key} (\S+)$", out, re.M)
    assert found, out[-3000:]
    return float(found.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_lrp_on_the_keras_backend(backend):
    if importlib.util.find_spec(backend) is None or importlib.util.find_spec("keras") is None:
        pytest.skip(f"{backend} or keras is not installed")
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=backend)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert _number(out, "TWINS") < 1e-5
    assert _number(out, "RESIDUAL") < 1e-5
    assert _number(out, "CUSTOM") < 1e-5
    assert "UNCHANGED True" in out
