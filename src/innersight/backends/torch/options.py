"""The options of the torch adapter: validated once, at wrap time.

``input_layout``  ``"NCHW"`` (default: the model takes channels-first tensors and the adapter
                  transposes the channels-last numpy input) or ``"NHWC"`` (the model itself takes
                  channels-last tensors; the input is passed as is). For sequences (N, L, C):
                  ``"NCL"`` (the model takes (N, C, L) tensors, e.g. ``nn.Conv1d``: the input
                  is transposed) or ``"NLC"`` (passed as is: LSTMs with ``batch_first=True``,
                  transformers on (N, T, D) tokens). With an image layout a rank-3 input is
                  passed as is, and with a sequence layout a rank-4 one: the rank decides,
                  nothing is guessed. Layer taps keep the layer's own layout for rank-3
                  tensors (only rank-4 maps are turned channels-last).
``input_shape``   channels-last ``(H, W, C)`` (or ``(D,)``) without the batch axis. When given,
                  inputs are checked against it and one dry forward on zeros gives every layer's
                  output shape right away.
``logits``        ``"auto"``: when the model is an ``nn.Sequential`` ending in ``nn.Softmax``,
                  ``nn.LogSoftmax`` or ``nn.Sigmoid``, Logit objectives read that module's input
                  (the pre-activation score, as gradient methods need). ``False``: the raw output.
                  ``True``: like ``"auto"`` but an error when no final activation is found.
``device``        where inputs are placed; default: the device of the model's first parameter.
``layer_layouts`` ``{"layer name": "NCHW" | "NHWC"}``: the layout of rank-4 tensors that a module
                  returns, for the layers whose layout innersight cannot tell by itself (a tensor
                  made by a functional ``permute``, see :mod:`.detect`); a key
                  ``innersight.input_tap("name")`` sets the layout of what that module receives.
                  Taps of such layers are refused until the layout is given.
``output``        for a model that returns several outputs: which one innersight explains, an
                  index (a tuple or list; also the position in a dict) or a name (a dict key,
                  or an attribute such as HuggingFace's ``ModelOutput.logits``). Without it,
                  such a model is refused with an error listing what it returns.
                  ``logits="auto"`` still reads the input of a final Softmax of an
                  ``nn.Sequential``, which returns one tensor (so ``output`` does not apply).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from innersight.core.adapter import is_input_tap
from innersight.core.errors import (
    CapabilityError,
    InputError,
    LayerNotFoundError,
    did_you_mean,
    summarize_names,
)

__all__ = ["VALID_OPTIONS", "TorchOptions", "final_activation", "parse_options"]

VALID_OPTIONS = ("input_layout", "input_shape", "logits", "device", "layer_layouts", "output")
LAYOUTS = ("NCHW", "NHWC", "NCL", "NLC")
MAP_LAYOUTS = ("NCHW", "NHWC")
FINAL_ACTIVATIONS = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)


@dataclass(frozen=True)
class TorchOptions:
    """Validated adapter options (see the module docstring)."""

    input_layout: str
    input_shape: tuple[int, ...] | None
    logits_from: str | None  # name of the final activation whose input Logit objectives read
    device: torch.device
    dtype: torch.dtype
    layer_layouts: tuple[tuple[str, str], ...] = ()  # (tap name, "NCHW" | "NHWC") pairs
    output: int | str | None = None  # which of several outputs is explained


def parse_options(model: nn.Module, options: dict[str, Any]) -> TorchOptions:
    """Validate ``options`` for ``model``; InputError naming the valid options otherwise."""
    unknown = sorted(set(options) - set(VALID_OPTIONS))
    if unknown:
        hints = "".join(did_you_mean(u, VALID_OPTIONS) for u in unknown)
        raise InputError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the torch backend; "
            f"valid options: {', '.join(VALID_OPTIONS)}{hints}"
        )
    return TorchOptions(
        input_layout=_layout(options.get("input_layout", "NCHW")),
        input_shape=_shape(options.get("input_shape")),
        logits_from=_logits(model, options.get("logits", "auto")),
        device=_device(model, options.get("device")),
        dtype=_dtype(model),
        layer_layouts=_layer_layouts(model, options.get("layer_layouts")),
        output=_output(options.get("output")),
    )


def _output(value: Any) -> int | str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise InputError(
        f"output={value!r} is not an output; pass an index (output=0: the first item of a "
        "returned tuple) or a name (output='logits': a key of a returned dict or an attribute "
        "of a returned ModelOutput)"
    )


def _layout(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LAYOUTS:
        raise InputError(
            f"input_layout={value!r} is not supported; use 'NCHW' (the model takes channels-first "
            "tensors, torch's default) or 'NHWC' (the model takes channels-last tensors); for "
            "sequences 'NCL' (the model takes (N, C, L), e.g. Conv1d) or 'NLC' (it takes (N, L, C))"
        )
    return value.upper()


def _shape(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value)
        ok = all(int(v) == v for v in value) and all(s > 0 for s in shape) and len(shape) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"input_shape={value!r} is not a shape; pass positive ints without the batch axis, "
            "channels last, e.g. input_shape=(224, 224, 3)"
        )
    return shape


def final_activation(model: nn.Module, prefix: str = "") -> str | None:
    """Name of the final Softmax/LogSoftmax/Sigmoid of a (nested) ``nn.Sequential``, or None."""
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        return None
    name, last = list(model.named_children())[-1]
    path = f"{prefix}{name}"
    if isinstance(last, FINAL_ACTIVATIONS):
        return path
    return final_activation(last, prefix=f"{path}.")


def _layer_layouts(model: nn.Module, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    example = "e.g. layer_layouts={'stages.0.blocks.0.drop_path': 'NCHW'}"
    if not isinstance(value, Mapping):
        raise InputError(
            f"layer_layouts={value!r} is not a mapping; pass a dict from layer name to 'NCHW' or "
            f"'NHWC', {example}"
        )
    names = [n for n, _ in model.named_modules(remove_duplicate=False) if n]
    pairs = []
    for name, layout in value.items():
        layer = is_input_tap(name) if isinstance(name, str) else None
        if not isinstance(name, str) or (layer or name) not in names:
            raise LayerNotFoundError(
                f"layer_layouts names {name!r}, which is not a layer of torch model "
                f"{type(model).__name__}; {summarize_names(names)}"
                f"{did_you_mean(str(layer or name), names)}"
            )
        if not isinstance(layout, str) or layout.upper() not in MAP_LAYOUTS:
            raise InputError(
                f"layer_layouts[{name!r}]={layout!r} is not a layout; use 'NCHW' (the tensor is "
                "(N, C, H, W)) or 'NHWC' (it is (N, H, W, C))"
            )
        pairs.append((name, layout.upper()))
    return tuple(pairs)


def _logits(model: nn.Module, value: Any) -> str | None:
    if not (isinstance(value, bool) or (isinstance(value, str) and value == "auto")):
        raise InputError(f"logits={value!r} is not supported; use 'auto', True or False")
    if value is False:
        return None
    found = final_activation(model)
    if value is True and found is None:
        raise CapabilityError(
            f"logits=True, but {type(model).__name__} does not end in a detectable "
            "Softmax/LogSoftmax/Sigmoid (only the last module of an nn.Sequential is detected); "
            "use logits=False to read the raw outputs, or wrap the model without its final "
            "activation"
        )
    return found


def _device(model: nn.Module, value: Any) -> torch.device:
    if value is None:
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
        return torch.device("cpu")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise InputError(
            f"device={value!r} is not a torch device; pass e.g. 'cpu', 'cuda:0' or a "
            "torch.device, or leave it out to use the device of the model's parameters"
        ) from err


def _dtype(model: nn.Module) -> torch.dtype:
    """Inputs are cast to the dtype of the model's first floating-point parameter."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
