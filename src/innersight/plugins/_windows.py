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

from innersight.core import InputError, validate
from innersight.core.baselines import resolve_baseline

__all__ = [
    "EDGES",
    "OccludedBatches",
    "box_blur",
    "check_edges",
    "check_geometry",
    "coverage",
    "make_baseline",
    "window_corners",
]

EDGES = ("aligned", "truncate")


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
    """``edges`` must be one of :data:`EDGES` (:func:`innersight.core.validate.choice`)."""
    return str(validate.choice("edges", edges, EDGES))


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
    """What an occluded window is filled with, shaped like ``inputs``.

    Every value :func:`innersight.core.baselines.resolve_baseline` takes, with its messages
    (a number, "zeros"/"black", "mean", an array shaped like one input or like the batch),
    except ``"blur"``: for occlusion a box blur of each image whose box is the window
    (:func:`box_blur`), so a hidden window holds the local average of what it hides. A constant
    baseline is a broadcast view (no memory per input).
    """
    if isinstance(baseline, str) and baseline == "blur":
        return box_blur(inputs, window)
    if validate.is_number(baseline) or (
        isinstance(baseline, str) and baseline in ("zeros", "black")
    ):
        one = resolve_baseline(baseline, inputs[:1])  # validated (finite), then broadcast
        return np.broadcast_to(one[0], inputs.shape)
    return resolve_baseline(baseline, inputs)


class OccludedBatches:
    """Occluded copies of the inputs, built in place in one buffer per chunk size.

    A chunk is a batch of (image, window corner) items. Each slot of the buffer remembers what
    it holds: a slot that held the same image in the previous chunk of its size gets only the
    previous window restored from the image and the new one pasted (two windows of memory
    traffic, not a whole image, and no allocation per chunk); other slots copy their image
    first. The buffers are private: adapters never write to their inputs (the contract), so a
    slot holds exactly what was last written to it. At most two chunk sizes keep a buffer
    (the planner's current one and the one before it).
    """

    def __init__(self, inputs: np.ndarray, base: np.ndarray, window: tuple[int, int]) -> None:
        self.inputs, self.base, self.window = inputs, base, window
        self._buffers: dict[int, tuple[np.ndarray, list[Any]]] = {}

    def __call__(self, image: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
        """(B, H, W, C): ``inputs[image[b]]`` with the window at (top[b], left[b]) hidden."""
        buf, held = self._buffer(len(image))
        wh, ww = self.window
        for i, (img, r, c) in enumerate(
            zip(image.tolist(), top.tolist(), left.tolist(), strict=True)
        ):
            before = held[i]
            if before is not None and before[0] == img:
                _, pr, pc = before
                buf[i, pr : pr + wh, pc : pc + ww] = self.inputs[img, pr : pr + wh, pc : pc + ww]
            else:
                buf[i] = self.inputs[img]
            buf[i, r : r + wh, c : c + ww] = self.base[img, r : r + wh, c : c + ww]
            held[i] = (img, r, c)
        return buf

    def _buffer(self, size: int) -> tuple[np.ndarray, list[Any]]:
        if size not in self._buffers:
            while len(self._buffers) >= 2:
                self._buffers.pop(next(iter(self._buffers)))
            shape = (size, *self.inputs.shape[1:])
            self._buffers[size] = (np.empty(shape, self.inputs.dtype), [None] * size)
        return self._buffers[size]
