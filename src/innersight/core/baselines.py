"""Baselines: what "absence of the input" means for IG, occlusion and the metrics.

One resolver, so every technique and metric that takes ``baseline=`` accepts the same values and
says the same thing about a wrong one:

- a number: a constant input (``0.0``: black for images in [0, 1]);
- ``"zeros"`` (alias ``"black"``): the same as ``0.0``;
- ``"mean"``: each input's mean over its spatial axes (its mean colour), per channel;
- ``"blur"``: each image blurred by a Gaussian (:func:`gaussian_blur`, mirrored borders;
  Sturmfels et al., 2020,
  *Visualizing the Impact of Feature Attribution Baselines*, Distill), images only;
- an array shaped like one input (shared by the batch) or like the whole batch (one baseline per
  input).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core.errors import InputError

__all__ = ["BASELINE_NAMES", "BaselineArg", "gaussian_blur", "resolve_baseline"]

#: What a ``baseline=`` parameter takes: a number, a name in :data:`BASELINE_NAMES`, or an
#: array shaped like one input or like the batch (see :func:`resolve_baseline`).
BaselineArg = float | str | np.ndarray

#: The named baselines ("black" is an alias of "zeros").
BASELINE_NAMES = ("zeros", "black", "mean", "blur")


def _advice(inputs: np.ndarray) -> str:
    names = "'zeros', 'mean', 'blur'" if inputs.ndim == 4 else "'zeros', 'mean'"
    return (
        f"pass a number (e.g. 0.0), {names}, or an array shaped like one input "
        f"{tuple(inputs.shape[1:])} or like the batch {tuple(inputs.shape)}"
    )


def resolve_baseline(
    baseline: Any,
    inputs: np.ndarray,
    *,
    name: str = "baseline",
    blur_sigma: float | None = None,
) -> np.ndarray:
    """The (N, ...) float32 baseline for ``inputs`` (see the module docstring for the values).

    Args:
        baseline: the user's value.
        inputs: the validated batch.
        name: the parameter's name, for messages.
        blur_sigma: the Gaussian's sigma in pixels for ``"blur"`` (default: a tenth of the
            larger side, at least 1).

    Raises:
        InputError: an unknown name, a wrong shape, a non-finite value, or ``None``.
    """
    if isinstance(baseline, str):
        return _named(baseline, inputs, name, blur_sigma)
    if baseline is None or isinstance(baseline, bool):
        raise InputError(f"{name}={baseline!r} is not a baseline; {_advice(inputs)}")
    try:
        arr = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"{name} must be a number, a name or an array, got {type(baseline).__name__}; "
            f"{_advice(inputs)}"
        ) from err
    if not (arr.ndim == 0 or arr.shape == inputs.shape[1:] or arr.shape == inputs.shape):
        raise InputError(f"{name} has shape {arr.shape}; {_advice(inputs)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or Inf values; pass finite numbers")
    return np.array(np.broadcast_to(arr, inputs.shape), dtype=np.float32)


def _named(baseline: str, inputs: np.ndarray, name: str, sigma: float | None) -> np.ndarray:
    if baseline not in BASELINE_NAMES:
        raise InputError(f"{name}={baseline!r} is unknown; {_advice(inputs)}")
    if baseline in ("zeros", "black"):
        return np.zeros(inputs.shape, dtype=np.float32)
    if baseline == "blur":
        if inputs.ndim != 4:
            raise InputError(
                f"{name}='blur' blurs images (N, H, W, C), got inputs of shape "
                f"{tuple(inputs.shape)}; {_advice(inputs)}"
            )
        return gaussian_blur(inputs, sigma)
    axes = tuple(range(1, inputs.ndim - 1)) or (1,)
    mean = inputs.mean(axis=axes, keepdims=True, dtype=np.float64)
    return np.broadcast_to(mean, inputs.shape).astype(np.float32)


def gaussian_blur(images: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Images (N, H, W, C) blurred by a Gaussian of ``sigma`` pixels (default: a tenth of the
    larger side, at least 1), separably, with mirrored borders (``np.pad`` "reflect", which is
    scipy's ``mode="mirror"``: the edge pixel is not repeated); float32."""
    if images.ndim != 4:
        raise InputError(f"gaussian_blur takes images (N, H, W, C), got {images.shape}")
    sigma = float(sigma or max(1.0, max(images.shape[1:3]) / 10))
    out = images.astype(np.float64)
    for axis in (1, 2):
        size = out.shape[axis]
        radius = min(int(3 * sigma + 0.5), size - 1)
        if radius < 1:
            continue
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(
            (w * np.take(padded, np.arange(k, k + size), axis=axis) for k, w in enumerate(taps)),
            np.zeros_like(out),
        )
    return out.astype(np.float32)
