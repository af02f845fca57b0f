"""Keras and torch weight layouts: the one place that converts between them (numpy only).

Keras keeps conv kernels as ``(kh, kw, in, out)`` and dense kernels as ``(in, out)``, and its
``Flatten`` reads a feature map in ``(h, w, c)`` order; torch keeps ``(out, in, kh, kw)`` and
``(out, in)``, and flattens ``(c, h, w)``. So a dense layer (or a 1-d BatchNorm) right after the
flatten of an ``h x w x c`` map gets its input rows reordered on top of the transpose. The port,
:mod:`innersight.models` and the tests' small net all convert through these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "conv_kernel_from_torch",
    "conv_kernel_to_torch",
    "dense_kernel_from_torch",
    "dense_kernel_to_torch",
    "rows_from_torch_order",
    "rows_to_torch_order",
]


def rows_to_torch_order(array: np.ndarray, hwc: tuple[int, ...]) -> np.ndarray:
    """Rows (or entries) in Keras' flatten order ``(h, w, c)`` -> torch's ``(c, h, w)``."""
    h, w, c = hwc
    rest = array.shape[1:]
    moved = array.reshape(h, w, c, *rest).transpose(2, 0, 1, *range(3, 3 + len(rest)))
    return np.ascontiguousarray(moved.reshape(array.shape))


def rows_from_torch_order(array: np.ndarray, hwc: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`rows_to_torch_order`: torch's ``(c, h, w)`` -> ``(h, w, c)``."""
    h, w, c = hwc
    rest = array.shape[1:]
    moved = array.reshape(c, h, w, *rest).transpose(1, 2, 0, *range(3, 3 + len(rest)))
    return np.ascontiguousarray(moved.reshape(array.shape))


def conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Keras ``(kh, kw, in, out)`` conv kernel as torch's ``(out, in, kh, kw)`` weight."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def conv_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
    """A torch ``(out, in, kh, kw)`` conv weight as Keras' ``(kh, kw, in, out)`` kernel."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def dense_kernel_to_torch(kernel: np.ndarray, hwc: tuple[int, ...] | None = None) -> np.ndarray:
    """A Keras ``(in, out)`` dense kernel as torch's ``(out, in)`` weight; ``hwc``: the shape of
    the map a ``Flatten`` just before it flattened (its rows are then reordered)."""
    rows = rows_to_torch_order(kernel, hwc) if hwc is not None else kernel
    return np.ascontiguousarray(rows.T)


def dense_kernel_from_torch(weight: np.ndarray, hwc: tuple[int, ...] | None = None) -> np.ndarray:
    """The inverse of :func:`dense_kernel_to_torch`."""
    kernel = np.ascontiguousarray(weight.T)
    return rows_from_torch_order(kernel, hwc) if hwc is not None else kernel
