"""Which layer of a port computes the same output as a layer of its source."""

from __future__ import annotations

from typing import Any

from innersight.core import frameworks
from innersight.core.errors import InputError
from innersight.port.ir import STAGES, Chain, Op

__all__ = ["framework_of", "layer_map", "read_model"]

# Attributes that must agree for two ops to be the same layer in two frameworks.
_KEYS = {
    "conv": ("filters", "kernel", "strides", "dilation", "groups", "pads"),
    "dense": ("units",),
    "pool": ("mode", "size", "strides", "pads"),
    "gap": ("keepdims",),
    "act": ("fn",),
}


def _native(model: Any) -> Any:
    """The framework model inside an innersight adapter, or the model itself."""
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(model, "value_and_grad") else model


def framework_of(model: Any) -> str | None:
    """ "keras", "torch" (TorchScript included) or None for a model or its adapter, without
    importing either framework (:func:`innersight.core.frameworks.framework_of`)."""
    kind = frameworks.framework_of(_native(model))
    return "torch" if kind == "torchscript" else kind


def _adapter_shape(model: Any) -> tuple[int, ...] | None:
    shape = getattr(model, "input_shape", None) if hasattr(model, "value_and_grad") else None
    return tuple(int(s) for s in shape) if shape and all(s is not None for s in shape) else None


def read_model(model: Any, input_shape: tuple[int, ...] | None = None) -> Chain:
    """The canonical chain of a Keras model or torch ``nn.Sequential`` (or their adapter)."""
    kind = framework_of(model)
    native = _native(model)
    if kind == "keras":
        from innersight.port.keras_side import read_keras

        return read_keras(native, input_shape)
    if kind == "torch":
        from innersight.port.torch_side import read_torch

        shape = input_shape or _adapter_shape(model)
        if shape is None:
            raise InputError(
                f"the layers of torch model {type(native).__name__} can only be matched for a "
                "known input size; pass input_shape=(H, W, C), or wrap it with "
                "innersight.wrap(model, input_shape=(H, W, C))"
            )
        return read_torch(native, shape)
    raise InputError(
        f"expected a Keras model or a torch nn.Module (or an innersight adapter of one), got "
        f"{type(native).__name__}"
    )


def _describe(chain: Chain, i: int) -> str:
    if i >= len(chain.ops):
        return "nothing (the chain ended)"
    op = chain.ops[i]
    return f"{op.kind} {op.label}"


def _same(a: Op, b: Op) -> bool:
    if a.kind != b.kind or a.act != b.act:
        return False
    return all(a.attrs.get(k) == b.attrs.get(k) for k in _KEYS.get(a.kind, ()))


def _reordered(chain: Chain) -> list[bool]:
    """Per op: True when its output is a flattened map in the framework's own order."""
    before = chain.flattened()
    after = [*before[1:], None]
    return [after[i] is not None for i in range(len(chain.ops))]


def layer_map(src: Any, dst: Any, *, input_shape: Any = None) -> dict[str, str]:
    """For each layer of ``src``, the layer of ``dst`` whose OUTPUT is equal.

    ``src`` and ``dst`` are ports of each other (one made by :func:`keras_to_torch` or
    :func:`torch_to_keras`, or two builds of one architecture such as
    ``innersight.models.digits_cnn("torch")`` and ``("keras")``), native or wrapped.

    Left out are layers whose output has no counterpart: the pre-activation output of a torch
    ``Conv2d`` whose ReLU Keras fuses, a ``<name>_pad`` padding module, and the outputs of a
    ``Flatten`` of an HxW map (h*w > 1) up to the next dense layer, which hold the same numbers in
    each framework's own order (Keras (h, w, c), torch (c, h, w)).

    Args:
        input_shape: channels-last ``(H, W, C)``; only needed when neither model knows its input
            size (two torch models not wrapped with ``input_shape``).

    Raises:
        InputError: the models are not ports of each other (the first difference is named).
        CapabilityError: a model holds a layer the port does not support.
    """
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if shape is None:
        for model in (src, dst):
            if framework_of(model) == "keras":
                shape = read_model(model).input_shape
                break
    a, b = (read_model(m, shape if framework_of(m) == "torch" else None) for m in (src, dst))
    for i in range(max(len(a.ops), len(b.ops))):
        if i >= len(a.ops) or i >= len(b.ops) or not _same(a.ops[i], b.ops[i]):
            raise InputError(
                f"{a.framework} model {a.model_name!r} and {b.framework} model {b.model_name!r} "
                f"are not ports of each other: layer {i + 1} is {_describe(a, i)} in the first "
                f"and {_describe(b, i)} in the second; pass an explicit layer_map={{...}} "
                "(or layer_b=...) to compare them"
            )
    out: dict[str, str] = {}
    for op_a, op_b, reordered in zip(a.ops, b.ops, _reordered(a), strict=True):
        if reordered:
            continue
        for stage in STAGES:
            if stage in op_a.names and stage in op_b.names:
                out[op_a.names[stage]] = op_b.names[stage]
    return out
