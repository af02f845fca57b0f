"""Hooks and model state, always undone: the user's model leaves every call as it came in.

* :func:`eval_mode` sets every module's ``training`` flag to False for the call and restores each
  flag in ``finally`` (attributes are set directly: a user's overridden ``train()`` is not run).
* :func:`hooked` registers forward (pre-)hooks and removes every handle in ``finally``, on
  success, on error and on ``KeyboardInterrupt``.
* :class:`StopForward` ends a forward pass early, once the layer an objective reads has run. It
  derives from ``BaseException`` so that a model's own ``except Exception`` cannot swallow it.
* :func:`call_model` runs the model and turns shape errors into an :class:`InputError` that
  explains the layout conventions. Memory-format errors (``x.view`` on a channels_last
  activation, see :func:`is_stride_error`) are not shape errors: they pass through unchanged,
  for the adapter to retry with a contiguous input, and never come with layout advice. A
  ``forward()`` called with the wrong number of arguments (a two-input model given one array)
  becomes an InputError that says how to pass several inputs.

Parameters' ``requires_grad`` flags are never touched: ``torch.autograd.grad(..., inputs=[x])``
computes only the gradients it needs (measured: no speed difference from switching the flags
off), and nothing is accumulated into ``.grad``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from innersight.core.errors import CapabilityError, InputError

__all__ = [
    "Hook",
    "StopForward",
    "call_model",
    "channels_first_hint",
    "eval_mode",
    "hooked",
    "is_stride_error",
]

# Messages of torch errors that mean "this input does not fit the model".
_SHAPE_ERROR = re.compile(
    r"channels|shape|size mismatch|sizes? of tensor|must match|Expected .*(input|dim)|"
    r"dimension|weight of size|cannot be multiplied|Kernel size can't be greater|"
    r"Output size is too small",
    re.IGNORECASE,
)

# Messages of torch errors that mean "this op needs other strides" (memory format, not shape).
_STRIDE_ERROR = re.compile(
    r"view size is not compatible with input tensor's size and stride|"
    r"spans across two contiguous subspaces|(input|tensor) (is|must be) (not )?contiguous|"
    r"non-contiguous",
    re.IGNORECASE,
)


def is_stride_error(err: BaseException) -> bool:
    """True for a torch error about memory layout (``.view`` on a channels_last tensor)."""
    return isinstance(err, RuntimeError) and bool(_STRIDE_ERROR.search(str(err)))


class StopForward(BaseException):
    """Raised by a hook to end the forward pass once everything needed has been computed."""


@dataclass(frozen=True)
class Hook:
    """A forward hook (``pre=False``) or forward pre-hook (``pre=True``) for one module."""

    module: nn.Module
    fn: Callable[..., Any]
    pre: bool = False


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the duration; each ``training`` flag restored after.

    Only modules in training mode are touched (``nn.Module.__setattr__`` is slow enough to
    matter per call on a model already in eval mode, the usual case)."""
    training = [m for m in model.modules() if m.training]
    try:
        for m in training:
            m.training = False
        yield
    finally:
        for m in training:
            m.training = True


@contextmanager
def hooked(hooks: Sequence[Hook]) -> Iterator[None]:
    """Register ``hooks`` in order; every handle is removed in ``finally``."""
    handles = []
    try:
        for h in hooks:
            _no_script(h.module)
            if h.pre:
                handles.append(h.module.register_forward_pre_hook(h.fn))
            else:
                handles.append(h.module.register_forward_hook(h.fn))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()


def _no_script(module: nn.Module) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise CapabilityError(
            f"{getattr(module, 'original_name', type(module).__name__)} is a TorchScript module, "
            "which takes no hooks: innersight cannot read its layers, so layer taps and "
            "Channel/Neuron objectives (activation grids, filter maximization, Grad-CAM, "
            "embeddings) need the eager model (load it from a 'package.module:callable' spec "
            "with --weights); output-gradient techniques (saliency, occlusion, ...) work"
        )


