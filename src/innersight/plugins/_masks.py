"""Feature masks for the perturbation techniques: which input elements move together.

A mask gives every pixel of an image, or every feature of a vector, an integer label; the
elements with the same label form one *feature group*, which feature ablation, KernelSHAP and
LIME switch between the input and the baseline as one unit (all channels of a pixel together).

``feature_mask`` values:

- ``"grid"`` (images): a regular grid of ``grid`` cells per side (an int, or ``(rows, cols)``);
  pixel ``(r, c)`` is in cell ``(r * rows // H, c * cols // W)``, so cells differ by at most one
  pixel in size;
- ``"slic"`` (images): SLIC superpixels of each image (scikit-image, imported on use), about
  ``segments`` of them; 3-channel images are segmented in Lab colour, others on their
  intensities scaled to 0..100 (the range of Lab's lightness), with scikit-image's default
  compactness 10;
- ``"pixels"`` (images): every pixel its own group; ``"features"`` (vectors): every feature its
  own group;
- an int array: ``(H, W)`` shared by the batch or ``(N, H, W)`` one per image; ``(F,)`` or
  ``(N, F)`` for vectors ``(N, F)``.

Labels are renumbered per input to ``0..G-1`` in increasing order of the given label; a label
absent from an input is no feature of it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import InputError, MissingDependencyError, validate

__all__ = ["IMAGE_MASKS", "VECTOR_MASKS", "Masks", "grid_labels", "resolve_masks"]

IMAGE_MASKS = ("grid", "slic", "pixels")
VECTOR_MASKS = ("features",)
SLIC_COMPACTNESS = 10.0  # scikit-image's default, meant for Lab colour (lightness 0..100)


@dataclass(frozen=True)
class Masks:
    """Resolved feature groups of a batch.

    Attributes:
        labels: ``(N, P)`` int64, the group (``0..G_n-1``) of each of the P pixels (features).
        counts: ``(N,)`` the number of groups G_n of each input.
        spatial: ``(H, W)`` or ``(F,)``: the shape the labels cover.
        source: how the mask was made, for ``meta`` (e.g. ``"grid 8x8"``).
        given: per input, the label the user gave each group (``0..G_n-1`` for made masks).
    """

    labels: np.ndarray
    counts: np.ndarray
    spatial: tuple[int, ...]
    source: str
    given: tuple[np.ndarray, ...]

    @property
    def max_groups(self) -> int:
        return int(self.counts.max())

    def maps(self) -> np.ndarray:
        """The labels as ``(N, H, W)`` (``(N, F)``) int64."""
        return self.labels.reshape(len(self.labels), *self.spatial)

    def broadcast(self, group_values: np.ndarray) -> np.ndarray:
        """``(N, G_max)`` values per group -> ``(N, H, W)`` (``(N, F)``): each pixel its group's."""
        flat = np.take_along_axis(group_values, self.labels, axis=1)
        return flat.reshape(len(self.labels), *self.spatial)

    def group_sums(self, values: np.ndarray) -> np.ndarray:
        """``(N, P)`` per-pixel values -> ``(N, G_max)`` float64 sums per group."""
        n, g = len(self.labels), self.max_groups
        index = (self.labels + g * np.arange(n)[:, None]).ravel()
        sums = np.bincount(index, weights=np.asarray(values, np.float64).ravel(), minlength=n * g)
        return sums.reshape(n, g)

    def per_input(self, group_values: np.ndarray) -> list[list[float]]:
        """``(N, G_max)`` padded values -> one list of G_n values per input (for ``meta``)."""
        return [row[:count].tolist() for row, count in zip(group_values, self.counts, strict=True)]


def resolve_masks(feature_mask: Any, inputs: np.ndarray, *, grid: Any, segments: Any) -> Masks:
    """The feature groups of ``inputs`` (see the module docstring for the values).

    Raises:
        InputError: an unknown name, a name for the other kind of input, a malformed array.
        MissingDependencyError: ``"slic"`` without scikit-image.
    """
    spatial = _spatial(inputs)
    image = inputs.ndim == 4
    if feature_mask is None:
        feature_mask = "grid" if image else "features"
    if isinstance(feature_mask, str):
        return _named(feature_mask, inputs, spatial, grid, segments)
    return _given(feature_mask, len(inputs), spatial, image)


def _spatial(inputs: np.ndarray) -> tuple[int, ...]:
    if inputs.ndim == 4:
        return (int(inputs.shape[1]), int(inputs.shape[2]))
    if inputs.ndim == 2:
        return (int(inputs.shape[1]),)
    raise InputError(
        f"feature masks cover images (N, H, W, C) and vectors (N, F), got inputs of shape "
        f"{tuple(inputs.shape)}; add a channel axis to grayscale images with x[..., None]"
    )


