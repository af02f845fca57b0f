"""Running cropped forwards: the cache pass, the recomputed regions, the patched tail.

A :class:`Session` holds, for a group of unoccluded images, the activations of the croppable
prefix (:mod:`.incremental`) as channels-last copies padded the way their readers pad (0 for
convolutions, -inf for max pooling), so that a crop anywhere is one gather. Each call then, for a
batch of occluded images at once (no loop over samples):

1. gathers the crop every window op reads from the cached activation, writes the region
   recomputed for its input over it where they overlap, and runs the op on the crop (without
   padding: the padding is in the cached copy, at the true border only);
2. runs pointwise ops on the regions as they are, and sums residual adds over the hull of
   their inputs' regions; a node recomputed whole from inputs recomputed whole (the receptive
   field covers the map) runs as in the model, without gathering;
3. patches the regions the tail reads into full activations and runs the tail's nodes as the
   model would (under eval mode, on the user's own modules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import fx

from innersight.core.adapter import LOGITS

from .hooks import eval_mode
from .incremental import source_pads
from .layout import to_numpy, to_tensor

if TYPE_CHECKING:
    from .adapter import TorchAdapter
    from .incremental import _Program
    from .incremental_ops import CropOp

__all__ = ["Session"]

_PLAIN = (0, 0, 0, 0, 0.0)


class Session:
    """The cropped run for a group of images; call it with a batch of occluded images."""

    def __init__(
        self,
        adapter: TorchAdapter,
        program: _Program,
        x_np: np.ndarray,
        sizes: list[tuple[int, int]],
        tap: str | None,
    ) -> None:
        self.adapter, self.program, self.sizes = adapter, program, sizes
        self.logits = program.logits if tap == LOGITS else None
        self.device, self.dtype = adapter.options.device, adapter.options.dtype
        self.interp = fx.Interpreter(program.gm)
        self.reads = [
            [(program.index[r], _PLAIN if op.op == "add" else source_pads(program, op, r))
             for r in op.reads]
            for op in program.ops
        ]  # fmt: skip
        # where a node and all it reads are recomputed whole, it runs as in the model (no
        # gather): past that point the receptive field covers the map, as on ResNets
        whole = [
            tuple(sizes[i]) == tuple(program.shapes[op.node][2:])
            for i, op in enumerate(program.ops)
        ]
        self.whole = [
            i > 0 and whole[i] and all(whole[j] for j, _ in self.reads[i])
            for i in range(len(whole))
        ]
        self.windows = {
            i: self._window(op, self.reads[i][0][1], sizes[i])
            for i, op in enumerate(program.ops)
            if op.op == "window"
        }
        with adapter._lock, eval_mode(adapter.model), torch.no_grad():
            self.sources = self._cache(x_np)

    def _window(
        self, op: CropOp, pads: tuple[Any, ...], size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """A window op's stride and padding (as tensors), and the crop size it reads."""
        crop = tuple(
            (n - 1) * op.stride[a] + (op.kernel[a] - 1) * op.dilation[a] + 1
            for a, n in enumerate(size)
        )

        def as_tensor(v: Any) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.int64, device=self.device)

        return as_tensor(op.stride), as_tensor(pads[:2]), (crop[0], crop[1])

    def _cache(self, x_np: np.ndarray) -> dict[tuple[int, tuple[Any, ...]], torch.Tensor]:
        """Padded channels-last copies of the prefix activations the crops and the tail read.

        Copies are taken as each node runs: a later in-place op must not change them.
        """
        program, env = self.program, self.interp.env
        sources = {}
        for i, op in enumerate(program.ops):
            value = self.adapter._tensor(x_np) if op.op == "input" else self._run_node(op.node)
            env[op.node] = value
            for pads in program.sources.get(i, ()):
                sources[(i, pads)] = _pad(value, pads)
        env.clear()
        return sources

    def _run_node(self, node: fx.Node, values: dict[fx.Node, Any] | None = None) -> Any:
        """``node`` on ``values`` (default: the interpreter's environment)."""
        env = self.interp.env if values is None else values
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        return getattr(self.interp, node.op)(node.target, args, kwargs)

    def __call__(
        self, image_index: np.ndarray, starts: Sequence[np.ndarray], patches: np.ndarray
    ) -> np.ndarray:
        """Outputs (or the logits tap) of the occluded images, channels-last numpy."""
        dev = self.device
        img = torch.as_tensor(np.asarray(image_index, np.int64), device=dev)
        st = [torch.as_tensor(np.asarray(s, np.int64), device=dev) for s in starts]
        with self.adapter._lock, eval_mode(self.adapter.model), torch.no_grad():
            regions = self._regions(img, st, patches)
            out = self._tail(img, st, regions)
        return to_numpy(self.adapter._output_tensor(out))

    def _regions(
        self, img: torch.Tensor, st: list[torch.Tensor], patches: np.ndarray
    ) -> list[torch.Tensor]:
        """Every prefix node's recomputed region, (B, C, h, w) at ``st[node]``."""
        program = self.program
        regions: list[torch.Tensor] = []
        for i, op in enumerate(program.ops):
            if op.op == "input":
                value = to_tensor(patches, "NCHW", self.device, self.dtype)
            elif op.op == "pointwise" or self.whole[i]:  # as the model runs it
                value = self._run_node(op.node, {r: regions[program.index[r]] for r in op.reads})
            elif op.op == "window":
                (j, pads), (stride, shift, size) = self.reads[i][0], self.windows[i]
                src = self.sources[(j, pads)]
                crop = _patched(src, img, st[i] * stride, size, regions[j], st[j] + shift)
                value = cast(Any, op.run)(crop.permute(0, 3, 1, 2))
            elif op.op == "add":
                parts = [
                    _patched(self.sources[(j, pads)], img, st[i], self.sizes[i], regions[j], st[j])
                    for j, pads in self.reads[i]
                ]
                value = torch.stack(parts).sum(dim=0).permute(0, 3, 1, 2)
            regions.append(value)
        return regions

    def _tail(self, img: torch.Tensor, st: list[torch.Tensor], regions: list[torch.Tensor]) -> Any:
        """The rest of the network on full activations patched with the regions."""
        program, env = self.program, self.interp.env
        zero = torch.zeros_like(st[0])
        for j in program.frontier:
            node = program.ops[j].node
            size = program.shapes[node][2:]
            if self.sizes[j] == tuple(size):  # the region is the whole map
                env[node] = regions[j].contiguous()  # NCHW: the tail may .view() it
                continue
            full = _patched(self.sources[(j, _PLAIN)], img, zero, size, regions[j], st[j])
            env[node] = full.permute(0, 3, 1, 2).contiguous()
        try:
            for node in program.tail:
                if node is self.logits:
                    return env[node.args[0]]  # type: ignore[index]
                if node.op == "output":
                    return fx.node.map_arg(node.args[0], env.__getitem__)
                env[node] = self._run_node(node)
        finally:
            env.clear()
        raise RuntimeError("the traced graph has no output node")


