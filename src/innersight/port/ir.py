"""The framework-neutral chain that both directions of the port go through.

A reader turns a model into a list of :class:`Op` (one record per source layer, weights already
in Keras layout: conv kernels ``(kh, kw, in/groups, out)``, dense kernels ``(in, out)`` whose rows
follow a Keras ``Flatten``'s ``(h, w, c)`` order). :func:`canonicalize` then folds the layers
that the other framework expresses as one layer into one op, so ports of one model give the same
chain whatever side they were read from:

* an activation right after a conv/dense becomes that op's ``act``;
* a zero-padding layer named ``<conv>_pad`` right before conv/pool ``<conv>`` becomes its padding;
* a ``Flatten`` right after a global average pool becomes the pool's flattening.

Every op records, per *stage*, the source layer whose output is that stage's output:
``pad`` (the padded input), ``main`` (the op itself, before its activation), ``act`` (after the
activation) and ``flat`` (a global pool's flattened output). ``layer_map`` aligns two chains op by
op and stage by stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from innersight.core.errors import CapabilityError

__all__ = ["ACTIVATIONS", "STAGES", "Chain", "Op", "canonicalize", "same_pads"]

ACTIVATIONS = ("relu", "sigmoid", "softmax", "tanh")
STAGES = ("pad", "main", "act", "flat")
FUSES_ACTIVATION = ("conv", "dense")
Shape = tuple[int, ...]


@dataclass
class Op:
    """One layer of the chain (see the module docstring)."""

    kind: str  # conv dense pool gap bn dropout flatten act pad identity
    name: str  # the source layer that holds the op (its weights)
    layer_type: str  # the source layer's class name, for messages
    names: dict[str, str] = field(default_factory=dict)  # stage -> source layer name
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    act: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.layer_type})"


def _fold(prev: Op, op: Op) -> bool:
    """Fold ``op`` into ``prev`` when the other framework would hold both in one layer."""
    if op.kind == "act" and prev.kind in FUSES_ACTIVATION and prev.act is None:
        prev.act = op.attrs["fn"]
        prev.names["act"] = op.name
        if op.attrs.get("dim") is not None:
            prev.attrs["act_dim"] = op.attrs["dim"]
        return True
    if op.kind == "flatten" and prev.kind == "gap" and prev.attrs["keepdims"]:
        prev.attrs["keepdims"] = False
        prev.names["flat"] = op.name
        return True
    return False


def canonicalize(ops: Sequence[Op]) -> list[Op]:
    """Fold activations, ``<name>_pad`` paddings and GAP+Flatten (see the module docstring)."""
    out: list[Op] = []
    pending_pad: Op | None = None
    for op in ops:
        if pending_pad is not None:
            foldable = op.kind in ("conv", "pool") and op.attrs.get("padding") != "same"
            if foldable and pending_pad.name == f"{op.name}_pad":
                pads = np.add(pending_pad.attrs["pads"], op.attrs.get("pads", (0, 0, 0, 0)))
                op.attrs["pads"] = tuple(int(p) for p in pads)
                op.attrs.pop("padding", None)
                op.names = {"pad": pending_pad.name, **op.names}
            else:
                out.append(pending_pad)
            pending_pad = None
        if op.kind == "pad":
            pending_pad = op
        elif not (out and _fold(out[-1], op)):
            out.append(op)
    if pending_pad is not None:
        out.append(pending_pad)
    return out


def same_pads(size: Shape, kernel: Shape, strides: Shape, dilation: Shape = (1, 1)) -> Shape:
    """Keras/TensorFlow ``padding="same"`` as ``(top, bottom, left, right)`` for ``size``."""
    pads: list[int] = []
    for n, k, s, d in zip(size, kernel, strides, dilation, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def conv_out(size: Shape, kernel: Shape, strides: Shape, dilation: Shape, pads: Shape) -> Shape:
    """Spatial output size of a conv/pool window with explicit (t, b, l, r) padding."""
    return tuple(
        (n + pads[2 * i] + pads[2 * i + 1] - d * (k - 1) - 1) // s + 1
        for i, (n, k, s, d) in enumerate(zip(size, kernel, strides, dilation, strict=True))
    )


@dataclass
class Chain:
    """A canonical chain with its channels-last input shape and each op's output shape."""

    model_name: str
    framework: str
    input_shape: Shape
    ops: list[Op]
    shapes: list[Shape] = field(default_factory=list)

    def resolve(self) -> Chain:
        """Resolve ``padding="same"`` to explicit pads and compute every output shape."""
        shape = tuple(self.input_shape)
        self.shapes = []
        for op in self.ops:
            shape = _out_shape(op, shape, self)
            self.shapes.append(shape)
        return self

    def in_shape(self, index: int) -> Shape:
        return tuple(self.input_shape) if index == 0 else self.shapes[index - 1]

    def flattened(self) -> list[Shape | None]:
        """Per op: the ``(h, w, c)`` of a flattened map (h*w > 1) its INPUT is ordered by.

        Keras flattens ``(h, w, c)`` and torch ``(c, h, w)``: until the next dense layer, those
        vectors hold the same numbers in a different order (so dense rows and 1-D batch-norm
        statistics must be permuted). A chain whose output is such a vector cannot be ported.
        """
        state: Shape | None = None
        out: list[Shape | None] = []
        for i, op in enumerate(self.ops):
            out.append(state)
            if op.kind == "flatten":
                hwc = self.in_shape(i)
                state = hwc if len(hwc) == 3 and hwc[0] * hwc[1] > 1 else None
            elif op.kind == "dense":
                state = None
        if state is not None:
            raise CapabilityError(
                f"{self.framework} model {self.model_name!r} outputs a flattened "
                f"{state[0]}x{state[1]}x{state[2]} feature map: Keras flattens (h, w, c) and torch "
                "(c, h, w), so a port would output the same numbers in another order; end the "
                "model with a Dense/Linear layer or pool the map first (GlobalAveragePooling2D)"
            )
        return out


