"""Building a torch ``nn.Sequential`` (eval mode, NCHW input) from the neutral chain.

One op becomes one or more modules, named after the source layer: a fused activation is a
separate module ``<name>_<activation>`` (``conv1`` -> ``conv1``, ``conv1_relu``); asymmetric
padding (Keras' ``"same"`` with an even kernel, or at stride 2 on an even input) is a
``ZeroPad2d`` named ``<name>_pad`` before it; a global average pool that flattens is
``AdaptiveAvgPool2d(1)`` then a
``Flatten`` named ``<name>_flatten`` (unless the source named its Flatten). Reading the result
back folds exactly these names, so a round trip restores the original layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.port.ir import Chain, Op, unsupported
from innersight.port.layout import conv_kernel_to_torch, dense_kernel_to_torch, rows_to_torch_order

__all__ = ["build_torch", "torch_name"]


def torch_name(name: str, used: set[str]) -> str:
    """A valid, unique ``nn.Sequential`` child name close to ``name`` ('.' becomes '_')."""
    from torch import nn

    reserved = nn.Sequential()
    base = name.replace(".", "_") or "layer"
    out, i = base, 1
    while out in used or hasattr(reserved, out):
        out, i = f"{base}_{i}", i + 1
    used.add(out)
    return out


def build_torch(chain: Chain) -> Any:
    """An ``nn.Sequential`` in eval mode computing the chain on NCHW input."""
    import torch
    from torch import nn

    used: set[str] = set()
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    loads: list[tuple[nn.Module, dict[str, np.ndarray]]] = []
    for i, (op, hwc) in enumerate(zip(chain.ops, chain.flattened(), strict=True)):
        for name, module, weights in _modules(op, chain, i, hwc, used):
            modules[name] = module
            if weights:
                loads.append((module, weights))
    net = nn.Sequential(modules)
    with torch.no_grad():
        for module, weights in loads:
            for attr, value in weights.items():
                getattr(module, attr).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return net.eval()


def _act(fn: str) -> Any:
    from torch import nn

    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}.get(fn, nn.Softmax)(
        *((1,) if fn == "softmax" else ())
    )


def _modules(
    op: Op, chain: Chain, index: int, hwc: tuple[int, ...] | None, used: set[str]
) -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    from torch import nn

    n = op.names
    if op.kind in ("conv", "dense"):
        return _linear(op, chain, index, hwc, used)
    main = torch_name(op.name, used)
    if op.kind == "pool":
        t, b, left, r = op.attrs["pads"]
        if t != b or left != r or 2 * max(t, left) > min(op.attrs["size"]):
            raise unsupported(
                op,
                chain,
                f"its padding {op.attrs['pads']} (top, bottom, left, right) is "
                "asymmetric or over half the window, which torch pooling cannot express",
                "use padding='valid' or an input size the pool divides evenly",
            )
        size, strides = op.attrs["size"], op.attrs["strides"]
        pool: nn.Module
        if op.attrs["mode"] == "max":
            pool = nn.MaxPool2d(size, strides, padding=(t, left))
        else:
            pool = nn.AvgPool2d(size, strides, padding=(t, left), count_include_pad=False)
        return [(main, pool, {})]
    if op.kind == "gap":
        out: list[tuple[str, Any, dict[str, np.ndarray]]] = [(main, nn.AdaptiveAvgPool2d(1), {})]
        if not op.attrs["keepdims"]:
            flat = n["flat"] if "main" in n else f"{op.name}_flatten"
            out.append((torch_name(flat, used), nn.Flatten(), {}))
        return out
    if op.kind == "bn":
        w = {k: rows_to_torch_order(v, hwc) if hwc else v for k, v in op.weights.items()}
        cls = nn.BatchNorm2d if len(chain.in_shape(index)) == 3 else nn.BatchNorm1d
        bn = cls(len(w["mean"]), eps=op.attrs["epsilon"])
        keys = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}
        return [(main, bn, {attr: w[key] for attr, key in keys.items()})]
    if op.kind == "pad":
        t, b, left, r = op.attrs["pads"]
        return [(main, nn.ZeroPad2d((left, r, t, b)), {})]
    simple: dict[str, Callable[[], Any]] = {
        "dropout": lambda: nn.Dropout(op.attrs["rate"]),
        "flatten": nn.Flatten,
        "identity": nn.Identity,
        "act": lambda: _act(op.attrs["fn"]),
    }
    return [(main, simple[op.kind](), {})]


def _linear(
    op: Op, chain: Chain, index: int, hwc: tuple[int, ...] | None, used: set[str]
) -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    from torch import nn

    out: list[tuple[str, Any, dict[str, np.ndarray]]] = []
    a, w = op.attrs, op.weights
    weights = {"weight": w["kernel"], **({"bias": w["bias"]} if a["use_bias"] else {})}
    if op.kind == "dense":
        weights["weight"] = dense_kernel_to_torch(w["kernel"], hwc or None)
        module: Any = nn.Linear(w["kernel"].shape[0], a["units"], bias=a["use_bias"])
        main = torch_name(op.name, used)
    else:
        t, b, left, r = a["pads"]
        padding: Any = (t, left)
        if t != b or left != r:
            # Conv2d pads symmetrically (its padding="same" does the asymmetric case only at
            # stride 1, with a warning on every call): pad explicitly, as Keras does.
            pad_name = torch_name(op.names.get("pad", f"{op.name}_pad"), used)
            out.append((pad_name, nn.ZeroPad2d((left, r, t, b)), {}))
            padding = 0
        main = torch_name(op.name, used)
        in_channels = chain.in_shape(index)[2]
        module = nn.Conv2d(
            in_channels,
            a["filters"],
            a["kernel"],
            stride=a["strides"],
            padding=padding,
            dilation=a["dilation"],
            groups=a["groups"],
            bias=a["use_bias"],
        )
        weights["weight"] = conv_kernel_to_torch(w["kernel"])
    out.append((main, module, weights))
    if op.act is not None:
        act = op.names.get("act", op.name)
        act_name = act if act != op.name else f"{op.name}_{op.act}"
        out.append((torch_name(act_name, used), _act(op.act), {}))
    return out
