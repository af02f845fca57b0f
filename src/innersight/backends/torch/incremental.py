"""Cropped forwards for exact incremental occlusion: the ``cropped_forward`` capability.

The graph comes from ``torch.fx`` symbolic tracing of a wrapper module that holds the user's
model as its child (tracing stores constants on the module it traces, so never the user's), in
eval mode; the GraphModule calls the user's own submodules and copies nothing. Nodes are taken
in execution order while they can be recomputed on a crop (the "prefix", see
:mod:`innersight.plugins._incremental` for the contract):

* ``Conv2d`` (zero padding; any stride, padding, dilation, groups), ``MaxPool2d``, ``AvgPool2d``
  (no padding, or padding counted in the mean; no ceil-mode partial windows) are window ops:
  the crop of their input is gathered from the cached activation, padded with the value the
  op pads with (0, or -inf for max pooling) so that padding happens only at the true border;
* ``BatchNorm2d`` with running statistics (the pass runs in eval mode), ``ReLU``, ``ReLU6``,
  ``GELU``, ``SiLU``, ``Hardswish``, ``Hardsigmoid``, ``Sigmoid``, ``Tanh``, ``LeakyReLU``,
  ``ELU``, ``Mish``, ``Dropout``/``Dropout2d`` (eval), ``Identity``, their functional and method
  forms, and arithmetic with a number are pointwise;
* ``+`` (``operator.add``/``iadd``, ``torch.add``) of two same-shape tensors is a residual add.

A node is in the prefix when it is one of those and everything it reads is; an in-place op on a
tensor that other nodes also read is not (eager code would let them see the change), nor is a
module with its own hooks (they would not see the crops), nor the final Softmax whose input is
the logits tap. Everything else -- flatten, linear layers, global pooling, attention, ``view``
-- is the tail: it runs as usual, on full activations patched with the recomputed regions.
Modules are matched by exact type: a subclass may compute something else.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from innersight.core.errors import InputError

from .hooks import eval_mode
from .incremental_ops import CropOp, classify, display
from .layout import to_tensor

if TYPE_CHECKING:
    from .adapter import TorchAdapter

__all__ = ["crop_graph", "crop_session", "source_pads"]


class _Root(nn.Module):
    """What is traced: the user's model as a child, so that fx writes only to this wrapper."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.m(x)


@dataclass
class _Program:
    """The traced model cut into a croppable prefix and a tail, for one input shape."""

    gm: fx.GraphModule
    ops: list[CropOp]
    index: dict[fx.Node, int]
    shapes: dict[fx.Node, tuple[int, ...]]
    tail: list[fx.Node]
    logits: fx.Node | None
    stop: str | None
    sources: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)  # node -> pads
    frontier: list[int] = field(default_factory=list)


_PROGRAMS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], _Program | str]] = (
    weakref.WeakKeyDictionary()
)


def crop_graph(adapter: TorchAdapter, input_shape: Sequence[int]) -> dict[str, Any]:
    """The croppable prefix of the adapter's model for channels-last ``input_shape``."""
    program = _program(adapter, tuple(int(s) for s in input_shape))
    if isinstance(program, str):
        return {"nodes": [], "stop": program, "tail_macs": 0.0, "cache_bytes": 0, "tail_bytes": 0}
    nodes = [_describe(program, op) for op in program.ops]
    cache = sum(_numel(_padded(program, i, pads)) for i, p in program.sources.items() for pads in p)
    tail = [_numel(program.shapes[program.ops[i].node]) for i in program.frontier]
    tail += [_numel(program.shapes.get(n, ())) for n in program.tail]
    return {
        "nodes": nodes,
        "stop": program.stop,
        "tail_macs": sum(_macs(program.gm, n, program.shapes) for n in program.tail),
        "cache_bytes": 4 * cache,
        "tail_bytes": 4 * sum(tail),
    }


