"""Array transforms of :mod:`.images`: channel conversion, bilinear resizing, normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from innersight.core.errors import InputError

__all__ = ["convert_channels", "normalise", "resize", "to_size"]

# ITU-R 601-2 luma, as Pillow's convert("L")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_size(size: int | Sequence[int]) -> tuple[int, int]:
    try:
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        h, w = (int(v) for v in pair)
        if h > 0 and w > 0 and len(pair) == 2:
            return h, w
    except (TypeError, ValueError):
        pass
    raise InputError(f"size={size!r} is not an image size; pass (height, width) or one int")


def convert_channels(x: np.ndarray, channels: int, name: str) -> np.ndarray:
    have = x.shape[-1]
    if have == channels:
        return x
    if have == 4 and channels in (1, 3):  # drop alpha
        x, have = x[..., :3], 3
        if channels == 3:
            return x
    if have == 1 and channels in (3, 4):
        rgb = np.repeat(x, 3, axis=-1)
        return rgb if channels == 3 else np.concatenate([rgb, np.full_like(x, x.max())], -1)
    if have == 3 and channels == 1:
        return (x @ _LUMA)[..., None]
    hint = ""
    if x.ndim == 3 and have not in (1, 3, 4):
        hint = "; a stack of grayscale images (N, H, W) needs a channel axis: x[..., None]"
    raise InputError(
        f"input {name!r} has {have} channels and cannot be converted to the {channels} channels "
        f"the model takes (shape {x.shape}){hint}"
    )


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size
    planes = [
        np.asarray(Image.fromarray(x[..., c], mode="F").resize((w, h), Image.Resampling.BILINEAR))
        for c in range(x.shape[-1])
    ]
    return np.stack(planes, axis=-1).astype(np.float32)


def _per_channel(value: float | Sequence[float], channels: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if arr.ndim != 1 or len(arr) not in (1, channels):
        raise InputError(
            f"{what} has {arr.size} values for images with {channels} channels; pass one number "
            f"or {channels}"
        )
    return arr


def normalise(
    x: np.ndarray, mean: float | Sequence[float] | None, std: float | Sequence[float] | None
) -> np.ndarray:
    if mean is not None:
        x = x - _per_channel(mean, x.shape[-1], "mean")
    if std is not None:
        s = _per_channel(std, x.shape[-1], "std")
        if np.any(s == 0):
            raise InputError(f"std={std!r} contains a zero; pass positive numbers")
        x = x / s
    return x.astype(np.float32)