def unsupported(op: Op, chain: Chain, why: str, fix: str) -> CapabilityError:
    return CapabilityError(
        f"cannot port layer {op.label} of {chain.framework} model {chain.model_name!r}: {why}; "
        f"{fix}"
    )


def _out_shape(op: Op, shape: Shape, chain: Chain) -> Shape:
    spatial = op.kind in ("conv", "pool", "gap", "pad")
    if spatial and len(shape) != 3:
        raise unsupported(op, chain, f"it needs an (H, W, C) input, got {shape}", "check the model")
    if op.kind == "conv":
        a = op.attrs
        if a.pop("padding", None) == "same":
            a["pads"] = same_pads(shape[:2], a["kernel"], a["strides"], a["dilation"])
        a.setdefault("pads", (0, 0, 0, 0))
        return (
            *conv_out(shape[:2], a["kernel"], a["strides"], a["dilation"], a["pads"]),
            a["filters"],
        )
    if op.kind == "pool":
        return _pool_shape(op, shape, chain)
    if op.kind == "gap":
        return (1, 1, shape[2]) if op.attrs["keepdims"] else (shape[2],)
    if op.kind == "pad":
        t, b, left, r = op.attrs["pads"]
        return (shape[0] + t + b, shape[1] + left + r, shape[2])
    if op.kind == "flatten":
        return (int(np.prod(shape)),)
    if op.kind == "dense":
        if len(shape) != 1:
            raise unsupported(
                op, chain, f"it is applied to an {shape} input (per position)", "Flatten first"
            )
        return (op.attrs["units"],)
    if op.kind == "bn" and len(shape) not in (1, 3):
        raise unsupported(op, chain, f"batch norm of a rank-{len(shape)} input", "use 2-D or 4-D")
    return shape


def _pool_shape(op: Op, shape: Shape, chain: Chain) -> Shape:
    a = op.attrs
    if a.pop("padding", None) == "same":
        a["pads"] = same_pads(shape[:2], a["size"], a["strides"])
    a.setdefault("pads", (0, 0, 0, 0))
    out = conv_out(shape[:2], a["size"], a["strides"], (1, 1), a["pads"])
    if a.pop("ceil_mode", False):
        ceil = tuple(
            -(-(n + a["pads"][2 * i] + a["pads"][2 * i + 1] - k) // s) + 1
            for i, (n, k, s) in enumerate(zip(shape[:2], a["size"], a["strides"], strict=True))
        )
        if ceil != out:
            raise unsupported(
                op,
                chain,
                f"ceil_mode=True changes its output ({ceil} instead of {out})",
                "use ceil_mode=False or an input size the pooling divides evenly",
            )
    return (*out, shape[2])
