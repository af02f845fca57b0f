"""Running cropped forwards of Keras models: the cache pass, the recomputed regions, the tail.

A :class:`Session` holds, for a group of unoccluded images, the activations of the croppable
prefix (:mod:`.incremental`) padded the way their readers pad (0 for convolutions, -inf for max
pooling), so that a crop anywhere is one gather. Each call then, for a batch of occluded images
at once (no loop over samples):

1. gathers the crop every window op reads from the cached activation, with the region
   recomputed for its input taking the place of the cached values where they overlap (two
   gathers and a select: no scatter, no copy of the cache), and runs the op on the crop
   (without padding: the padding is in the cached copy, at the true border only);
2. runs pointwise layers on the regions as they are, and sums residual adds over the hull of
   their inputs' regions;
3. patches the regions the tail reads into full activations and runs the tail, a functional
   sub-model of the user's layers (and the Dense pre-activation of the logits tap).

Steps 1-3 are one function per program and region sizes (a :class:`Runner`), cached with the
program. On TensorFlow it is one ``tf.function`` with a ``None`` batch axis everywhere (eager
TensorFlow spends more time dispatching the ~100 small ops than computing them); the cache pass
is the engine's own traced forward. On torch and JAX the runner runs eagerly: a ``jax.jit``
would bake the layers' current weights into the compiled code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from innersight.core.adapter import LOGITS

if TYPE_CHECKING:
    from innersight.backends.keras.incremental import _Op, _Program

__all__ = ["Runner", "Session", "runner"]

_PLAIN = (0, 0, 0, 0, 0.0)
Key = tuple[int, tuple[Any, ...]]  # (prefix node, its padding)


def source_keys(program: _Program) -> list[Key]:
    """The padded copies of prefix activations a session caches, in a fixed order."""
    return [(i, p) for i, pads in sorted(program.sources.items()) for p in pads]


def pads_of(op: _Op, src: Sequence[Any], out: Sequence[Any]) -> tuple[Any, ...]:
    """(top, left, bottom, right, value): enough padding for every crop ``op`` may read from
    its input of spatial size ``src`` to compute its output of spatial size ``out``."""
    after = []
    for a in (0, 1):
        extent = (op.kernel[a] - 1) * op.dilation[a] + 1
        after.append(max(0, (int(out[a]) - 1) * op.stride[a] - op.padding[a] + extent - src[a]))
    return (op.padding[0], op.padding[1], after[0], after[1], op.pad_value)


def read_pads(program: _Program, op: _Op, read: Any) -> tuple[Any, ...]:
    """The padding of the cached copy of ``read`` that ``op`` gathers its crops from."""
    if op.op == "add":
        return _PLAIN
    return pads_of(op, read.shape[1:3], op.tensor.shape[1:3])


class Runner:
    """The cropped run of one program for one set of region sizes and one tap.

    Call it with the session's cached sources (in :func:`source_keys` order), the image index
    ``(B,)`` int32, the region starts (one ``(B, 2)`` int32 per node) and the input patches
    ``(B, h0, w0, C)``; it returns the outputs (or the logits tap) of the B occluded images.
    """

    def __init__(
        self, adapter: Any, program: _Program, sizes: Sequence[tuple[int, int]], tap: str | None
    ) -> None:
        self.program, self.sizes = program, [tuple(s) for s in sizes]
        self.keys = source_keys(program)
        self.slot = {key: n for n, key in enumerate(self.keys)}
        self.dense = adapter._plan.dense if tap == LOGITS else None
        frontier = [program.ops[i].tensor for i in program.frontier]
        direct = program.index.get(id(program.target))
        self.direct = None if direct is None else program.frontier.index(direct)
        self.tail = None if self.direct is not None else keras.Model(frontier, program.target)
        self.backend = str(adapter.keras_backend)
        self._compiled: Any = None

    def __call__(self, sources: list[Any], img: Any, starts: list[Any], patches: Any) -> Any:
        if self.backend != "tensorflow":
            return self.run(sources, img, starts, patches)
        if self._compiled is None:
            self._compiled = _tf_function(self.run, sources, starts, patches)
        return self._compiled(sources, img, starts, patches)

    def run(self, sources: list[Any], img: Any, starts: list[Any], patches: Any) -> Any:
        """Regions, then the patched tail (traced once on TensorFlow)."""
        regions = self._regions(sources, img, starts, patches)
        full = [self._full(sources, j, img, starts, regions) for j in self.program.frontier]
        # the target is a frontier tensor itself (direct), or the tail computes it
        out = full[self.direct or 0] if self.tail is None else self.tail(full, training=False)
        if self.dense is not None:
            out = keras.ops.matmul(out, self.dense.kernel) + self.dense.bias
        return keras.ops.cast(out, "float32")

    def _regions(self, sources: list[Any], img: Any, st: list[Any], patches: Any) -> list[Any]:
        program, regions = self.program, list[Any]()
        for i, op in enumerate(program.ops):
            if op.op == "input":
                value = patches
            elif op.op == "pointwise":
                value = op.layer(regions[program.index[id(op.reads[0])]], training=False)
            elif op.op == "window":
                j = program.index[id(op.reads[0])]
                pads = read_pads(program, op, op.reads[0])
                size = [
                    (n - 1) * op.stride[a] + (op.kernel[a] - 1) * op.dilation[a] + 1
                    for a, n in enumerate(self.sizes[i])
                ]
                corner = st[i] * np.asarray(op.stride, np.int32)
                at = st[j] + np.asarray(pads[:2], np.int32)
                src = sources[self.slot[(j, pads)]]
                value = op.run(patched(src, img, corner, size, regions[j], at))  # type: ignore[misc]
            else:
                parts = [
                    patched(sources[self.slot[(k, _PLAIN)]], img, st[i], self.sizes[i],
                            regions[k], st[k])
                    for k in (program.index[id(r)] for r in op.reads)
                ]  # fmt: skip
                value = parts[0]
                for part in parts[1:]:
                    value = value + part
            regions.append(value)
        return regions

    def _full(self, sources: list[Any], j: int, img: Any, st: list[Any], regions: list[Any]) -> Any:
        shape = tuple(self.program.ops[j].tensor.shape[1:3])
        if tuple(self.sizes[j]) == shape:
            return regions[j]
        zero = keras.ops.zeros_like(st[j])
        src = sources[self.slot[(j, _PLAIN)]]
        return patched(src, img, zero, shape, regions[j], st[j])


def _tf_function(
    fn: Callable[..., Any], sources: list[Any], starts: list[Any], patches: Any
) -> Any:
    """``fn`` as a ``tf.function`` with a None batch axis on every argument (one trace)."""
    import tensorflow as tf

    def spec(t: Any, dtype: Any = None) -> Any:
        return tf.TensorSpec((None, *t.shape[1:]), dtype or t.dtype)

    signature = [
        [spec(s) for s in sources],
        tf.TensorSpec([None], tf.int32),
        [spec(s, tf.int32) for s in starts],
        spec(patches),
    ]
    return tf.function(fn, input_signature=signature, autograph=False).get_concrete_function()


def patched(src: Any, img: Any, corner: Any, size: Sequence[int], region: Any, at: Any) -> Any:
    """(B, h, w, C) crops of the cached (N, H', W', C) ``src`` at ``corner`` (B, 2) of image
    ``img`` (B,), with ``region`` (B, rh, rw, C), placed at ``at`` (B, 2) in ``src``'s
    coordinates, taking the place of the cached values where they overlap.

    Two gathers (one from the cache, one from the region, its index clipped) and a select;
    no shape but the batch's is dynamic, so it traces once for every batch size.
    """
    ops = keras.ops
    h, w = int(size[0]), int(size[1])
    rows, cols, c = (int(d) for d in src.shape[1:])
    rh, rw = int(region.shape[1]), int(region.shape[2])
    ys = corner[:, :1] + ops.arange(h, dtype="int32")  # (B, h) rows of src
    xs = corner[:, 1:] + ops.arange(w, dtype="int32")
    flat = (img[:, None, None] * rows + ys[:, :, None]) * cols + xs[:, None, :]
    cached = ops.take(ops.reshape(src, (-1, c)), ops.reshape(flat, (-1,)), axis=0)
    ty = ys - at[:, :1]  # (B, h) rows of the region
    tx = xs - at[:, 1:]
    inside = ((ty >= 0) & (ty < rh))[:, :, None] & ((tx >= 0) & (tx < rw))[:, None, :]
    item = ops.arange(ops.shape(img)[0], dtype="int32")[:, None, None]
    own = (item * rh + ops.clip(ty, 0, rh - 1)[:, :, None]) * rw + ops.clip(tx, 0, rw - 1)[
        :, None, :
    ]
    fresh = ops.take(ops.reshape(ops.cast(region, src.dtype), (-1, c)), ops.reshape(own, (-1,)), 0)
    out = ops.where(ops.reshape(inside, (-1, 1)), fresh, cached)
    return ops.reshape(out, (-1, h, w, c))


class Session:
    """Cached, padded activations of a group of images, and the cropped run on them."""

    def __init__(self, adapter: Any, run: Runner, x: np.ndarray) -> None:
        self.adapter, self.runner = adapter, run
        program = run.program
        tensors = [program.ops[i].tensor for i, _ in run.keys]
        forward = program.cache_forward(adapter, tensors)
        with adapter._lock:
            values = forward(x)
        values = values if isinstance(values, (list, tuple)) else [values]
        self.sources = [
            _pad(keras.ops.convert_to_tensor(v), key[1])
            for key, v in zip(run.keys, values, strict=True)
        ]

    def __call__(
        self, image_index: np.ndarray, starts: Sequence[np.ndarray], patches: np.ndarray
    ) -> np.ndarray:
        ops = keras.ops
        img = ops.convert_to_tensor(np.asarray(image_index, np.int32))
        st = [ops.convert_to_tensor(np.asarray(s, np.int32)) for s in starts]
        x = ops.convert_to_tensor(np.asarray(patches, np.float32))
        with self.adapter._lock:
            out = self.runner(self.sources, img, st, x)
        return np.asarray(ops.convert_to_numpy(out), dtype=np.float32)


def runner(adapter: Any, program: _Program, sizes: Sequence[tuple[int, int]], tap: Any) -> Runner:
    """The cached :class:`Runner` of ``program`` for these region sizes and tap."""
    key = (tuple(tuple(s) for s in sizes), tap)
    if key not in program.runners:
        program.runners[key] = Runner(adapter, program, sizes, tap)
    return program.runners[key]


def _pad(value: Any, pads: tuple[Any, ...]) -> Any:
    top, left, bottom, right, fill = pads
    if not (top or left or bottom or right):
        return value
    return keras.ops.pad(
        value, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=fill
    )