def _describe(program: _Program, op: CropOp) -> dict[str, Any]:
    shape = program.shapes[op.node]
    return {
        "name": display(op.node),
        "op": op.op,
        "inputs": [program.index[r] for r in op.reads],
        "size": (shape[2], shape[3]),
        "channels": shape[1],
        "macs": op.macs,
        "kernel": op.kernel,
        "stride": op.stride,
        "padding": op.padding,
        "dilation": op.dilation,
    }


def _program(adapter: TorchAdapter, input_shape: tuple[int, ...]) -> _Program | str:
    """The cached program for this adapter and input shape, or why there is none."""
    cache = _PROGRAMS.setdefault(adapter, {})
    if input_shape not in cache:
        with adapter._lock:
            cache[input_shape] = _build(adapter, input_shape)
    return cache[input_shape]


def _build(adapter: TorchAdapter, input_shape: tuple[int, ...]) -> _Program | str:
    if adapter.options.input_layout != "NCHW" or len(input_shape) != 3:
        return (
            f"only NCHW image models can be cropped (input_layout="
            f"{adapter.options.input_layout!r}, input shape {input_shape})"
        )
    model, what = adapter.model, "torch.fx cannot trace"
    try:
        with eval_mode(model), torch.no_grad():
            gm = _trace(model)
            if sum(n.op == "placeholder" for n in gm.graph.nodes) != 1:
                return f"{adapter.name}.forward takes more than one argument"
            what = "the traced graph fails on a zero image of that shape:"
            shapes = _shapes(gm, adapter, input_shape)
    except _SideEffects as err:
        return f"tracing {adapter.name}.forward() assigned attributes ({err}); it is not traced"
    except Exception as err:  # fx refuses data-dependent control flow, and more
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"{what} {adapter.name} ({type(err).__name__}: {first[:200]})"
    logits = adapter.options.logits_from
    target = f"m.{logits}" if logits else None
    program = _Program(gm, [], {}, shapes, [], None, None)
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == target:
            program.logits = node
        op = classify(node, gm, shapes, program.index, target)
        if isinstance(op, CropOp):
            program.index[node] = len(program.ops)
            program.ops.append(op)
            continue
        program.tail.append(node)
        if program.stop is None and op is not None:
            program.stop = op
    _plan_sources(program)
    return program


class _SideEffects(Exception):
    """The model's forward() assigned attributes while it was traced (undone)."""


def _trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx`` symbolic tracing, with the model's attributes put back as they were.

    Tracing runs the model's own Python ``forward`` on proxies: one that stores something on
    a module (a cache, a counter) would leave proxies on the user's model. Every module's
    attributes (parameters, buffers and submodules included) are compared by identity and
    restored, and such a model is refused (:class:`_SideEffects`, naming them).
    """
    saved = [(m, _state(m)) for m in model.modules()]
    try:
        return fx.symbolic_trace(_Root(model))
    finally:
        changed = [f"{type(m).__name__}.{k}" for m, state in saved for k in _restore(m, state)]
        if changed:
            raise _SideEffects(", ".join(sorted(set(changed))[:5]))


_KEEP = ("_parameters", "_buffers", "_modules")


def _state(m: nn.Module) -> dict[str, dict[str, Any]]:
    plain = {k: v for k, v in m.__dict__.items() if k not in _KEEP}
    return {"__dict__": plain, **{k: dict(getattr(m, k)) for k in _KEEP}}


def _restore(m: nn.Module, state: dict[str, dict[str, Any]]) -> list[str]:
    """Put back every attribute that differs from ``state``; the names of those that did."""
    now, changed = _state(m), []
    for part, items in state.items():
        current = now[part]
        keys = {k for k in current.keys() | items.keys() if current.get(k) is not items.get(k)}
        if not keys:
            continue
        changed += sorted(keys)
        target = m.__dict__ if part == "__dict__" else getattr(m, part)
        for k in keys:
            if k in items:
                target[k] = items[k]
            else:
                del target[k]
    return changed


def _shapes(
    gm: fx.GraphModule, adapter: TorchAdapter, input_shape: tuple[int, ...]
) -> dict[fx.Node, tuple[int, ...]]:
    """Every node's output shape on one all-zero image (tensors only)."""
    o = adapter.options
    x = to_tensor(np.zeros((1, *input_shape), np.float32), "NCHW", o.device, o.dtype)
    shapes: dict[fx.Node, tuple[int, ...]] = {}
    interp = fx.Interpreter(gm)
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        value = x if node.op == "placeholder" else interp.run_node(node)
        interp.env[node] = value
        first = value[0] if isinstance(value, (tuple, list)) and value else value
        if isinstance(first, torch.Tensor):  # (attention modules return tuples)
            shapes[node] = tuple(first.shape)
    return shapes


