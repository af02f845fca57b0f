"""Random robustness transforms for feature visualisation, each a linear map with its adjoint.

Optimising an image through small random jitters, zooms and rotations ("transformation
robustness", Olah et al., 2017) suppresses the high-frequency patterns that plain gradient ascent
finds. Every transform here is a LINEAR map ``T`` on a batch of images (N, H, W, C) that keeps
the image size (the model may need a fixed input), with its adjoint ``T^T``, so the gradient
through the model pulls back to the untransformed image in numpy::

    d objective(T x) / dx = T^T  grad_model(T x)

* :class:`Roll` (jitter): a circular shift by whole pixels; the adjoint is the opposite shift.
* :class:`Warp` (scale, rotate): bilinear resampling at ``c + A (p - c)`` for each output pixel
  ``p`` (``c``: the image centre, ``A``: the inverse zoom/rotation), coordinates clamped to the
  border (edge replication, which keeps the map linear). The adjoint scatters each output
  gradient back onto the four source pixels with the same weights.

:class:`RandomTransforms` draws one transform per batch sample and step, each sample from its own
generator, so an image's trajectory does not depend on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["Compose", "Identity", "RandomTransforms", "Roll", "Transform", "Warp"]


class Transform(Protocol):
    """A linear map on (N, H, W, C) images and its adjoint."""

    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def adjoint(self, g: np.ndarray) -> np.ndarray: ...


class Identity:
    """No transform."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        return g


class Roll:
    """Circular shift of sample ``i`` by ``shifts[i] = (dy, dx)`` whole pixels."""

    def __init__(self, shifts: np.ndarray) -> None:
        self.shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 2)

    def _roll(self, x: np.ndarray, sign: int) -> np.ndarray:
        out = np.empty_like(x)
        for i, (dy, dx) in enumerate(self.shifts):
            out[i] = np.roll(x[i], (sign * int(dy), sign * int(dx)), axis=(0, 1))
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._roll(x, 1)

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        return self._roll(g, -1)


class Warp:
    """Bilinear resampling of sample ``i`` at ``c + matrices[i] @ (p - c)``, edges clamped.

    Args:
        matrices: (N, 2, 2) maps from output to source offsets in (row, column) order.
        size: (H, W) of the images.
    """

    def __init__(self, matrices: np.ndarray, size: tuple[int, int]) -> None:
        h, w = size
        self.size = (h, w)
        centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        offsets = np.stack([rows.ravel(), cols.ravel()], axis=0) - centre[:, None]  # (2, HW)
        src = np.asarray(matrices, dtype=np.float64) @ offsets + centre[None, :, None]
        y = np.clip(src[:, 0], 0, h - 1)
        x = np.clip(src[:, 1], 0, w - 1)
        y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        fy, fx = y - y0, x - x0
        # (N, HW, 4): the four neighbours of every output pixel and their bilinear weights
        self.index = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=-1)
        self.weight = np.stack(
            [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1
        )

    @classmethod
    def scale(cls, factors: Sequence[float] | np.ndarray, size: tuple[int, int]) -> Warp:
        """Zoom sample ``i`` by ``factors[i]`` about the centre (> 1 enlarges)."""
        f = np.asarray(factors, dtype=np.float64).reshape(-1, 1, 1)
        return cls(np.eye(2)[None] / f, size)

    @classmethod
    def rotate(cls, degrees: Sequence[float] | np.ndarray, size: tuple[int, int]) -> Warp:
        """Rotate sample ``i`` by ``degrees[i]`` about the centre."""
        return cls.affine(np.ones(len(np.atleast_1d(degrees))), degrees, size)

    @classmethod
    def affine(
        cls,
        factors: Sequence[float] | np.ndarray,
        degrees: Sequence[float] | np.ndarray,
        size: tuple[int, int],
    ) -> Warp:
        """Zoom by ``factors[i]`` and rotate by ``degrees[i]`` in one resampling."""
        t = np.deg2rad(np.asarray(degrees, dtype=np.float64))
        cos, sin = np.cos(t), np.sin(t)
        inv = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=-2)
        return cls(inv / np.asarray(factors, dtype=np.float64).reshape(-1, 1, 1), size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        flat = x.reshape(n, h * w, c)
        picked = np.take_along_axis(flat, self.index.reshape(n, -1, 1), axis=1)
        out = (picked.reshape(n, h * w, 4, c) * self.weight[..., None]).sum(axis=2)
        return out.reshape(x.shape)

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        n, h, w, c = g.shape
        where = (self.index + (np.arange(n) * h * w)[:, None, None]).ravel()
        contrib = g.reshape(n, h * w, 1, c) * self.weight[..., None]  # (N, HW, 4, C)
        contrib = contrib.reshape(-1, c)
        out = np.stack(
            [np.bincount(where, weights=contrib[:, k], minlength=n * h * w) for k in range(c)],
            axis=-1,
        )
        return out.reshape(g.shape)


class Compose:
    """``forward`` applies the transforms in order; ``adjoint`` undoes them in reverse."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = tuple(transforms)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            x = t.forward(x)
        return x

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        for t in reversed(self.transforms):
            g = t.adjoint(g)
        return g


class RandomTransforms:
    """Draws, per step, one jitter/zoom/rotation per sample from that sample's generator.

    Args:
        jitter: largest shift in pixels (uniform integers in ``-jitter..jitter`` per axis).
        scale: ``(low, high)`` zoom range (uniform), or None.
        rotate: largest rotation in degrees (uniform in ``-rotate..rotate``).
    """

    def __init__(
        self, jitter: int = 0, scale: tuple[float, float] | None = None, rotate: float = 0.0
    ) -> None:
        self.jitter, self.scale, self.rotate = int(jitter), scale, float(rotate)

    @property
    def active(self) -> bool:
        return self.jitter > 0 or self.scale is not None or self.rotate != 0.0

    def sample(self, rngs: Sequence[np.random.Generator], size: tuple[int, int]) -> Transform:
        """The transform of one step: zoom and rotation (one resampling), then the jitter."""
        steps: list[Transform] = []
        if self.scale is not None or self.rotate:
            lo, hi = self.scale if self.scale is not None else (1.0, 1.0)
            factors = [r.uniform(lo, hi) if hi > lo else lo for r in rngs]
            angles = [r.uniform(-self.rotate, self.rotate) if self.rotate else 0.0 for r in rngs]
            steps.append(Warp.affine(factors, angles, size))
        if self.jitter > 0:
            shifts = np.array([r.integers(-self.jitter, self.jitter + 1, size=2) for r in rngs])
            steps.append(Roll(shifts))
        return Compose(steps) if steps else Identity()
