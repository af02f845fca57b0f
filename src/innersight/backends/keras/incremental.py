"""Cropped forwards of Keras models for exact incremental occlusion (``cropped_forward``).

The Keras adapter's ``crop_graph`` and ``crop_session`` call :func:`crop_graph` and
:func:`crop_session`. The contract and the planning are backend-neutral
(:mod:`innersight.plugins._incremental`); this module reads the Keras graph, and
:mod:`.incremental_run` runs the crops, written with ``keras.ops``: one ``tf.function`` per
program and region sizes on TensorFlow, eager on torch. On JAX the cropped run would dispatch
(and compile) every small op eagerly, slower than naive occlusion, so :func:`crop_graph` says so
and ``method="auto"`` keeps the naive path there.

The graph is the model's own functional graph (built Sequential/Functional models), read in
execution order; nothing is traced and nothing is added to the user's layers. A node is in the
croppable prefix when everything it reads is, and it is one of (exact types, channels_last):

* ``Conv2D`` (any strides, dilation; "valid" or "same" padding; its bias and fused activation),
  ``DepthwiseConv2D``, ``MaxPooling2D``, ``AveragePooling2D`` (no padding: TensorFlow's "same"
  average leaves the padding out of the mean): window ops, run on crops gathered from the cached
  activation padded as the layer pads (0, or -inf for max pooling);
* ``BatchNormalization`` (inference), ``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``,
  ``PReLU``, ``Dropout``/``SpatialDropout2D``/``GaussianNoise``/``GaussianDropout`` (inference),
  ``Rescaling``, ``Identity``: pointwise, the layer itself called on the region;
* ``Add`` of same-shape tensors.

The tail (everything else) runs as a functional sub-model ``keras.Model(frontier, output)`` of
the user's layers, on full activations patched with the recomputed regions.

It reads the adapter's ``_sync()`` (the ModelGraph), ``_plan`` (the LogitsPlan: the logits
tensor and the Dense layer whose pre-activation they are), ``_functional``, ``_engine``,
``keras_backend``, ``_lock`` and ``check_input``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from innersight.backends.keras.incremental_run import Session, pads_of, runner
from innersight.core.adapter import LOGITS
from innersight.core.errors import InputError

__all__ = ["crop_graph", "crop_session"]

L = keras.layers
_POINTWISE = (
    L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.PReLU, L.Dropout,
    L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.Rescaling, L.Identity,
)  # fmt: skip
_PLAIN = (0, 0, 0, 0, 0.0)


@dataclass
class _Op:
    """One prefix node: its kind, the prefix tensors it reads, and how it runs on a crop."""

    tensor: Any  # the KerasTensor it produces
    op: str
    layer: Any = None
    reads: tuple[Any, ...] = ()
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    pad_value: float = 0.0
    run: Callable[[Any], Any] | None = None
    macs: float = 0.0


@dataclass
class _Program:
    graph: Any
    ops: list[_Op]
    index: dict[int, int]  # id(KerasTensor) -> op index
    tail_nodes: list[Any]
    target: Any  # the tensor the tail returns (outputs or logits)
    stop: str | None = None
    sources: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    frontier: list[int] = field(default_factory=list)
    runners: dict[Any, Any] = field(default_factory=dict)  # (sizes, tap) -> Runner
    forwards: dict[Any, Any] = field(default_factory=dict)  # the engine's cache passes

    def cache_forward(self, adapter: Any, tensors: list[Any]) -> Any:
        """The engine's traced forward from the model input to ``tensors`` (cached)."""
        key = tuple(id(t) for t in tensors)
        if key not in self.forwards:
            self.forwards[key] = adapter._engine.make_forward(self.graph.input, tensors)
        return self.forwards[key]


_PROGRAMS: weakref.WeakKeyDictionary[Any, dict[Any, _Program | str]] = weakref.WeakKeyDictionary()


