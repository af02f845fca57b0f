"""Shared models and helpers of the perturbation technique tests (feature ablation, KernelSHAP,
LIME): one linear classifier and the small conv net on every backend, including the function
backend (a plain numpy function), a forward-counting function, and Captum's inputs."""

from __future__ import annotations

import numpy as np

import innersight as ins
from innersight.backends.function import FunctionModel
from innersight.plugins._masks import grid_labels
from innersight.testing import ReferenceAdapter

SHAPE = (12, 12, 3)
CLASSES = 4


def rel_error(got, expected) -> float:
    """max |got - expected| / max |expected|: the relative error of the agreement tables."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def linear_weights(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((int(np.prod(SHAPE)), CLASSES)).astype(np.float32)
    return weights, rng.standard_normal(CLASSES).astype(np.float32)


def linear_models(weights: np.ndarray, bias: np.ndarray, backends=("function", "torch", "keras")):
    """The same linear classifier (flatten + dense, Keras kernel layout) on each backend."""
    out = {}
    if "function" in backends:
        out["function"] = FunctionModel(
            lambda x: x.reshape(len(x), -1) @ weights + bias, input_shape=SHAPE, name="linear"
        )
    if "keras" in backends:
        import keras

        km = keras.Sequential(
            [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
        )
        km.layers[-1].set_weights([weights, bias])
        out["keras"] = ins.wrap(km)
    if "torch" in backends:
        import torch

        tm = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), CLASSES))
        with torch.no_grad():  # torch flattens (C, H, W)
            chw = weights.reshape(*SHAPE, CLASSES).transpose(3, 2, 0, 1).reshape(CLASSES, -1)
            tm[1].weight.copy_(torch.from_numpy(np.ascontiguousarray(chw)))
            tm[1].bias.copy_(torch.from_numpy(bias))
        out["torch"] = ins.wrap(tm.eval())
    return out


def group_contributions(weights, x, targets, labels, baseline=0.0) -> list[np.ndarray]:
    """Closed form of a linear score: per input, per group g (in label order), the sum over g
    of w[t] * (x - b)."""
    base = np.broadcast_to(np.asarray(baseline, np.float64), x.shape)
    out = []
    for i, t in enumerate(targets):
        contrib = (weights[:, t].reshape(SHAPE) * (x[i] - base[i])).sum(-1)
        lab = labels if labels.ndim == 2 else labels[i]
        out.append(np.array([contrib[lab == g].sum() for g in np.unique(lab)]))
    return out


def small_function(small_weights) -> FunctionModel:
    """The small conv net as a plain numpy function (the reference network's float64 pass)."""
    network = ReferenceAdapter.from_weights(small_weights).network
    return FunctionModel(lambda x: network.run(x)[0][-1], input_shape=SHAPE, name="small_numpy")


class CountingFunction:
    """A numpy model that records the size of every batch it is called with."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights, self.calls = weights, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        return x.reshape(len(x), -1) @ self.weights


def nchw(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def captum_grid_mask(cells):
    """A (1, 1, H, W) torch mask: the grid ``cells`` of :func:`grid_labels`, for all channels."""
    import torch

    return torch.from_numpy(grid_labels(SHAPE[:2], cells))[None, None]


def replay(rows: np.ndarray):
    """A Captum perturbation generator that yields ``rows`` (our coalitions) in order."""
    import torch

    def generator(original_inp, **kwargs):
        for row in rows:
            yield torch.from_numpy(row.astype(np.int64))[None]

    return generator