def _pad(value: torch.Tensor, pads: tuple[Any, ...]) -> torch.Tensor:
    """A channels-last (N, H, W, C) copy of an NCHW activation, padded (top, left, bottom,
    right) with ``pads[4]``."""
    nhwc = value.detach().permute(0, 2, 3, 1)
    top, left, bottom, right, fill = pads
    if not (top or left or bottom or right):
        return nhwc.clone(memory_format=torch.contiguous_format)
    spec = (0, 0, left, right, top, bottom)
    return torch.nn.functional.pad(nhwc, spec, value=fill).contiguous()


def _patched(
    src: torch.Tensor,
    img: torch.Tensor,
    corner: torch.Tensor,
    size: Sequence[int],
    region: torch.Tensor,
    at: torch.Tensor,
) -> torch.Tensor:
    """(B, h, w, C) crops of the cached (N, H', W', C) ``src`` at per-item ``corner`` (B, 2),
    with ``region`` (B, C, rh, rw), placed at ``at`` (B, 2) in ``src``'s coordinates, written
    over them where they overlap.

    One gather and one scatter for the whole batch. The gather indexes a strided view of every
    (h, w) window of ``src`` (contiguous result, channels last). The scatter writes the parts
    of a region that fall outside its crop into one extra crop, which is then dropped: the
    overlap differs per item, and this keeps it to one indexed write.
    """
    h, w = int(size[0]), int(size[1])
    n, rows, cols, c = src.shape
    s = src.stride()
    windows = src.as_strided((n, rows - h + 1, cols - w + 1, h, w, c), (*s[:3], *s[1:]))
    batch = len(img)
    buf = windows[torch.cat([img, img[:1]]), torch.cat([corner[:, 0], corner[:1, 0]]),
                  torch.cat([corner[:, 1], corner[:1, 1]])]  # fmt: skip
    dev, offset = src.device, at - corner
    ty = offset[:, :1] + torch.arange(region.shape[2], device=dev)
    tx = offset[:, 1:] + torch.arange(region.shape[3], device=dev)
    inside = ((ty >= 0) & (ty < h))[:, :, None] & ((tx >= 0) & (tx < w))[:, None, :]
    item = torch.where(inside, torch.arange(batch, device=dev)[:, None, None], batch)
    ty, tx = ty.clamp(0, h - 1)[:, :, None], tx.clamp(0, w - 1)[:, None, :]
    buf[item, ty, tx] = region.permute(0, 2, 3, 1).to(buf.dtype)
    return buf[:batch]