def crop_graph(adapter: Any, input_shape: Sequence[int]) -> dict[str, Any]:
    """The croppable prefix of the adapter's model (the dict of the cropped_forward contract)."""
    program = _program(adapter, tuple(int(s) for s in input_shape), LOGITS)
    if isinstance(program, str):
        return {"nodes": [], "stop": program, "tail_macs": 0.0, "cache_bytes": 0, "tail_bytes": 0}
    nodes = []
    for op in program.ops:
        _, h, w, c = op.tensor.shape
        nodes.append(
            {"name": _name(op), "op": op.op, "inputs": [program.index[id(r)] for r in op.reads],
             "size": (h, w), "channels": c, "macs": op.macs, "kernel": op.kernel,
             "stride": op.stride, "padding": op.padding, "dilation": op.dilation}
        )  # fmt: skip
    cache = sum(
        _numel(program.ops[i].tensor.shape, p) for i, pads in program.sources.items() for p in pads
    )
    tail = sum(_numel(program.ops[i].tensor.shape) for i in program.frontier)
    tail += sum(_numel(n.outputs[0].shape) for n in program.tail_nodes)
    return {
        "nodes": nodes,
        "stop": program.stop,
        "tail_macs": float(sum(_macs(n) for n in program.tail_nodes)),
        "cache_bytes": 4 * cache,
        "tail_bytes": 4 * tail,
    }


def _name(op: _Op) -> str:
    return "input" if op.layer is None else str(op.layer.name)


def _numel(shape: Sequence[Any], pads: Sequence[Any] = _PLAIN) -> int:
    dims = [int(d or 1) for d in shape[1:]]
    if len(dims) == 3:
        dims[0] += int(pads[0]) + int(pads[2])
        dims[1] += int(pads[1]) + int(pads[3])
    return int(np.prod(dims))


