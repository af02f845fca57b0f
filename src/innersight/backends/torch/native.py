"""torch tensors at innersight's boundary: in as channels-last numpy, maps back as tensors.

:func:`from_native` reads a tensor the way the adapter would feed its numpy twin to the model,
backwards: for ``input_layout="NCHW"`` a rank-4 (N, C, H, W) tensor becomes (N, H, W, C)
numpy, for ``"NCL"`` a rank-3 (N, C, L) one becomes (N, L, C); other ranks and layouts are
taken as they are. Floating tensors become float32, integer tensors (token ids) keep their
integer dtype. The result is always a copy: the caller's tensor, its ``.grad``,
``requires_grad`` and version counter are never touched (the tensor is only read, through
``detach()``).

:func:`to_native` does the reverse for a map: a tensor on the device of the input it explains
(``like``), of ``like``'s floating dtype (float32 for integer inputs), with the channels moved
back first when the map has ``like``'s channels-last shape. A reduced map (N, H, W) of an
(N, C, H, W) input stays (N, H, W).

Both work on any device (a CUDA tensor is copied to the host once, and maps are copied back to
its device); the tests run on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from innersight.core.errors import InputError

__all__ = ["channels_last_shape_of", "from_native", "to_native"]


def _moves_channels(ndim: int, layout: str) -> bool:
    return (layout == "NCHW" and ndim == 4) or (layout == "NCL" and ndim == 3)


def channels_last_shape_of(t: torch.Tensor, layout: str) -> tuple[int, ...]:
    """The shape :func:`from_native` gives ``t``."""
    shape = tuple(int(s) for s in t.shape)
    if _moves_channels(len(shape), layout):
        return (shape[0], *shape[2:], shape[1])
    return shape


def from_native(x: Any, layout: str) -> np.ndarray | None:
    """``x`` as channels-last numpy (a copy), or None when ``x`` is not a torch tensor."""
    if not isinstance(x, torch.Tensor):
        return None
    t = x.detach()
    if _moves_channels(t.ndim, layout):
        t = t.movedim(1, -1)
    if t.is_floating_point():
        t = t.float()
    elif t.is_complex():
        raise InputError(
            f"a complex tensor (dtype {t.dtype}) cannot be explained; pass real values"
        )
    # A copy always: on the CPU .numpy() shares the tensor's memory.
    return np.array(t.resolve_neg().cpu().numpy(), copy=True)


def to_native(values: np.ndarray, like: Any, layout: str) -> torch.Tensor:
    """``values`` (channels-last numpy) as a tensor on ``like``'s device and float dtype, with
    the channels moved back where ``like`` had them first (see the module docstring)."""
    if not isinstance(like, torch.Tensor):
        raise InputError(
            f"to_native needs the torch tensor that was explained, got {type(like).__name__}"
        )
    arr = np.asarray(values)
    dtype = like.dtype if like.is_floating_point() else torch.float32
    t = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    if arr.shape == channels_last_shape_of(like, layout) and _moves_channels(like.ndim, layout):
        t = t.movedim(-1, 1).contiguous()
    return t.to(device=like.device, dtype=dtype)
