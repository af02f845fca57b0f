"""scikit-learn's digits as a 32x32x1 image data set, and the demo CNN trained on it.

The data ships inside scikit-learn (1,797 8x8 images, no download). Images are upsampled
bilinearly to 32x32 and scaled to 0..1. The split is seeded and stratified: 75% train, 25% test.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from innersight.core import InputError
from innersight.models.architectures import DIGITS_SPEC
from innersight.models.spec import Conv, Dense, Flatten, Spec, build_keras, build_torch
from innersight.port.layout import conv_kernel_from_torch, dense_kernel_from_torch

DIGITS_CLASSES = tuple(str(d) for d in range(10))
WEIGHTS_FILE = "digits_cnn.npz"


@dataclass(frozen=True)
class Split:
    """Channels-last float32 images in 0..1 and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` bilinear interpolation between pixel centres (edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def digits_data(size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """The digits images resized to ``size`` x ``size`` x 1, split per class with ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    m = resize_matrix(8, size)
    x = np.einsum("ij,njk,lk->nil", m, data.images / 16.0, m)[..., None].astype(np.float32)
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        test[idx[: round(len(idx) * test_fraction)]] = True
    return Split(x[~test], y[~test], x[test], y[test])


def pretrained_weights() -> dict[str, np.ndarray]:
    """The shipped weights of the demo CNN (Keras layout), reproduced by ``train_digits``."""
    path = resources.files("innersight.models") / "weights" / WEIGHTS_FILE
    with resources.as_file(path) as p, np.load(p) as data:
        return {key: data[key] for key in data.files}


def digits_cnn(backend: str = "torch", *, pretrained: bool = True, seed: int = 0) -> Any:
    """The demo digits CNN as a torch ``nn.Module`` (NCHW) or a ``keras.Model`` (NHWC).

    Args:
        backend: ``"torch"`` or ``"keras"``.
        pretrained: load the shipped trained weights (test accuracy in ``docs/demo.md``);
            otherwise a seeded He initialisation.
        seed: the initialisation seed when ``pretrained`` is False.
    """
    weights = pretrained_weights() if pretrained else DIGITS_SPEC.init_weights(seed)
    return build(DIGITS_SPEC, backend, weights)


def build(spec: Spec, backend: str, weights: dict[str, np.ndarray] | None = None) -> Any:
    """Build ``spec`` in ``backend`` ("torch" or "keras")."""
    if backend == "torch":
        return build_torch(spec, weights)
    if backend == "keras":
        return build_keras(spec, weights)
    raise InputError(f"backend must be 'torch' or 'keras', got {backend!r}")


def weights_from_torch(spec: Spec, net: Any) -> dict[str, np.ndarray]:
    """The inverse of ``build_torch``: a torch build's weights in Keras layout."""
    shapes = [spec.input_shape, *spec.shapes()]
    out: dict[str, np.ndarray] = {}
    for i, layer in enumerate(spec.layers):
        if not isinstance(layer, (Conv, Dense)):
            continue
        module = net.get_submodule(layer.name)
        w = module.weight.detach().cpu().numpy()
        if isinstance(layer, Conv):
            kernel = conv_kernel_from_torch(w)
        else:
            after_flatten = i > 0 and isinstance(spec.layers[i - 1], Flatten)
            kernel = dense_kernel_from_torch(w, shapes[i - 1] if after_flatten else None)
        out[f"{layer.name}/kernel"] = np.ascontiguousarray(kernel, np.float32)
        out[f"{layer.name}/bias"] = module.bias.detach().cpu().numpy().astype(np.float32)
    return out