def _macs(node: Any) -> float:
    layer, out = node.operation, node.outputs[0]
    numel = _numel(out.shape)
    if isinstance(layer, L.Dense):
        return float(numel * int(node.input_tensors[0].shape[-1]))
    if isinstance(layer, L.Conv2D):
        k = layer.kernel_size
        return float(numel * int(node.input_tensors[0].shape[-1]) // layer.groups * k[0] * k[1])
    return float(numel)


def _program(adapter: Any, input_shape: tuple[int, ...], tap: str | None) -> _Program | str:
    cache = _PROGRAMS.setdefault(adapter, {})
    key = (input_shape, tap)
    if key not in cache:
        with adapter._lock:
            cache[key] = _build(adapter, input_shape, tap)
    return cache[key]


def _build(adapter: Any, input_shape: tuple[int, ...], tap: str | None) -> _Program | str:
    graph = adapter._sync()
    if adapter.keras_backend == "jax":
        return (
            "Keras on JAX would run the cropped layers op by op without jit, slower than "
            "naive occlusion (cropped forwards run on the TensorFlow and torch backends)"
        )
    if len(input_shape) != 3 or tuple(graph.input.shape[1:]) != input_shape:
        return f"only image models of a fixed input shape can be cropped (got {input_shape})"
    plan = adapter._plan
    target = plan.tensor if tap == LOGITS else graph.output
    program = _Program(graph, [], {}, [], target)
    fn = adapter._functional
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = _classify(node, program)
            if isinstance(op, _Op):
                program.index[id(op.tensor)] = len(program.ops)
                program.ops.append(op)
            elif not isinstance(node.operation, L.InputLayer):
                program.tail_nodes.append(node)
                if program.stop is None and op is not None:
                    program.stop = op
    if not program.ops:
        return "the model's input is not in its graph"
    _plan_sources(program)
    return program


def _classify(node: Any, program: _Program) -> _Op | str | None:
    layer, index = node.operation, program.index
    outs = node.outputs
    if isinstance(layer, L.InputLayer):
        return _Op(outs[0], "input") if not index and len(outs[0].shape) == 4 else None
    reads = tuple(node.input_tensors)
    if not any(id(r) in index for r in reads):
        return None
    if not all(id(r) in index for r in reads):
        return None  # it also reads a tail tensor
    what = f"{layer.name!r} ({type(layer).__name__})"
    if len(outs) != 1 or len(outs[0].shape) != 4:
        return f"{what}: its output is not image-shaped"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{what}: data_format={layer.data_format!r}"
    kind = type(layer)
    if kind is L.Add:
        same = all(tuple(r.shape) == tuple(outs[0].shape) for r in reads)
        return (
            _Op(outs[0], "add", layer, reads, macs=float(outs[0].shape[-1]))
            if same
            else (f"{what}: an add that broadcasts")
        )
    if len(reads) != 1:
        return f"{what}: reads several tensors"
    if kind in (L.Conv2D, L.DepthwiseConv2D, L.MaxPooling2D, L.AveragePooling2D):
        return _window(layer, reads[0], outs[0], what)
    if kind in _POINTWISE and tuple(reads[0].shape) == tuple(outs[0].shape):
        return _Op(outs[0], "pointwise", layer, reads, macs=float(outs[0].shape[-1]))
    return f"{what} cannot be cropped"


def _window(layer: Any, read: Any, out: Any, what: str) -> _Op | str:
    is_pool = isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D))
    k = tuple(layer.pool_size if is_pool else layer.kernel_size)
    s = tuple(layer.strides)
    d = (1, 1) if is_pool else tuple(layer.dilation_rate)
    sizes_in, sizes_out = read.shape[1:3], out.shape[1:3]
    pad = [0, 0]
    if layer.padding == "same":  # TensorFlow's rule: the odd pixel goes after
        for a in (0, 1):
            total = (sizes_out[a] - 1) * s[a] + (k[a] - 1) * d[a] + 1 - sizes_in[a]
            pad[a] = max(total, 0) // 2
            if isinstance(layer, L.AveragePooling2D) and total > 0:
                return f"{what}: 'same' average pooling leaves the padding out of the mean"
    elif layer.padding != "valid":
        return f"{what}: padding={layer.padding!r}"
    cin = int(read.shape[-1])
    fill, run, macs = 0.0, None, float(cin * k[0] * k[1])
    if isinstance(layer, L.MaxPooling2D):
        fill = float("-inf")
        run = lambda c: keras.ops.max_pool(c, k, s, "valid", "channels_last")  # noqa: E731
    elif isinstance(layer, L.AveragePooling2D):
        run = lambda c: keras.ops.average_pool(c, k, s, "valid", "channels_last")  # noqa: E731
    else:
        run = _conv_run(layer, s, d)
        macs = float(int(out.shape[-1]) * (cin // getattr(layer, "groups", 1)) * k[0] * k[1])
        if isinstance(layer, L.DepthwiseConv2D):
            macs = float(int(out.shape[-1]) * k[0] * k[1])
    return _Op(out, "window", layer, (read,), k, s, (pad[0], pad[1]), d, fill, run, macs)


def _conv_run(layer: Any, s: tuple[int, ...], d: tuple[int, ...]) -> Callable[[Any], Any]:
    """The layer's convolution without padding, then its bias and activation."""
    depthwise = isinstance(layer, L.DepthwiseConv2D)

    def run(crop: Any) -> Any:
        conv = keras.ops.depthwise_conv if depthwise else keras.ops.conv
        out = conv(crop, layer.kernel, s, "valid", "channels_last", d)
        if layer.use_bias:
            out = out + layer.bias
        return layer.activation(out)

    return run


def _plan_sources(program: _Program) -> None:
    """Which padded copies of each prefix tensor the crops read, and what the tail reads."""
    for op in program.ops:
        for r in op.reads:
            i = program.index[id(r)]
            pads = _PLAIN if op.op == "add" else _pads(program, op, r)
            if pads not in program.sources.setdefault(i, []):
                program.sources[i].append(pads)
    read = {id(t) for n in program.tail_nodes for t in n.input_tensors} | {id(program.target)}
    program.frontier = sorted(program.index[t] for t in read if t in program.index)
    for i in program.frontier:
        if _PLAIN not in program.sources.setdefault(i, []):
            program.sources[i].append(_PLAIN)


def _pads(program: _Program, op: _Op, read: Any) -> tuple[Any, ...]:
    return pads_of(op, read.shape[1:3], op.tensor.shape[1:3])


def crop_session(
    adapter: Any, x: np.ndarray, sizes: Sequence[Sequence[int]], tap: str | None = None
) -> Callable[[np.ndarray, Sequence[np.ndarray], np.ndarray], np.ndarray]:
    """Cache the prefix activations of the unoccluded images ``x``; return the cropped run."""
    x = adapter.check_input(x)
    program = _program(adapter, tuple(x.shape[1:]), tap)
    if isinstance(program, str):
        raise InputError(f"crop_session: {program}; use crop_graph() first to check")
    if len(sizes) != len(program.ops):
        raise InputError(
            f"crop_session got {len(sizes)} region sizes for {len(program.ops)} croppable "
            "nodes; pass one (h, w) per node of crop_graph()['nodes']"
        )
    run = runner(adapter, program, [(int(h), int(w)) for h, w in sizes], tap)
    return Session(adapter, run, x)