def _plan_sources(program: _Program) -> None:
    """Which padded copies of each prefix node the crops read, and what the tail reads."""
    for op in program.ops:
        for r in op.reads:
            i = program.index[r]
            pads = (0, 0, 0, 0, 0.0) if op.op == "add" else source_pads(program, op, r)
            if pads not in program.sources.setdefault(i, []):
                program.sources[i].append(pads)
    read = {r for n in program.tail for r in n.all_input_nodes if r in program.index}
    program.frontier = sorted(program.index[r] for r in read)
    for i in program.frontier:
        if (0, 0, 0, 0, 0.0) not in program.sources.setdefault(i, []):
            program.sources[i].append((0, 0, 0, 0, 0.0))


def source_pads(program: _Program, op: CropOp, source: fx.Node) -> tuple[Any, ...]:
    """(top, left, bottom, right, value): enough padding for every crop the op may read."""
    src, out = program.shapes[source], program.shapes[op.node]
    after = []
    for a in (0, 1):
        extent = (op.kernel[a] - 1) * op.dilation[a] + 1
        need = (out[2 + a] - 1) * op.stride[a] - op.padding[a] + extent
        after.append(max(0, need - src[2 + a]))
    return (op.padding[0], op.padding[1], after[0], after[1], op.pad_value)


def _padded(program: _Program, i: int, pads: tuple[Any, ...]) -> tuple[int, ...]:
    _, c, h, w = program.shapes[program.ops[i].node]
    return (c, h + pads[0] + pads[2], w + pads[1] + pads[3])


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else 1


def _macs(gm: fx.GraphModule, node: fx.Node, shapes: dict[fx.Node, tuple[int, ...]]) -> float:
    """Multiply-adds per sample of a tail node, estimated: exact for convolutions and linear
    layers; other modules with parameters (attention, ...) count every parameter once per
    position of their output; anything else its output size."""
    shape = shapes.get(node, ())
    numel = _numel(shape)
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if isinstance(m, nn.Conv2d):
            return float(numel * m.in_channels // m.groups * int(np.prod(m.kernel_size)))
        if isinstance(m, nn.Linear):
            return float(numel * m.in_features)
        params = sum(p.numel() for p in m.parameters())
        if params and len(shape) > 1:
            return float(params * numel / shape[-1])
    return float(numel)


def crop_session(
    adapter: TorchAdapter, x: np.ndarray, sizes: Sequence[Sequence[int]], tap: str | None
) -> Callable[[np.ndarray, Sequence[np.ndarray], np.ndarray], np.ndarray]:
    """Cache the prefix activations of the unoccluded images ``x``; return the cropped run."""
    from .incremental_run import Session

    x_np = adapter.check_input(x)
    program = _program(adapter, tuple(x_np.shape[1:]))
    if isinstance(program, str):
        raise InputError(f"crop_session: {program}; use crop_graph() first to check")
    if len(sizes) != len(program.ops):
        raise InputError(
            f"crop_session got {len(sizes)} region sizes for {len(program.ops)} croppable "
            "nodes; pass one (h, w) per node of crop_graph()['nodes']"
        )
    return Session(adapter, program, x_np, [(int(h), int(w)) for h, w in sizes], tap)
