"""Window geometry and baselines for occlusion: validated in one place, pure numpy.

Window corners along one axis of ``size`` pixels are ``0, stride, 2*stride, ...`` while
``corner + window <= size``; when that regular grid leaves the last rows (or columns) uncovered,
``edges`` decides how they are covered:

* ``"aligned"``: one last full window flush with the edge, corner ``size - window``.
  Example: size 12, window 5, stride 4 -> corners 0, 4 and 7.
* ``"truncate"``: the grid goes on by one more stride and that window is cut at the edge, as
  Captum's ``Occlusion`` does (``ceil((size - window) / stride) + 1`` windows).
  Example: size 12, window 5, stride 4 -> corners 0, 4 and 8 (the last covers 8..11).

With ``stride <= window`` every pixel is covered by at least one window either way; when
``(size - window) % stride == 0`` both give the same corners.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import InputError

__all__ = [
    "EDGES",
    "box_blur",
    "check_edges",
    "coverage",
    "make_baseline",
    "pair",
    "window_corners",
]

BASELINE_NAMES = ("mean", "blur")
EDGES = ("aligned", "truncate")


def pair(value: Any, what: str) -> tuple[int, int]:
    """An int or an (h, w) pair of ints -> (h, w); InputError for anything else."""
    items = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value, value]
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items
    )
    if not ok:
        raise InputError(f"{what}={value!r} is not valid; pass a positive int or an (h, w) pair")
    h, w = int(items[0]), int(items[1])
    if h < 1 or w < 1:
        raise InputError(f"{what}={value!r} must be positive; pass e.g. {what}=8 or (8, 8)")
    return h, w


def check_geometry(window: tuple[int, int], stride: tuple[int, int], hw: tuple[int, ...]) -> None:
    """Window and stride must fit the image, and stride <= window so no pixel is left out."""
    h, w = hw[:2]
    if window[0] > h or window[1] > w:
        # (N, C, H, W) read as channels-last has a tiny "height": say so before the window.
        layout = (
            f"; the inputs {tuple(hw)} look channels-first (C, H, W): innersight takes "
            "channels-last (N, H, W, C) arrays, e.g. x.transpose(0, 2, 3, 1)"
            if len(hw) == 3 and h in (1, 3, 4) and hw[2] > 4
            else ""
        )
        raise InputError(
            f"window {window} is larger than the {h}x{w} images; use a window of at most "
            f"({h}, {w}), e.g. window={max(1, min(h, w) // 4)}{layout}"
        )
    if stride[0] > h or stride[1] > w:
        raise InputError(
            f"stride {stride} is larger than the {h}x{w} images; use a stride of at most the window"
        )
    if stride[0] > window[0] or stride[1] > window[1]:
        raise InputError(
            f"stride {stride} is larger than window {window}, which would leave pixels that no "
            "window covers; use a stride no larger than the window"
        )


def check_edges(edges: Any) -> str:
    """``edges`` must be one of :data:`EDGES`; InputError naming them otherwise."""
    if not isinstance(edges, str) or edges not in EDGES:
        raise InputError(
            f"edges={edges!r} is unknown; use 'aligned' (a last full window flush with the "
            "edge) or 'truncate' (a last window cut at the edge, Captum's Occlusion)"
        )
    return edges


def window_corners(size: int, window: int, stride: int, edges: str = "aligned") -> np.ndarray:
    """Top-left corners along one axis (see the module docstring)."""
    corners = list(range(0, size - window + 1, stride))
    if corners[-1] + window < size:
        corners.append(size - window if edges == "aligned" else corners[-1] + stride)
    return np.asarray(corners, dtype=np.int64)


def coverage(corners: np.ndarray, window: int, size: int) -> np.ndarray:
    """(windows, size) float64 indicator: row ``a`` is 1 where window ``a`` covers the pixel
    (a window that runs past the edge covers the pixels up to it)."""
    pos = np.arange(size)
    return ((pos >= corners[:, None]) & (pos < corners[:, None] + window)).astype(np.float64)


def box_blur(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mean over a ``size`` box around each pixel of (N, H, W, C) images, edges replicated.

    The box spans ``[i - k // 2, i + (k - 1) // 2]`` along each axis, the alignment of
    ``scipy.ndimage.uniform_filter(mode="nearest")``.
    """
    out = np.asarray(x, dtype=np.float64)
    for axis, k in ((1, size[0]), (2, size[1])):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (k // 2, (k - 1) // 2)
        sums = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        zero = np.zeros_like(np.take(sums, [0], axis=axis))
        sums = np.concatenate([zero, sums], axis=axis)
        n = out.shape[axis]
        out = (
            np.take(sums, np.arange(k, k + n), axis=axis) - np.take(sums, np.arange(n), axis=axis)
        ) / k
    return out.astype(np.float32)


def make_baseline(baseline: Any, inputs: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """What an occluded window is filled with, broadcast to the shape of ``inputs`` (a view
    where possible, so a constant baseline costs no memory)."""
    if isinstance(baseline, str):
        if baseline == "mean":  # per image, per channel
            return np.broadcast_to(inputs.mean(axis=(1, 2), keepdims=True), inputs.shape)
        if baseline == "blur":
            return box_blur(inputs, window)
        raise InputError(
            f"baseline={baseline!r} is unknown; use a number, 'mean', 'blur' or an array "
            f"shaped like one input {inputs.shape[1:]}"
        )
    if isinstance(baseline, (bool, np.bool_)) or baseline is None:
        raise InputError(
            f"baseline={baseline!r} is not valid; use a number, 'mean', 'blur' or an array "
            f"shaped like one input {inputs.shape[1:]}"
        )
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        value = np.float32(baseline)
        if not np.isfinite(value):
            raise InputError(f"baseline={baseline!r} is not finite; use a finite number")
        return np.broadcast_to(value, inputs.shape)
    arr = _baseline_array(baseline, inputs.shape[1:])
    return np.broadcast_to(arr, inputs.shape)


def _baseline_array(baseline: Any, shape: tuple[int, ...]) -> np.ndarray:
    if hasattr(baseline, "detach") or hasattr(baseline, "numpy"):
        raise InputError(
            f"baseline is a {type(baseline).__name__}; pass a numpy array shaped like one "
            f"input {shape} (channels last)"
        )
    try:
        arr = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"baseline of type {type(baseline).__name__} is not valid; use a number, 'mean', "
            f"'blur' or an array shaped like one input {shape}"
        ) from err
    if arr.shape != shape:
        raise InputError(
            f"baseline array has shape {arr.shape}, expected one input's shape {shape} "
            "(H, W, C, channels last)"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError("baseline array contains NaN or Inf values; clean it first")
    return arr
