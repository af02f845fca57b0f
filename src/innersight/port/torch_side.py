"""Reading a torch ``nn.Sequential`` (nested Sequentials flattened) into the neutral chain.

torch flattens ``(c, h, w)``: the reader reorders the rows of a ``Linear`` (and the statistics of
a ``BatchNorm1d``) that follow a ``Flatten`` into Keras' ``(h, w, c)`` order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.port.ir import Chain, Op, canonicalize, unsupported
from innersight.port.layout import (
    conv_kernel_from_torch,
    dense_kernel_from_torch,
    rows_from_torch_order,
)

__all__ = ["read_torch"]

SUPPORTED_HINT = (
    "supported: Conv2d, Linear, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), BatchNorm1d/2d, "
    "Dropout, Flatten, ZeroPad2d, Identity, ReLU, Sigmoid, Softmax, Tanh, nested nn.Sequential"
)


def _np(tensor: Any) -> np.ndarray:
    return np.array(tensor.detach().cpu().float().numpy(), dtype=np.float32)


def _leaves(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    from torch import nn

    out: list[tuple[str, Any]] = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        out.extend(
            _leaves(child, f"{path}.") if isinstance(child, nn.Sequential) else [(path, child)]
        )
    return out


def read_torch(module: Any, input_shape: tuple[int, ...]) -> Chain:
    """The canonical, resolved chain of an ``nn.Sequential`` taking NCHW input."""
    from torch import nn

    if not isinstance(module, nn.Module):
        raise InputError(f"expected a torch nn.Module, got {type(module).__name__}")
    if not isinstance(module, nn.Sequential):
        raise InputError(
            f"only torch nn.Sequential models can be ported (their layer order is their "
            f"computation), got {type(module).__name__}; rebuild it as an nn.Sequential"
        )
    name = type(module).__name__
    chain = Chain(name, "torch", tuple(int(s) for s in input_shape), [])
    chain.ops = canonicalize([_record(path, m, chain) for path, m in _leaves(module)])
    chain.resolve()
    for i, op in enumerate(chain.ops):
        _check_softmax_dim(op, chain, len(chain.in_shape(i)))
    for op, hwc in zip(chain.ops, chain.flattened(), strict=True):
        if hwc is not None and op.kind in ("dense", "bn"):
            _from_torch_order(op, hwc)
    return chain


def _check_softmax_dim(op: Op, chain: Chain, rank: int) -> None:
    """torch's softmax must run over the channels, the axis Keras' softmax uses (the last)."""
    if "softmax" not in (op.act, op.attrs.get("fn")):
        return
    dim = op.attrs.get("act_dim", op.attrs.get("dim"))
    if dim is not None and dim not in (1, 1 - (rank + 1)):
        raise unsupported(
            op, chain, f"softmax over dim={dim} of a rank-{rank + 1} NCHW tensor", "use dim=1"
        )


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _record(path: str, m: Any, chain: Chain) -> Op:
    from torch import nn

    kind = type(m)
    op = Op("", path, kind.__name__, {"main": path})
    if kind is nn.Conv2d:
        _read_conv(op, m, chain)
    elif kind is nn.Linear:
        op.kind = "dense"
        op.attrs.update(units=int(m.out_features), use_bias=m.bias is not None)
        op.weights["kernel"] = dense_kernel_from_torch(_np(m.weight))
        if m.bias is not None:
            op.weights["bias"] = _np(m.bias)
    elif kind in (nn.MaxPool2d, nn.AvgPool2d):
        _read_pool(op, m, chain)
    elif kind is nn.AdaptiveAvgPool2d:
        if _pair(m.output_size) != (1, 1):
            raise unsupported(op, chain, f"output_size={m.output_size}", "use output_size=1")
        op.kind, op.attrs["keepdims"] = "gap", True
    elif kind in (nn.BatchNorm1d, nn.BatchNorm2d):
        if m.running_mean is None:
            raise unsupported(op, chain, "track_running_stats=False", "track running statistics")
        mean = _np(m.running_mean)
        op.kind, op.attrs["epsilon"] = "bn", float(m.eps)
        op.weights = {
            "gamma": _np(m.weight) if m.affine else np.ones_like(mean),
            "beta": _np(m.bias) if m.affine else np.zeros_like(mean),
            "mean": mean,
            "var": _np(m.running_var),
        }
    elif kind is nn.Flatten:
        if (m.start_dim, m.end_dim) != (1, -1):
            raise unsupported(
                op, chain, f"start_dim={m.start_dim}, end_dim={m.end_dim}", "use nn.Flatten()"
            )
        op.kind = "flatten"
    elif kind in (nn.Dropout, nn.Identity):
        op.kind = "dropout" if kind is nn.Dropout else "identity"
        if kind is nn.Dropout:
            op.attrs["rate"] = float(m.p)
    elif kind is nn.ZeroPad2d:
        left, r, t, b = (int(p) for p in m.padding)
        op.kind, op.attrs["pads"] = "pad", (t, b, left, r)
    elif kind in _act_modules():
        op.kind, op.attrs["fn"] = "act", _act_modules()[kind]
        if kind is nn.Softmax:
            op.attrs["dim"] = m.dim
    else:
        raise unsupported(op, chain, "this layer type is not supported", SUPPORTED_HINT)
    return op


def _act_modules() -> dict[Any, str]:
    from torch import nn

    return {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax", nn.Tanh: "tanh"}


def _read_conv(op: Op, m: Any, chain: Chain) -> None:
    if m.padding_mode != "zeros":
        raise unsupported(op, chain, f"padding_mode={m.padding_mode!r}", "use padding_mode='zeros'")
    op.kind = "conv"
    op.attrs.update(
        filters=int(m.out_channels),
        kernel=_pair(m.kernel_size),
        strides=_pair(m.stride),
        dilation=_pair(m.dilation),
        groups=int(m.groups),
        use_bias=m.bias is not None,
    )
    if isinstance(m.padding, str):
        op.attrs["padding"] = m.padding
    else:
        ph, pw = _pair(m.padding)
        op.attrs["pads"] = (ph, ph, pw, pw)
    op.weights["kernel"] = conv_kernel_from_torch(_np(m.weight))
    if m.bias is not None:
        op.weights["bias"] = _np(m.bias)


def _read_pool(op: Op, m: Any, chain: Chain) -> None:
    from torch import nn

    is_max = isinstance(m, nn.MaxPool2d)
    if is_max and (_pair(m.dilation) != (1, 1) or m.return_indices):
        raise unsupported(op, chain, "dilation or return_indices", "use a plain MaxPool2d")
    if not is_max and (m.divisor_override or (m.count_include_pad and _pair(m.padding) != (0, 0))):
        raise unsupported(
            op,
            chain,
            "count_include_pad=True with padding, or divisor_override (Keras averages "
            "over the real pixels only)",
            "use count_include_pad=False",
        )
    ph, pw = _pair(m.padding)
    op.kind = "pool"
    op.attrs.update(
        mode="max" if is_max else "avg",
        size=_pair(m.kernel_size),
        strides=_pair(m.stride if m.stride is not None else m.kernel_size),
        pads=(ph, ph, pw, pw),
        ceil_mode=bool(m.ceil_mode),
    )


def _from_torch_order(op: Op, hwc: tuple[int, ...]) -> None:
    keys = ("kernel",) if op.kind == "dense" else ("gamma", "beta", "mean", "var")
    for key in keys:
        op.weights[key] = rows_from_torch_order(op.weights[key], hwc)
