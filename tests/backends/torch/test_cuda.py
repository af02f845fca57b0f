"""Every technique on a CUDA model gives the CPU answer and leaves the model as it was.

Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/backends/torch/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import innersight as ins  # noqa: E402
from innersight.models import digits_cnn, digits_data  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402

# Small settings; every technique runs with the same parameters on both devices.
PARAMS = {
    "occlusion": {"window": 8, "stride": 4},
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 16, "method": "riemann_trapezoid"},
    "filter_maximization": {"layer": "relu2", "filters": [0, 1, 2, 3], "steps": 20},
    "class_maximization": {"classes": [0, 3], "steps": 30},
    "embeddings": {"method": "pca"},
}
SIZE = {"size": (32, 32, 1)}
# float32 on different kernels (cuDNN vs oneDNN). Measured on an H200 with TF32 off: every
# technique within 6.4e-7 of the CPU's maximum, except SmoothGrad at 3.2e-3 (likely a noisy copy
# landing on a near-tied max-pool window, whose gradient a 1e-7 rounding difference routes to a
# neighbouring pixel). The maximizations iterate 20-30 normalised steps, so they may drift more.
TOLERANCE = {"filter_maximization": 1e-2, "class_maximization": 1e-2, "smoothgrad": 1e-2}
DEFAULT_TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def full_float32():
    """TF32 off while comparing: with torch's default (cuDNN convolutions in TF32), gradients
    on these digits differ from the CPU by up to 5% of their maximum at a few pixels (measured
    on an H200: saliency 4.8%, guided backprop 2.6%, SmoothGrad 1.5%, integrated gradients
    1.0%), which would hide a real adapter error."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def pair():
    cpu = digits_cnn("torch")
    gpu = digits_cnn("torch").to("cuda")
    return cpu, gpu


@pytest.fixture(scope="module")
def x():
    return digits_data().x_test[:6]


def _values(ex):
    v = ex.values
    return (
        {k: np.asarray(a, np.float64) for k, a in v.items()}
        if isinstance(v, dict)
        else {"values": np.asarray(v, np.float64)}
    )


@pytest.mark.parametrize(
    "name",
    sorted(n for n, t in ins.techniques().items() if type(t).__module__.startswith("innersight.")),
)
def test_cuda_matches_cpu_and_leaves_the_model_alone(name, pair, x):
    cpu, gpu = pair
    tech = ins.techniques()[name]
    params = dict(PARAMS.get(name, {}))
    if not tech.needs_inputs:
        params.update(SIZE)
    inputs = x if tech.needs_inputs else None
    before = snapshot(gpu)
    a = ins.explain(name, cpu, inputs, **params)
    b = ins.explain(name, gpu, inputs, **params)
    assert diff(before, snapshot(gpu)) == []
    assert next(gpu.parameters()).device.type == "cuda"
    tol = TOLERANCE.get(name, DEFAULT_TOLERANCE)
    for key, va in _values(a).items():
        vb = _values(b)[key]
        scale = max(np.abs(va).max(), 1e-12)
        if name == "embeddings":  # PCA axes are defined up to sign
            va, vb = np.abs(va), np.abs(vb)
        measured = np.abs(va - vb).max() / scale
        print(f"cuda vs cpu {name}[{key}]: max |diff| / max |cpu| = {measured:.2e}")
        assert measured <= tol, (name, key, measured)
