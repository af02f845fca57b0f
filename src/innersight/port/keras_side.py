"""Reading a Keras 3 Sequential/Functional chain (nested Sequentials flattened) into the
neutral chain."""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core.errors import CapabilityError, InputError
from innersight.port.ir import ACTIVATIONS, Chain, Op, canonicalize, unsupported

__all__ = ["read_keras"]


def _np(variable: Any) -> np.ndarray:
    return np.array(variable.numpy(), dtype=np.float32)


def _chain_layers(model: Any) -> list[Any]:
    """The layers of a Sequential/Functional linear chain, nested Sequentials flattened."""
    import keras

    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if not isinstance(model, keras.Sequential):
        prev = _single(model.inputs, model, "input")
        for layer in layers:
            try:
                inp = layer.input
            except (AttributeError, ValueError) as err:
                raise CapabilityError(
                    f"layer {layer.name!r} ({type(layer).__name__}) of Keras model "
                    f"{model.name!r} is used more than once; only linear chains can be ported"
                ) from err
            if isinstance(inp, (list, tuple, dict)) or inp is not prev:
                raise CapabilityError(
                    f"Keras model {model.name!r} is not a linear chain: layer {layer.name!r} "
                    f"({type(layer).__name__}) does not read the previous layer's output only; "
                    "only chains of layers (no branches, skips or merges) can be ported"
                )
            prev = layer.output
        if _single(model.outputs, model, "output") is not prev:
            raise CapabilityError(f"Keras model {model.name!r} is not a linear chain")
    out: list[Any] = []
    for layer in layers:
        out.extend(_chain_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _single(tensors: Any, model: Any, what: str) -> Any:
    if len(tensors) != 1:
        raise CapabilityError(
            f"Keras model {model.name!r} has {len(tensors)} {what}s; only single-{what} chains "
            "can be ported"
        )
    return tensors[0]


def _input_shape(model: Any) -> tuple[int, ...]:
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, ValueError, IndexError) as err:
        raise InputError(
            f"Keras model {model.name!r} is not built, so its input shape is unknown; start it "
            "with keras.Input(shape) or call model.build((None, *shape)) first"
        ) from err
    if any(s is None for s in shape):
        raise InputError(
            f"Keras model {model.name!r} takes inputs of shape (N, {shape}) with unknown sizes; "
            "pass input_shape=(H, W, C) to fix the size the port is built for"
        )
    return tuple(int(s) for s in shape)


def read_keras(model: Any, input_shape: tuple[int, ...] | None = None) -> Chain:
    """The canonical, resolved chain of a Keras model (weights in Keras layout)."""
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(
            f"expected a Keras model (keras.Sequential or keras.Model), got {type(model).__name__}"
        )
    shape = tuple(input_shape) if input_shape is not None else _input_shape(model)
    ops = [_record(layer, model) for layer in _chain_layers(model)]
    return Chain(model.name, "keras", shape, canonicalize(ops)).resolve()


def _activation(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None)
    return None if name in (None, "linear") else name


def _record(layer: Any, model: Any) -> Op:
    from keras import layers as L

    kind = type(layer)
    op = Op("", layer.name, kind.__name__, {"main": layer.name})
    chain = Chain(model.name, "keras", (), [])
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise unsupported(op, chain, "data_format='channels_first'", "use channels_last")
    if kind in (L.Conv2D, L.Dense):
        op.kind = "conv" if kind is L.Conv2D else "dense"
        op.weights["kernel"] = _np(layer.kernel)
        op.attrs["use_bias"] = bool(layer.use_bias)
        if layer.use_bias:
            op.weights["bias"] = _np(layer.bias)
        if kind is L.Conv2D:
            op.attrs.update(
                filters=int(layer.filters),
                kernel=tuple(layer.kernel_size),
                strides=tuple(layer.strides),
                dilation=tuple(layer.dilation_rate),
                groups=int(layer.groups),
                padding=layer.padding,
            )
        else:
            op.attrs["units"] = int(layer.units)
        act = _activation(layer.activation)
        if act is not None:
            _check_activation(op, chain, act)
            op.act, op.names = act, {"act": layer.name}
    elif kind in (L.MaxPooling2D, L.AveragePooling2D):
        op.kind = "pool"
        op.attrs.update(
            mode="max" if kind is L.MaxPooling2D else "avg",
            size=tuple(layer.pool_size),
            strides=tuple(layer.strides),
            padding=layer.padding,
        )
    elif kind is L.GlobalAveragePooling2D:
        op.kind, op.attrs["keepdims"] = "gap", bool(layer.keepdims)
        if not layer.keepdims:
            op.names = {"flat": layer.name}
    elif kind is L.BatchNormalization:
        _read_bn(op, layer, chain)
    elif kind in (L.Dropout, L.Flatten, L.Identity):
        op.kind = {L.Dropout: "dropout", L.Flatten: "flatten", L.Identity: "identity"}[kind]
        if kind is L.Dropout:
            op.attrs["rate"] = float(layer.rate)
    elif kind is L.ZeroPadding2D:
        (t, b), (left, r) = layer.padding
        op.kind, op.attrs["pads"] = "pad", (int(t), int(b), int(left), int(r))
    elif kind in (L.Activation, L.ReLU, L.Softmax):
        _read_activation(op, layer, chain)
    else:
        raise unsupported(op, chain, "this layer type is not supported", SUPPORTED_HINT)
    return op


SUPPORTED_HINT = (
    "supported: Conv2D, Dense, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, "
    "BatchNormalization, Dropout, Flatten, ZeroPadding2D, Identity, and relu/sigmoid/softmax/tanh "
    "activations (fused or as Activation/ReLU/Softmax layers)"
)


def _check_activation(op: Op, chain: Chain, act: str) -> None:
    if act not in ACTIVATIONS:
        raise unsupported(
            op,
            chain,
            f"activation {act!r} is not supported",
            f"use one of {', '.join(ACTIVATIONS)}",
        )


def _read_activation(op: Op, layer: Any, chain: Chain) -> None:
    from keras import layers as L

    op.kind = "act"
    if isinstance(layer, L.ReLU):
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        if not plain:
            raise unsupported(op, chain, "ReLU with max_value/negative_slope/threshold", "use relu")
        op.attrs["fn"] = "relu"
    elif isinstance(layer, L.Softmax):
        if not _last_axis(layer, layer.axis):
            raise unsupported(op, chain, f"softmax over axis {layer.axis}", "use axis=-1")
        op.attrs["fn"] = "softmax"
    else:
        act = _activation(layer.activation)
        if act is None:
            op.kind = "identity"
            return
        _check_activation(op, chain, act)
        op.attrs["fn"] = act


def _last_axis(layer: Any, axis: Any) -> bool:
    """True when ``axis`` (an int or a one-element list) is the last axis of the layer's input."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    rank = len(layer.input.shape)
    return int(axis) in (-1, rank - 1)


def _read_bn(op: Op, layer: Any, chain: Chain) -> None:
    op.kind = "bn"
    if not _last_axis(layer, layer.axis):
        raise unsupported(op, chain, f"batch norm over axis {layer.axis}", "use axis=-1 (channels)")
    mean = _np(layer.moving_mean)
    gamma = getattr(layer, "gamma", None)
    beta = getattr(layer, "beta", None)
    op.attrs["epsilon"] = float(layer.epsilon)
    op.weights = {
        "gamma": _np(gamma) if gamma is not None else np.ones_like(mean),
        "beta": _np(beta) if beta is not None else np.zeros_like(mean),
        "mean": mean,
        "var": _np(layer.moving_variance),
    }