def _named(
    name: str, inputs: np.ndarray, spatial: tuple[int, ...], grid: Any, segments: Any
) -> Masks:
    image = inputs.ndim == 4
    options = IMAGE_MASKS if image else VECTOR_MASKS
    if name not in options:
        what = "images" if image else "vectors (N, F)"
        raise InputError(
            f"feature_mask={name!r} is unknown for {what}; use one of "
            f"{', '.join(map(repr, options))}, or an int array of labels shaped "
            f"{spatial} (shared) or {(len(inputs), *spatial)} (one per input)"
        )
    if name == "grid":
        rows, cols = validate.pair("grid", grid, example=8)
        labels = grid_labels(spatial, (rows, cols))
        return _shared(labels, len(inputs), spatial, f"grid {rows}x{cols}")
    if name == "slic":
        count = validate.positive_int("segments", segments, example=50)
        return _from_labels(_slic(inputs, count), spatial, f"slic (segments={count})")
    return _shared(np.arange(int(np.prod(spatial))), len(inputs), spatial, name)


def grid_labels(spatial: tuple[int, ...], cells: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` labels of a ``rows x cols`` grid, row-major; InputError when it has more
    cells than pixels."""
    (h, w), (rows, cols) = spatial, cells
    if rows > h or cols > w:
        raise InputError(
            f"grid={cells} has more cells than the {h}x{w} image has pixels; pass at most "
            f"grid=({h}, {w}), e.g. grid={max(1, min(h, w) // 4)}"
        )
    r = np.arange(h) * rows // h
    c = np.arange(w) * cols // w
    return np.asarray(r[:, None] * cols + c[None, :], dtype=np.int64)


def _shared(labels: np.ndarray, n: int, spatial: tuple[int, ...], source: str) -> Masks:
    """One mask for every input (renumbered once)."""
    given, flat = np.unique(labels.ravel(), return_inverse=True)
    tiled = np.broadcast_to(flat.astype(np.int64), (n, flat.size))
    counts = np.full(n, len(given), dtype=np.int64)
    return Masks(np.ascontiguousarray(tiled), counts, spatial, source, (given,) * n)


def _from_labels(labels: np.ndarray, spatial: tuple[int, ...], source: str) -> Masks:
    """Per-input masks ``(N, ...)``, each renumbered to ``0..G_n-1``."""
    n = len(labels)
    flat = labels.reshape(n, -1)
    out = np.empty(flat.shape, dtype=np.int64)
    given = []
    for i in range(n):  # one np.unique per input, not per pixel
        values, out[i] = np.unique(flat[i], return_inverse=True)
        given.append(values)
    counts = np.array([len(v) for v in given], dtype=np.int64)
    return Masks(out, counts, spatial, source, tuple(given))


def _given(mask: Any, n: int, spatial: tuple[int, ...], image: bool) -> Masks:
    shapes = f"{spatial} (shared by the batch) or {(n, *spatial)} (one per input)"
    try:
        arr = np.asarray(mask)
    except Exception as err:  # ragged nesting
        raise InputError(
            f"feature_mask must be a name or an int array of labels shaped {shapes}, got "
            f"{type(mask).__name__} ({err})"
        ) from err
    if arr.dtype.kind not in "iu":
        names = IMAGE_MASKS if image else VECTOR_MASKS
        raise InputError(
            "feature_mask must be an int array of labels (or one of "
            f"{', '.join(map(repr, names))}), "
            f"got dtype {arr.dtype}; convert with mask.astype(int)"
        )
    if arr.shape == spatial:
        return _shared(arr.astype(np.int64), n, spatial, "given (shared)")
    if arr.shape == (n, *spatial):
        return _from_labels(arr.astype(np.int64), spatial, "given (per input)")
    raise InputError(f"feature_mask has shape {arr.shape}; expected {shapes}")


def _slic(inputs: np.ndarray, segments: int) -> np.ndarray:
    """``(N, H, W)`` SLIC labels, one segmentation per image."""
    try:
        segmentation = importlib.import_module("skimage.segmentation")
    except ImportError as err:
        raise MissingDependencyError(
            f"feature_mask='slic' needs scikit-image ({err}); install it with "
            "pip install scikit-image, or use feature_mask='grid'"
        ) from err
    labels = np.empty(inputs.shape[:3], dtype=np.int64)
    for i, image in enumerate(inputs.astype(np.float64)):
        low, high = image.min(), image.max()
        scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if image.shape[-1] != 3:  # no Lab conversion: intensities on Lab's lightness scale
            scaled = scaled * 100.0
        labels[i] = segmentation.slic(
            scaled,
            n_segments=segments,
            compactness=SLIC_COMPACTNESS,
            start_label=0,
            channel_axis=-1,
        )
    return labels
