"""Exact incremental occlusion on Keras 3 over torch (``KERAS_BACKEND=torch``).

Keras fixes its backend when it is first imported, so the models run in a fresh interpreter
(the style of tests/backends/keras_backends), bounded by :data:`TIMEOUT`. There the Keras
adapter runs the cropped pass eagerly (no traced program, unlike TensorFlow); the incremental
map must equal naive occlusion (one full forward per occluded image, itself checked against a
brute-force loop in test_occlusion.py) within 1e-5 of the map's largest value, on the seeds'
convnet and on a functional residual model with "same" padding, stride 2, dilation, BN, a
"same" max pool, an Add and a depthwise conv; the scores of the unoccluded inputs must agree,
and the user's model must come back unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: seconds for the whole sub-run (about 25 s on the 2-core CI machine, mostly imports and the
#: seeds' convnet's 325 eager naive forwards).
TIMEOUT = 300
RTOL = 1e-5  # equal to naive occlusion within 1e-5 of the map's largest value

CHILD = r"""
import json, sys
import numpy as np
import torch  # torch before keras
import keras
import innersight as ins
from innersight.models import seed_convnet
from innersight.testing import diff, snapshot

assert keras.backend.backend() == "torch", keras.backend.backend()
L = keras.layers


def residual():
    keras.utils.set_random_seed(0)
    inp = keras.Input((40, 40, 3))
    x = L.Conv2D(8, 5, strides=2, padding="same")(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    y = L.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = L.Add()([x, L.Conv2D(8, 3, padding="same")(y)])
    x = L.Conv2D(12, 1)(L.DepthwiseConv2D(3, strides=2, padding="same")(L.Activation("silu")(x)))
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(L.AveragePooling2D(2)(x))))
    bn = model.layers[2]
    rng = np.random.default_rng(0)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma + rng.random(8), beta + rng.random(8), rng.random(8), 0.5 + rng.random(8)])
    return model


def compare(model, x, **kw):
    before = snapshot(model)
    runs = {m: ins.explain("occlusion", model, x, progress=False, method=m, **kw)
            for m in ("naive", "incremental")}
    naive, inc = runs["naive"], runs["incremental"]
    scale = float(np.abs(naive.values).max())
    return {
        "method": inc.meta["method"],
        "reason": inc.meta["method_reason"],
        "scale": scale,
        "rel": float(np.abs(inc.values - naive.values).max() / scale),
        "score_rel": float(np.max(np.abs(np.subtract(inc.meta["score"], naive.meta["score"]))
                                  / np.abs(naive.meta["score"]))),
        "positions": inc.meta["window_positions"] == naive.meta["window_positions"],
        "changed": diff(before, snapshot(model)),
    }


rng = np.random.default_rng(1)
out = {
    "seed_convnet": compare(seed_convnet("keras"), rng.random((1, 150, 150, 3), np.float32),
                            target=0, window=15, stride=8),
    "residual": compare(residual(), rng.random((2, 40, 40, 3), np.float32),
                        target=[0, 2], window=7, stride=3, baseline=0.5),
}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    for module in ("keras", "torch"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Keras-on-torch occlusion run took longer than {TIMEOUT} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-6000:]
    parsed: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return parsed


@pytest.mark.parametrize("model", ["seed_convnet", "residual"])
def test_incremental_equals_naive_on_keras_over_torch(results, model):
    got = results[model]
    assert got["method"] == "incremental", got["reason"]
    assert got["scale"] > 1e-5  # the map is not trivially zero
    assert got["rel"] <= RTOL
    assert got["score_rel"] <= 1e-6
    assert got["positions"]
    assert got["changed"] == []