def call_model(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layout: str,
    numpy_shape: tuple[int, ...],
    more: Sequence[Any] = (),
) -> Any:
    """``model(x, *more)``; a shape/channel mismatch becomes an InputError saying what to
    change, and so does a ``forward()`` that wants more (or fewer) arguments."""
    try:
        return model(x, *more)
    except TypeError as err:
        if not _ARGUMENT_ERROR.search(str(err)):
            raise
        raise InputError(_arguments_message(model, 1 + len(more), err)) from err
    except (RuntimeError, ValueError, IndexError) as err:
        if isinstance(err, InputError) or is_stride_error(err) or not _SHAPE_ERROR.search(str(err)):
            raise
        raise InputError(_layout_message(model, x, layout, numpy_shape, err)) from err


# TypeErrors of a forward() called with the wrong number of arguments.
_ARGUMENT_ERROR = re.compile(
    r"forward\(\) (missing \d+ required positional argument|takes \d+ positional argument)"
)


def _arguments_message(model: nn.Module, given: int, err: Exception) -> str:
    return (
        f"torch model {type(model).__name__} was called with {given} argument(s): {err}. "
        "A model whose forward() takes several inputs is explained with a tuple of inputs, "
        "one array per argument: innersight.explain(technique, model, (a, b)); arguments that "
        "are not explained (masks, lengths) go in additional_forward_args=(mask,)"
    )


def _first_conv(model: nn.Module) -> tuple[str, int] | None:
    """(name, input channels) of the model's first 2-D convolution, or None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, int(m.in_channels)
    return None


def _layout_fits(model: nn.Module, layout: str, shape: tuple[int, ...], err: Exception) -> str:
    """The sentence saying the layout is right, when it evidently is (the channel count
    matches the first convolution and torch does not complain about channels); else ""."""
    conv = _first_conv(model)
    if layout != "NCHW" or conv is None or len(shape) != 4 or "channels" in str(err):
        return ""
    name, channels = conv
    if shape[3] != channels or shape[1] == channels:
        return ""
    return (
        f"; the layout is not the cause: the inputs' {channels} channel(s) match the first "
        f"convolution {name!r}; the model probably takes another image size than the "
        f"{shape[1]}x{shape[2]} given (e.g. a flatten sized for its training images): pass "
        "images of that size, and declare it with input_shape=(H, W, C) to have inputs checked"
    )


def _layout_message(
    model: nn.Module, x: torch.Tensor, layout: str, numpy_shape: tuple[int, ...], err: Exception
) -> str:
    fed = f"an {layout} tensor of shape {tuple(x.shape)}"
    head = (
        f"torch model {type(model).__name__} failed on inputs of shape {numpy_shape}, fed to it as "
        f"{fed}: {str(err).strip().splitlines()[0]}"
    )
    msg = head + (
        ". innersight takes channels-last numpy (N, H, W, C) and, with input_layout='NCHW' (the "
        "default), transposes it to (N, C, H, W)"
    )
    fits = _layout_fits(model, layout, numpy_shape, err)
    if fits:
        return msg + fits
    if layout == "NCHW":
        msg += "; if the model itself takes NHWC tensors, wrap it with input_layout='NHWC'"
    else:
        msg += "; if the model takes NCHW tensors, wrap it with input_layout='NCHW'"
    if len(numpy_shape) == 4 and numpy_shape[1] in (1, 3, 4) and numpy_shape[3] not in (1, 3, 4):
        msg += "; your array looks channels-first: transpose it with x.transpose(0, 2, 3, 1)"
    if len(numpy_shape) == 3 and layout not in ("NCL", "NLC"):
        msg += (
            "; for a sequence model taking (N, C, L) tensors (Conv1d), wrap it with "
            "input_layout='NCL' and pass (N, L, C) numpy; for one image (H, W, C) add the "
            "batch axis: x[None]"
        )
    return msg + "; check the input_shape option too"


def channels_first_hint(shape: Any, expected: tuple[int, ...] | None, message: str) -> str:
    """A hint for (N, C, H, W) data, the most common torch mistake, which core's shape check
    does not point out when the spatial size is declared."""
    if expected is None or len(expected) != 3 or len(shape) != 4 or "channels-first" in message:
        return ""
    if tuple(shape[1:]) == (expected[2], expected[0], expected[1]):
        return "; this looks channels-first (N, C, H, W): transpose with x.transpose(0, 2, 3, 1)"
    return ""
