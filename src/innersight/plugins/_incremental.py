"""Exact incremental occlusion (Krypton, Nakandala et al., SIGMOD 2019): the backend-neutral plan.

Hiding a window changes only part of each layer's output: the window's receptive field, which
grows layer by layer. A backend with the ``cropped_forward`` capability describes the start of
its graph (the layers it can recompute on a crop); this module works out which region of every
layer each window can change, and sizes one region per layer for all windows; the backend
recomputes just those regions from the cached activations of the unoccluded image, patches them
into full activations where the croppable part ends, and runs the rest ("the tail") as usual.
Recomputing a region larger than the changed one is harmless, so the result is the naive one up
to float summation order.

The contract (the backend side is in :mod:`innersight.core.adapter` too):

``adapter.crop_graph(input_shape) -> dict``
    ``"nodes"``: the croppable prefix in execution order, the model input first; each a dict
    with ``name``, ``op``, ``inputs`` (indices of earlier nodes), ``size`` ((H, W) of its
    output), ``channels`` and ``macs`` (multiply-adds per output position). ``op`` is

    - ``"input"``: the model input (node 0, and only there);
    - ``"window"``: a sliding-window op on one input (convolution, max or average pooling) with
      ``kernel``, ``stride``, ``padding`` (rows and columns added before: top, left) and
      ``dilation``, each an (h, w) pair;
    - ``"pointwise"``: an op on each position of one input, shape kept (activations, batch
      norm in eval mode, dropout in eval mode, arithmetic with a number);
    - ``"add"``: the sum of same-shape inputs (residual adds).

    ``"stop"``: why the prefix ends (None: the whole network can be cropped); ``"tail_macs"``:
    multiply-adds per sample after the prefix; ``"cache_bytes"``: bytes per image of the cached
    activations; ``"tail_bytes"``: bytes per occluded sample of the full tensors of the tail.
``adapter.crop_session(x, sizes, *, tap=None) -> run``
    caches the activations of the unoccluded images ``x`` (N, H, W, C) and returns
    ``run(image_index, starts, patches)``: the outputs (or the ``tap``, e.g. ``LOGITS``) of B
    images, item ``b`` being ``x[image_index[b]]`` with its input region at ``starts[0][b]`` of
    size ``sizes[0]`` replaced by ``patches[b]``. ``starts[n]`` ((B, 2) ints, row and column)
    and ``sizes[n]`` give the region of node ``n`` to recompute: one that holds every position
    the change can reach (:func:`make_plan`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import CapabilityError, ModelAdapter, validate

__all__ = [
    "AUTO_MIN_SAVING",
    "METHODS",
    "Graph",
    "IncrementalScores",
    "Node",
    "Plan",
    "choose",
    "make_plan",
]

METHODS = ("naive", "incremental", "auto")
OPS = ("input", "window", "pointwise", "add")
CAPABILITY = "cropped_forward"
#: ``method="auto"`` takes the incremental path when it saves at least this factor of
#: multiply-adds per window: below it, gathering crops and the small kernels' lower efficiency
#: eat the saving (measured in docs/performance.md).
AUTO_MIN_SAVING = 2.0
_EMPTY = np.iinfo(np.int64).max // 4  # lo of an empty interval; its hi is -_EMPTY


@dataclass(frozen=True)
class Node:
    """One croppable layer, as the backend describes it (see the module docstring)."""

    name: str
    op: str
    inputs: tuple[int, ...]
    size: tuple[int, int]
    channels: int
    macs: float
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class Graph:
    """The croppable prefix of a model and what the rest costs."""

    nodes: tuple[Node, ...]
    stop: str | None
    tail_macs: float
    cache_bytes: int
    tail_bytes: int

    @property
    def windows(self) -> int:
        """How many sliding-window layers (convolutions, pools) the prefix holds."""
        return sum(n.op == "window" for n in self.nodes)

    def full_macs(self) -> float:
        """Multiply-adds of one full forward."""
        return sum(n.macs * n.size[0] * n.size[1] for n in self.nodes) + self.tail_macs


def parse_graph(raw: Mapping[str, Any], backend: str) -> Graph:
    """The backend's ``crop_graph`` answer as a :class:`Graph`; CapabilityError when malformed."""
    try:
        nodes = tuple(_node(n) for n in raw["nodes"])
        graph = Graph(
            nodes, raw.get("stop"), float(raw["tail_macs"]), int(raw["cache_bytes"]),
            int(raw["tail_bytes"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise CapabilityError(
            f"the {backend} adapter's crop_graph() answer is malformed ({type(err).__name__}: "
            f"{err}); see the cropped_forward contract in innersight.core.adapter. Use "
            "occlusion method='naive' meanwhile"
        ) from err
    for i, node in enumerate(graph.nodes):
        bad = node.op not in OPS or (node.op == "input") != (i == 0)
        if bad or any(not 0 <= j < i for j in node.inputs) or (i and not node.inputs):
            raise CapabilityError(
                f"the {backend} adapter's crop_graph() node {i} ({node.name!r}, op "
                f"{node.op!r}, inputs {node.inputs}) breaks the contract: node 0 is the only "
                f"'input', the others are one of {OPS[1:]} on earlier nodes. Use occlusion "
                "method='naive' meanwhile"
            )
    return graph


def _node(raw: Mapping[str, Any]) -> Node:
    def pair(key: str, default: tuple[int, int]) -> tuple[int, int]:
        h, w = raw.get(key, default)
        return int(h), int(w)

    return Node(
        name=str(raw["name"]),
        op=str(raw["op"]),
        inputs=tuple(int(i) for i in raw["inputs"]),
        size=pair("size", (0, 0)),
        channels=int(raw["channels"]),
        macs=float(raw["macs"]),
        kernel=pair("kernel", (1, 1)),
        stride=pair("stride", (1, 1)),
        padding=pair("padding", (0, 0)),
        dilation=pair("dilation", (1, 1)),
    )


@dataclass(frozen=True)
class Plan:
    """Where every node is recomputed: one region size per node, its start per window corner.

    Attributes:
        graph: the backend's croppable prefix.
        sizes: per node, the (h, w) of the region recomputed for every window.
        row_starts, col_starts: per node, the region's first row (column) for each window row
            (column) corner. Windows are the product of row and column corners, and each axis
            grows independently, so the two axes are planned apart.
    """

    graph: Graph
    sizes: tuple[tuple[int, int], ...]
    row_starts: tuple[np.ndarray, ...]
    col_starts: tuple[np.ndarray, ...]

    def starts(self, row: np.ndarray, col: np.ndarray) -> list[np.ndarray]:
        """Per node, the (B, 2) region starts of windows with corner indices ``row``, ``col``."""
        return [
            np.stack([r[row], c[col]], axis=1)
            for r, c in zip(self.row_starts, self.col_starts, strict=True)
        ]

    def macs(self) -> float:
        """Multiply-adds per occluded image on the incremental path."""
        nodes = self.graph.nodes
        return (
            sum(n.macs * h * w for n, (h, w) in zip(nodes, self.sizes, strict=True))
            + self.graph.tail_macs
        )

    def saving(self) -> float:
        """Estimated speed-up over naive occlusion: full multiply-adds over incremental ones."""
        return self.graph.full_macs() / max(self.macs(), 1.0)

    def bytes_per_item(self) -> int:
        """Working set of one occluded image: crops gathered, regions computed, full tail."""
        total = 0
        for node, (h, w) in zip(self.graph.nodes, self.sizes, strict=True):
            total += node.channels * h * w
            if node.op != "pointwise" and node.inputs:
                ch = self.graph.nodes[node.inputs[0]].channels * len(node.inputs)
                total += ch * (_crop(node, 0, h) + 1) * (_crop(node, 1, w) + 1)
        return 4 * total + self.graph.tail_bytes


def _crop(node: Node, axis: int, length: int) -> int:
    """Input rows (columns) read to compute ``length`` outputs of ``node``."""
    if node.op != "window":
        return length
    return (length - 1) * node.stride[axis] + (node.kernel[axis] - 1) * node.dilation[axis] + 1


def make_plan(graph: Graph, rows: np.ndarray, cols: np.ndarray, window: tuple[int, int]) -> Plan:
    """The regions to recompute for windows at ``rows`` x ``cols`` corners of size ``window``."""
    size_h, start_h = _axis_plan(graph.nodes, 0, rows, window[0])
    size_w, start_w = _axis_plan(graph.nodes, 1, cols, window[1])
    return Plan(graph, tuple(zip(size_h, size_w, strict=True)), tuple(start_h), tuple(start_w))


def _axis_plan(
    nodes: Sequence[Node], axis: int, corners: np.ndarray, window: int
) -> tuple[list[int], list[np.ndarray]]:
    """Along one axis: each node's region length and its start per corner.

    ``lo, hi`` per corner bound the positions the window can change (empty when ``hi <= lo``);
    the length is the largest over corners, the start shifted left where it would run off the
    edge, so that one fixed-size crop per node serves every window.
    """
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    lengths, starts = [], []
    for node in nodes:
        size = node.size[axis]
        if node.op == "input":
            lo, hi = corners.astype(np.int64), np.minimum(corners + window, size)
        elif node.op == "pointwise":
            lo, hi = bounds[node.inputs[0]]
        elif node.op == "add":
            lo, hi = _hull([bounds[i] for i in node.inputs])
        else:
            lo, hi = _through_window(node, axis, *bounds[node.inputs[0]])
        bounds.append((lo, hi))
        length = int(np.clip(np.max(hi - lo), 1, size))
        lengths.append(length)
        starts.append(np.clip(np.minimum(lo, size - length), 0, size - length))
    return lengths, starts


def _hull(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    los = np.stack([np.where(hi > lo, lo, _EMPTY) for lo, hi in parts])
    his = np.stack([np.where(hi > lo, hi, -_EMPTY) for lo, hi in parts])
    return los.min(axis=0), his.max(axis=0)


def _through_window(
    node: Node, axis: int, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs whose window reads any input in [lo, hi): output o reads rows
    ``o*s - p .. o*s - p + (k-1)*d`` (a superset where dilation skips rows: still exact)."""
    s, p = node.stride[axis], node.padding[axis]
    extent = (node.kernel[axis] - 1) * node.dilation[axis] + 1
    out_lo = np.maximum(-((extent - 1 - p - lo) // s), 0)  # ceil((lo + p - extent + 1) / s)
    out_hi = np.minimum((hi - 1 + p) // s + 1, node.size[axis])
    empty = (hi <= lo) | (out_hi <= out_lo)
    return np.where(empty, _EMPTY, out_lo), np.where(empty, -_EMPTY, out_hi)


def choose(
    method: str,
    model: ModelAdapter,
    input_shape: tuple[int, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    window: tuple[int, int],
) -> tuple[Plan | None, str]:
    """The plan to run (None: naive occlusion) and the reason, for ``meta["method_reason"]``.

    Raises:
        InputError: an unknown ``method``.
        CapabilityError: ``method="incremental"`` on a model that does not allow it.
    """
    validate.choice("method", method, METHODS)
    if method == "naive":
        return None, "method='naive': one full forward per occluded image"
    plan, why_not = _plan(model, input_shape, rows, cols, window)
    if plan is None:
        if method == "incremental":
            raise CapabilityError(
                f"occlusion method='incremental' cannot run on {model.backend} model "
                f"{model.name}: {why_not}. Use method='naive' (or 'auto', which falls back "
                "by itself)"
            )
        return None, f"naive: {why_not}"
    saving, graph = plan.saving(), plan.graph
    where = f"the first that cannot be is {graph.stop}" if graph.stop else "all of them"
    what = (
        f"{len(graph.nodes) - 1} layers recomputed on crops ({where}); estimated "
        f"{saving:.1f}x fewer multiply-adds than naive occlusion"
    )
    if method == "auto" and saving < AUTO_MIN_SAVING:
        return None, (
            f"naive: incremental would save too little ({what}; 'auto' needs "
            f"{AUTO_MIN_SAVING:g}x to pay for gathering the crops)"
        )
    return plan, f"incremental: {what}"


def _plan(
    model: ModelAdapter,
    input_shape: tuple[int, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    window: tuple[int, int],
) -> tuple[Plan | None, str]:
    if CAPABILITY not in {str(c) for c in model.capabilities}:
        return None, (
            f"the {model.backend} adapter cannot recompute cropped regions (it does not declare "
            f"the '{CAPABILITY}' capability)"
        )
    graph = parse_graph(model.crop_graph(tuple(input_shape)), model.backend)  # type: ignore[attr-defined]
    if not graph.nodes:  # the backend says why nothing can be cropped
        return None, graph.stop or "the model has no layer that can be recomputed on a crop"
    if graph.windows == 0:
        return None, (
            "no convolution or pooling can be recomputed on a crop (the first layer that "
            f"cannot be is {graph.stop})"
        )
    return make_plan(graph, rows, cols, window), ""


class IncrementalScores:
    """Raw scores of occluded images on the incremental path, for chunks of (image, window).

    The backend caches the activations of a group of ``group`` unoccluded images (a session,
    one forward pass over the group), so small images share one session and one cache pass;
    a chunk that spans two groups is split in two calls (never one per image).
    """

    def __init__(
        self,
        model: ModelAdapter,
        plan: Plan,
        inputs: np.ndarray,
        base: np.ndarray,
        corners: tuple[np.ndarray, np.ndarray],
        window: tuple[int, int],
        *,
        tap: str | None,
        group: int,
    ) -> None:
        self.model, self.plan, self.inputs, self.base = model, plan, inputs, base
        self.rows, self.cols = corners
        self.window, self.tap = window, tap
        self.group = max(1, int(group))
        self.sessions = 0  # cache passes run
        self._current: tuple[int, Any] = (-1, None)

    def __call__(self, image: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Outputs (B, ...) of the items ``(image[b], window k[b])`` (image-major order)."""
        row, col = np.divmod(k, len(self.cols))
        starts = self.plan.starts(row, col)
        patches = self._patches(image, row, col, starts[0])
        groups = image // self.group
        out = []
        for g in np.unique(groups):
            sel = groups == g
            run = self._session(int(g))
            out.append(run(image[sel] - g * self.group, [s[sel] for s in starts], patches[sel]))
        return np.concatenate([np.asarray(o) for o in out], axis=0)

    def _session(self, g: int) -> Any:
        if self._current[0] != g:
            self._current = (-1, None)  # free the previous group's cache first
            x = self.inputs[g * self.group : (g + 1) * self.group]
            sizes = list(self.plan.sizes)
            run = self.model.crop_session(x, sizes, tap=self.tap)  # type: ignore[attr-defined]
            self._current = (g, run)
            self.sessions += 1
        return self._current[1]

    def _patches(
        self, image: np.ndarray, row: np.ndarray, col: np.ndarray, start: np.ndarray
    ) -> np.ndarray:
        """(B, h0, w0, C): each occluded image over the input region its plan recomputes."""
        h0, w0 = self.plan.sizes[0]
        ys = start[:, :1] + np.arange(h0)  # (B, h0) image rows of the region
        xs = start[:, 1:] + np.arange(w0)
        index = (image[:, None, None], ys[:, :, None], xs[:, None, :])
        top, left = self.rows[row][:, None], self.cols[col][:, None]
        hidden = ((ys >= top) & (ys < top + self.window[0]))[:, :, None] & (
            (xs >= left) & (xs < left + self.window[1])
        )[:, None, :]
        return np.where(hidden[..., None], self.base[index], self.inputs[index]).astype(
            np.float32, copy=False
        )
