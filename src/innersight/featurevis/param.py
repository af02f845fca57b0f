"""Image parameterisations for feature visualisation: linear maps from parameters to images.

A parameterisation is a LINEAR map ``P`` from a parameter array to a batch of images
``(N, H, W, C)``, with its adjoint ``P^T``: the gradient of an objective w.r.t. the image pulls
back to the parameters in numpy (``grad_params = P.backward(grad_image)``), so optimisation in
any parameterisation needs nothing from the framework but the input gradient.

* ``"pixel"``: the image itself (``P`` is the identity).
* ``"fft"``: Lucid's decorrelated parameterisation (Olah et al., 2017), kept linear::

      image = decorrelate_colour(irfft2(spectrum * scale))

  ``spectrum`` is the real and imaginary part of each channel's half-plane 2-D spectrum,
  ``scale = 1 / max(|f|, 1 / max(H, W)) ** decay`` damps high frequencies so equal steps on every
  coefficient favour smooth images, and ``decorrelate_colour`` mixes three channels with Lucid's
  square root of the ImageNet colour covariance (identity for any other channel count). Lucid
  ends with a sigmoid to keep pixels in 0..1; here there is no squashing and no clipping: the
  image lives in the model's own input space (the renderer's ``deprocess`` maps it for display),
  and the map stays exactly linear, so ``forward(inverse(x)) == x`` for any starting image.
  ``scale`` is normalised so that white-noise parameters of unit variance give an image of unit
  mean square: learning rates mean roughly the same in both parameterisations.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from innersight.core.errors import InputError

__all__ = ["PARAMS", "FFTParam", "Parameterization", "PixelParam", "make_param"]

PARAMS = ("pixel", "fft")

# Lucid's square root of the ImageNet colour correlation (SVD), columns scaled to max norm 1.
_COLOUR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOUR = _COLOUR / np.max(np.linalg.norm(_COLOUR, axis=0))


class Parameterization(Protocol):
    """A linear map from parameters to images (N, H, W, C) with its adjoint and inverse."""

    image_shape: tuple[int, int, int, int]

    def forward(self, params: np.ndarray) -> np.ndarray:
        """The images (N, H, W, C), float64."""
        ...

    def backward(self, grad_image: np.ndarray) -> np.ndarray:
        """The adjoint: d(objective)/d(params) from d(objective)/d(image)."""
        ...

    def inverse(self, images: np.ndarray) -> np.ndarray:
        """Parameters whose ``forward`` is ``images`` (to start from a given image)."""
        ...


class PixelParam:
    """The image is the parameter."""

    def __init__(self, image_shape: tuple[int, int, int, int]) -> None:
        self.image_shape = image_shape

    def forward(self, params: np.ndarray) -> np.ndarray:
        return np.asarray(params, dtype=np.float64)

    def backward(self, grad_image: np.ndarray) -> np.ndarray:
        return np.asarray(grad_image, dtype=np.float64)

    def inverse(self, images: np.ndarray) -> np.ndarray:
        return np.array(images, dtype=np.float64)


class FFTParam:
    """Scaled half-plane spectrum per channel, colour-decorrelated for 3 channels.

    Parameters have shape ``(N, C, H, W // 2 + 1, 2)`` (real, imaginary). The imaginary parts of
    the self-conjugate bins (DC and Nyquist) do not reach the image; their gradient is zero.

    Args:
        image_shape: (N, H, W, C) of the images.
        decay: exponent of the 1/frequency scale (1 in Lucid; 0 for no damping).
    """

    def __init__(self, image_shape: tuple[int, int, int, int], decay: float = 1.0) -> None:
        self.image_shape = image_shape
        _, h, w, c = image_shape
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        scale = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w)) ** decay
        # Adjoint weights of irfft along the last axis: interior bins stand for two
        # conjugate bins of the full spectrum, the DC and Nyquist bins for one.
        self._w = np.full(fx.shape, 2.0)
        self._w[:, 0] = 1.0
        if w % 2 == 0:
            self._w[:, -1] = 1.0
        self.scale = scale * np.sqrt(h * w / self._column_energy(scale))
        self.colour = _COLOUR if c == 3 else None

    def _column_energy(self, scale: np.ndarray) -> float:
        """trace(P^T P) of one channel without colour mixing: sum of squared column norms."""
        h, w = self.image_shape[1:3]
        real = np.full(scale.shape, 0.5 * h * w)
        imag = real.copy()
        rows = [0] + ([h // 2] if h % 2 == 0 else [])
        cols = [0] + ([w // 2] if w % 2 == 0 else [])
        for r in rows:  # self-conjugate bins: a real cosine over the whole image, no sine
            real[r, cols], imag[r, cols] = h * w, 0.0
        per_bin = (self._w / (h * w)) ** 2 * scale**2 * (real + imag)
        return float(per_bin.sum())

    def forward(self, params: np.ndarray) -> np.ndarray:
        _, h, w, _ = self.image_shape
        spectrum = (params[..., 0] + 1j * params[..., 1]) * self.scale
        image = np.fft.irfft2(spectrum, s=(h, w)).transpose(0, 2, 3, 1)
        return image @ self.colour.T if self.colour is not None else image

    def backward(self, grad_image: np.ndarray) -> np.ndarray:
        _, h, w, _ = self.image_shape
        g = np.asarray(grad_image, dtype=np.float64)
        if self.colour is not None:
            g = g @ self.colour
        spec = np.fft.rfft2(g.transpose(0, 3, 1, 2)) * (self._w / (h * w)) * self.scale
        return np.stack([spec.real, spec.imag], axis=-1)

    def inverse(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float64)
        if self.colour is not None:
            x = x @ np.linalg.inv(self.colour).T
        spec = np.fft.rfft2(x.transpose(0, 3, 1, 2)) / self.scale
        return np.stack([spec.real, spec.imag], axis=-1)


def make_param(name: str, image_shape: tuple[int, int, int, int]) -> Parameterization:
    """The parameterisation called ``name`` ("pixel" or "fft") for images of ``image_shape``."""
    if name == "pixel":
        return PixelParam(image_shape)
    if name == "fft":
        return FFTParam(image_shape)
    raise InputError(f"param={name!r} is unknown; use one of {', '.join(map(repr, PARAMS))}")
