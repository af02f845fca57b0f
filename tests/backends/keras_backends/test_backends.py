"""The Keras adapter on every Keras 3 backend: one ``pytest`` process per backend.

Keras fixes its backend (``KERAS_BACKEND``) when it is imported, so ``suite/`` runs once per
backend in a fresh interpreter, bounded by :data:`TIMEOUT`; a failing sub-run's failures are
the assertion message here. The sub-runs also write every technique's values, and the last test
compares Keras-TF, Keras-torch and Keras-JAX with each other directly (each one is compared with
native torch inside its own sub-run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
SUITE = Path(__file__).parent / "suite"
BACKENDS = ("tensorflow", "torch", "jax")
#: seconds for one backend's sub-suite (about 20 s on torch, 30 s on TensorFlow and 90 s on
#: JAX, which compiles every request, on the 2-core CI machine).
TIMEOUT = 600
#: rel_l2 between two Keras backends, on the worst input: twice the per-backend bound against
#: native torch (suite/test_techniques.py: TIE_FLIP for gradients, else the documented ones).
CROSS_BACKEND = 4e-3


def _missing(backend: str) -> str | None:
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend]
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'innersight[keras]')"
    return None


@pytest.fixture(scope="module")
def parity_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keras-backends")


@pytest.fixture(scope="module")
def runs(parity_dir) -> dict[str, subprocess.CompletedProcess[str]]:
    return {}


def run_suite(backend: str, parity_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "INNERSIGHT_KERAS_SUITE": "1",
        "INNERSIGHT_KERAS_PARITY_DIR": str(parity_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # XLA compiles dominate the JAX run; the fresh adapters of the state checks compile
        # the very same programs again, which this run-local cache serves instead
        "JAX_COMPILATION_CACHE_DIR": str(parity_dir / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider", "-rfE"]
    try:
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        pytest.fail(f"the {backend} sub-suite ran past {TIMEOUT} s; its output:\n{out[-4000:]}")


def failures(proc: subprocess.CompletedProcess[str]) -> str:
    """The sub-run's short summary (FAILED/ERROR lines) and the end of its output."""
    out = proc.stdout + proc.stderr
    summary = [ln for ln in out.splitlines() if re.match(r"(FAILED|ERROR) ", ln)]
    return "\n".join(summary) + "\n--- last output ---\n" + out[-6000:]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_suite_passes_on(backend, runs, parity_dir):
    reason = _missing(backend)
    if reason is not None:
        pytest.skip(reason)
    proc = runs[backend] = run_suite(backend, parity_dir)
    assert proc.returncode == 0, f"KERAS_BACKEND={backend}: the sub-suite failed:\n" + failures(
        proc
    )
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-2000:]


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """Worst per-input ||a - b|| / ||a|| (inputs along the first axis)."""
    a64, b64 = (np.asarray(v, dtype=np.float64).reshape(len(a), -1) for v in (a, b))
    norms = np.maximum(np.linalg.norm(a64, axis=1), 1e-30)
    return float((np.linalg.norm(a64 - b64, axis=1) / norms).max())


@pytest.mark.slow
def test_the_keras_backends_agree_with_each_other(runs, parity_dir):
    ran = [b for b in BACKENDS if b in runs and runs[b].returncode == 0]
    if len(ran) < 2:
        pytest.skip(f"fewer than two backends' sub-suites passed here: {ran}")
    names = sorted({p.name.split("--", 1)[1] for p in parity_dir.glob("*.npy")})
    assert len(names) >= 10, names
    report = []
    for name in names:
        values = {b: np.load(parity_dir / f"{b}--{name}") for b in ran}
        first = ran[0]
        for other in ran[1:]:
            worst = _rel_l2(values[first], values[other])
            report.append(f"{name}: {first} vs {other} rel_l2 {worst:.2e}")
            assert worst <= CROSS_BACKEND, "\n".join(report)


def test_an_unsupported_keras_backend_is_refused_naming_the_supported_ones():
    """Keras' numpy backend (inference only) is not served: the error names the three that
    are and how to pick one, and the torch backend never sees the model."""
    pytest.importorskip("keras")  # the model is built in a subprocess: skip without Keras
    code = (
        "import keras, innersight\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        "try:\n"
        "    innersight.wrap(model)\n"
        "except innersight.CapabilityError as err:\n"
        "    print('REFUSED', err)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "numpy", "INNERSIGHT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "REFUSED Keras model 'sequential' runs on the 'numpy' backend; innersight supports the "
        "tensorflow, torch, jax backends. Set KERAS_BACKEND to one of them before importing "
        "keras (e.g. KERAS_BACKEND=jax)"
    ) in proc.stdout
