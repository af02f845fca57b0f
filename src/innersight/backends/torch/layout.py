"""NCHW <-> NHWC at the boundary: numpy channels-last outside, torch tensors inside.

Inputs: the numpy batch (N, H, W, C) is wrapped without a copy (``torch.from_numpy``) and, for
an NCHW model, *permuted* to (N, C, H, W). The permuted view is already a ``channels_last``
tensor (NCHW shape, NHWC strides), and CPU convolutions are markedly faster on it than on a
contiguous NCHW copy: whichever of input and weight is channels_last selects oneDNN's NHWC path,
so the user's model is never touched (no ``.to(memory_format=...)`` on it).

Measured on the reference net (150x150x3 input, Conv32-Pool-Conv64-Pool-Conv128-Pool-Conv128-
Pool-Flatten-Dense512-Dense2), torch 2.13 CPU, 2 threads, the Makefile's GLIBC_TUNABLES, best of
5-20 runs on a shared machine (ms, batch 1 / batch 32)::

                                             N=1     N=32
    plain torch forward, contiguous NCHW      8.0    173.6
    plain torch forward, channels_last        4.9     90.5
    adapter.forward (channels_last)           5.4     91.9
    plain torch input grad, contiguous       15.6    319.9
    plain torch input grad, channels_last    11.8    216.1
    adapter.value_and_grad(Logit)            12.3    218.6
      ... relu="guided"                      14.3    229.4
      ... Channel of the 2nd conv             6.5    130.2  (the pass stops after that conv)
    adapter.layer_value_and_grad, 4th conv    6.6     96.2  (the graph is cut at the layer)

So channels_last is worth 1.3-1.9x, and the adapter adds no measurable cost on top of it.
Outputs of both layouts agree within 3e-8; input gradients differ from a float64 reference by
the same ~1.7e-5 in both layouts (max-pool near-ties), i.e. the layout costs no accuracy.
Switching parameters' ``requires_grad`` off for gradient passes made no difference (autograd
only computes what ``torch.autograd.grad(..., inputs=[x])`` needs), so the flags are left alone.

When a model's own code needs contiguous NCHW memory (``x.view(-1, 16 * 5 * 5)`` after a conv,
as in Captum's tutorial CIFAR net and many user models), the channels_last view makes the
convolutions return channels_last activations and ``view`` fails. The adapter then falls back,
once and for good, to a contiguous NCHW copy (``contiguous=True`` here: a clone, so that even
one-channel inputs get true NCHW strides, which ``.contiguous()`` leaves as they are because
a size-1 axis makes the view count as contiguous) and re-runs the pass: such models always
work, at the speed of contiguous NCHW.

Activations and outputs: rank-4 tensors are converted from the layout :mod:`.detect` found for
them (NCHW -> NHWC; NHWC as is) and returned as channels-last numpy; other ranks are returned
unchanged ((N, D) stays (N, D)).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "as_nchw",
    "channels_last_shape",
    "grad_to_numpy",
    "to_model_layout",
    "to_numpy",
    "to_tensor",
    "to_torch_index",
]


def to_tensor(
    x: np.ndarray,
    layout: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    contiguous: bool = False,
) -> torch.Tensor:
    """The model's input tensor for the channels-last batch ``x`` (which the adapter owns).

    ``contiguous=True`` gives an NCHW model true contiguous NCHW memory instead of the fast
    channels_last view (see the module docstring).
    """
    t = torch.from_numpy(np.ascontiguousarray(x))  # a copy only for odd strides (fast path)
    return to_model_layout(t, layout, contiguous=contiguous).to(device=device, dtype=dtype)


def to_model_layout(t: torch.Tensor, layout: str, *, contiguous: bool = False) -> torch.Tensor:
    """A channels-last batch tensor in the model's layout, decided by rank: rank 4 is
    permuted to NCHW for ``layout="NCHW"``, rank 3 to (N, C, L) for ``"NCL"``; other ranks and
    layouts are returned as they are. Differentiable (several inputs are split from one packed
    tensor and put in layout this way, inside the graph)."""
    if layout == "NCL" and t.ndim == 3:
        return t.permute(0, 2, 1)  # (N, L, C) -> (N, C, L)
    if layout == "NCHW" and t.ndim == 4:
        t = t.permute(0, 3, 1, 2)  # a channels_last view: no copy, and the fast conv path
        if contiguous:  # a real copy: .contiguous() keeps one-channel inputs' strides as they are
            return t.clone(memory_format=torch.contiguous_format)
    return t


def as_nchw(t: torch.Tensor, layout: str | None) -> torch.Tensor:
    """A rank-4 tensor of the given layout as an NCHW view (NHWC is permuted, no copy)."""
    return t.permute(0, 3, 1, 2) if layout == "NHWC" and t.ndim == 4 else t


def to_numpy(t: torch.Tensor, layout: str | None = "NCHW") -> np.ndarray:
    """float32 channels-last numpy, copy-free where possible: a rank-4 NCHW tensor becomes
    NHWC, an NHWC one stays as it is."""
    t = t.detach()
    if t.ndim == 4 and layout != "NHWC":
        t = t.permute(0, 2, 3, 1)
    if t.dtype != torch.float32 and t.is_floating_point():
        t = t.float()
    return np.ascontiguousarray(t.cpu().numpy(), dtype=np.float32)


def grad_to_numpy(g: torch.Tensor | None, like: torch.Tensor, layout: str) -> np.ndarray:
    """A gradient w.r.t. the model input back in the numpy input's channels-last layout."""
    if g is None:
        g = torch.zeros_like(like)
    g = g.detach()
    if layout == "NCHW" and g.ndim == 4:
        g = g.permute(0, 2, 3, 1)
    elif layout == "NCL" and g.ndim == 3:
        g = g.permute(0, 2, 1)
    return np.ascontiguousarray(g.float().cpu().numpy(), dtype=np.float32)


def channels_last_shape(
    shape: tuple[int, ...] | torch.Size, layout: str | None = "NCHW"
) -> tuple[int, ...]:
    """(N, C, H, W) -> (N, H, W, C) for an NCHW rank-4 shape; other shapes unchanged."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and layout != "NHWC":
        n, c, h, w = shape
        return (n, h, w, c)
    return shape


def to_torch_index(flat: np.ndarray, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per-sample flat channels-last indices -> index arrays into one sample of the tensor.

    For a rank-4 activation ``sample_shape`` is channels-last (H, W, C) and the result is
    (c, h, w) for the NCHW tensor; for other ranks the flat index is unravelled as is.
    """
    parts = np.unravel_index(flat, sample_shape)
    if len(sample_shape) == 3:
        h, w, c = parts
        return (c, h, w)
    return tuple(parts)
