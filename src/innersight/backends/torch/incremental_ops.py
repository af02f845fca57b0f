"""Which torch.fx nodes can be recomputed on a crop, and how (see :mod:`.incremental`).

:func:`classify` looks at one node of the traced graph, with every node's output shape and the
prefix found so far, and returns a :class:`CropOp` (its kind, the geometry of a window op, a
function that runs it on a padded crop), or why it cannot be cropped, or None for nodes that do
not read the prefix. Modules are matched by exact type: a subclass may compute something else.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.utils import _pair

__all__ = ["CropOp", "classify", "display"]

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d,
)  # fmt: skip
_POINTWISE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.mish,
    F.dropout, F.dropout2d,
}  # fmt: skip
_POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_ADD = {operator.add, operator.iadd, torch.add}
_ARITHMETIC = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul,
}  # fmt: skip
_IN_PLACE = {operator.iadd, operator.isub, operator.imul, operator.itruediv, F.relu_, torch.relu_}


@dataclass
class CropOp:
    """One prefix node: its kind, the prefix nodes it reads, and how to run it on a crop."""

    node: fx.Node
    op: str  # "input" | "window" | "pointwise" | "add"
    reads: tuple[fx.Node, ...] = ()
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    pad_value: float = 0.0
    run: Callable[[torch.Tensor], torch.Tensor] | None = None  # window ops, on a padded crop
    macs: float = 0.0


def classify(
    node: fx.Node,
    gm: fx.GraphModule,
    shapes: dict[fx.Node, tuple[int, ...]],
    index: dict[fx.Node, int],
    logits: str | None,
) -> CropOp | str | None:
    """The node's crop op; or why it cannot be cropped (a string) where it reads the prefix
    (``index``: the prefix so far); or None for a node that does not read the prefix at all
    (constants, the output). ``logits``: the target of the module whose input is the logits
    tap, kept out of the prefix."""
    if node.op == "placeholder":
        first = not index and len(shapes.get(node, ())) == 4
        return CropOp(node, "input") if first else f"{node.name!r}: a second model input"
    reads = tuple(node.all_input_nodes)
    if node.op in ("get_attr", "output") or not any(r in index for r in reads):
        return None
    what = _kind(node, gm)
    if not all(r in index for r in reads):
        return None  # it also reads a tail node: in the tail, and not the reason it ends
    shape = shapes.get(node, ())
    if len(shape) != 4:
        return f"{what}: its output is not image-shaped"
    if node.op == "call_module" and node.target == logits:
        return f"{what}: the logits tap reads its input"
    if _in_place(node, gm) and any(len(r.users) > 1 for r in reads[:1]):
        return f"{what}: in place, on a tensor that other layers read too"
    if node.op == "call_module":
        return _module_op(node, gm.get_submodule(str(node.target)), shapes, what)
    return _function_op(node, reads, shapes, what)


def _module_op(
    node: fx.Node, m: nn.Module, shapes: dict[fx.Node, tuple[int, ...]], what: str
) -> CropOp | str:
    if m._forward_hooks or m._forward_pre_hooks or _global_hooks():
        return f"{what}: it has forward hooks, which would see crops"
    reads = tuple(node.all_input_nodes)
    if len(reads) != 1 or len(node.args) != 1 or node.kwargs:
        return f"{what}: called with several arguments"
    in_shape, out_shape = shapes[reads[0]], shapes[node]
    kind = type(m)
    if isinstance(m, nn.Conv2d) and kind is nn.Conv2d:
        return _conv(node, m, in_shape, what)
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        return _pool(node, m, in_shape, out_shape, what)
    if kind in _POINTWISE_MODULES and in_shape == out_shape:
        if kind is nn.BatchNorm2d and getattr(m, "running_mean", None) is None:
            return f"{what}: no running statistics (batch statistics even in eval mode)"
        return CropOp(node, "pointwise", reads, macs=float(in_shape[1]))
    return f"{what} cannot be cropped"


def _conv(node: fx.Node, m: nn.Conv2d, in_shape: tuple[int, ...], what: str) -> CropOp | str:
    if m.padding_mode != "zeros":
        return f"{what}: padding_mode={m.padding_mode!r} (only zero padding can be cropped)"
    k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
    if isinstance(m.padding, str):  # "same" pads (k - 1) * d // 2 before, the rest after
        p = (0, 0) if m.padding == "valid" else ((k[0] - 1) * d[0] // 2, (k[1] - 1) * d[1] // 2)
    else:
        p = _pair(m.padding)

    def run(crop: torch.Tensor) -> torch.Tensor:
        return F.conv2d(crop, m.weight, m.bias, s, 0, d, m.groups)

    macs = float(m.out_channels * (in_shape[1] // m.groups) * k[0] * k[1])
    return CropOp(node, "window", tuple(node.all_input_nodes), k, s, p, d, 0.0, run, macs)


def _pool(
    node: fx.Node, m: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...], what: str
) -> CropOp | str:
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    p = _pair(m.padding)
    if isinstance(m, nn.MaxPool2d):
        d = _pair(m.dilation)
        if m.return_indices:
            return f"{what}: return_indices=True"

        def run(crop: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(crop, k, s, 0, d)

        value = float("-inf")
    else:
        d, value = (1, 1), 0.0
        floor = [(in_shape[2 + a] + 2 * p[a] - k[a]) // s[a] + 1 for a in (0, 1)]
        if (any(p) and not m.count_include_pad) or list(out_shape[2:]) != floor:
            return f"{what}: padding left out of the mean, or ceil_mode partial windows"
        divisor = cast(Optional[int], m.divisor_override)  # noqa: UP045 (a runtime cast)

        def run(crop: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(crop, k, s, 0, False, True, divisor)

    macs = float(in_shape[1] * k[0] * k[1])
    return CropOp(node, "window", tuple(node.all_input_nodes), k, s, p, d, value, run, macs)


def _function_op(
    node: fx.Node, reads: tuple[fx.Node, ...], shapes: dict[fx.Node, tuple[int, ...]], what: str
) -> CropOp | str:
    target, shape = node.target, shapes[node]
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if node.op == "call_function" and target in _ADD and len(tensors) == 2 and not node.kwargs:
        if len(node.args) == 2 and all(shapes[t] == shape for t in tensors):
            return CropOp(node, "add", tuple(tensors), macs=float(shape[1]))
        return f"{what}: an add that broadcasts"
    same = len(reads) == 1 and shapes[reads[0]] == shape and node.args[:1] == (reads[0],)
    if node.op == "call_method":
        ok = target in _POINTWISE_METHODS and len(node.args) == 1
    elif target in (F.dropout, F.dropout2d):
        ok = not node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
    else:
        ok = target in _POINTWISE_FUNCTIONS or _scalar_arithmetic(node)
    if ok and (same or _scalar_arithmetic(node)) and len(reads) == 1:
        return CropOp(node, "pointwise", reads, macs=float(shape[1]))
    return f"{what} cannot be cropped"


def _scalar_arithmetic(node: fx.Node) -> bool:
    """``x * 0.5``, ``1 - x``, ... : arithmetic of one tensor with one number."""
    numbers = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    return node.target in _ARITHMETIC and len(node.args) == 2 and len(numbers) == 1


def _in_place(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(str(node.target)), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    return node.target in _IN_PLACE or bool(node.kwargs.get("inplace", False))


def _global_hooks() -> bool:
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def display(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)[2:] or "(the model)"  # drop the wrapper's "m."
    return node.name


def _kind(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{display(node)!r} ({type(gm.get_submodule(str(node.target))).__name__})"
    if node.op == "call_method":
        return f"{node.name!r} (the tensor method .{node.target}())"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.name!r} (the function {name})"
