"""Shared by the reliability tests: minimal valid parameters per technique, and helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

import innersight as ins

#: Cheap, valid parameters per technique name. Names not registered are skipped; registered
#: techniques missing here run with their defaults. Parameters a technique does not take are
#: dropped (the table may run ahead of, or behind, a plugin's signature).
MINIMAL: dict[str, dict[str, Any]] = {
    "saliency": {},
    "guided_backprop": {},
    "input_x_gradient": {},
    "activation_grid": {},
    "occlusion": {"window": 3, "stride": 3, "progress": False},
    "smoothgrad": {"samples": 2, "progress": False},
    "integrated_gradients": {"steps": 4, "method": "riemann_trapezoid", "progress": False},
    "grad_cam": {},
    "embeddings": {"method": "pca", "progress": False},
    "filter_maximization": {"layer": "conv1", "filters": [0, 1], "steps": 2, "progress": False},
    "class_maximization": {"classes": [0, 2], "steps": 2, "progress": False},
    "noise_tunnel": {"nt_samples": 2, "progress": False},
    "gradient_shap": {"n_samples": 2, "progress": False},
    "abs_input_x_gradient": {},
    "score_cam": {"max_channels": 4, "progress": False},
    "feature_ablation": {"grid": 2, "progress": False},
    "kernel_shap": {"grid": 2, "n_samples": 16, "progress": False},
    "lime": {"grid": 2, "n_samples": 16, "progress": False},
}
#: Techniques that need more than two samples per call.
MIN_BATCH: dict[str, int] = {"embeddings": 4}
#: Techniques whose values are not one independent result per input sample: embeddings (one
#: PCA of all samples) and the maximizations (their own images, one per filter or class).
NOT_PER_SAMPLE = ("embeddings", "filter_maximization", "class_maximization")

#: The cheap techniques the fuzz test draws from.
CHEAP = ("saliency", "guided_backprop", "activation_grid", "occlusion", "smoothgrad")


def minimal_params(name: str) -> dict[str, Any]:
    """The table's parameters for ``name`` that its ``explain`` accepts."""
    accepted = ins.techniques()[name].parameters()
    return {k: v for k, v in MINIMAL.get(name, {}).items() if k in accepted}


def technique_names(*, needs_inputs: bool | None = None) -> list[str]:
    """Registered technique names, sorted (optionally only those that take / make inputs)."""
    out = []
    for name, tech in sorted(ins.techniques().items()):
        if needs_inputs is None or tech.needs_inputs == needs_inputs:
            out.append(name)
    return out


def batch(n: int = 2, shape: tuple[int, ...] = (12, 12, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def value_arrays(values: Any) -> list[np.ndarray]:
    """An Explanation's values as a list of arrays (one per layer for mappings)."""
    if isinstance(values, dict):
        return [np.asarray(v) for v in values.values()]
    return [np.asarray(values)]
