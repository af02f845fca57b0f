"""Which rank-4 tensors inside a torch model are (N, C, H, W) and which are (N, H, W, C).

Most torch models keep every image-like tensor channels-first, but some keep channels-last
tensors inside (timm ConvNeXt blocks with ``conv_mlp=False`` permute to (N, H, W, C) for a
LayerNorm and two Linears; Swin keeps (N, H, W, C) throughout). Reading those as NCHW gives
shapes like (8, 80, 8) and nonsense maps, so the layout of every module's output (and of every
module's first argument, for :func:`~innersight.core.input_tap`) is worked out from the probe
pass, by these rules, first match wins:

1. the ``layer_layouts`` option, when it names the module;
2. the module type: convolutions, batch/group/instance norms, pooling, padding, upsampling and
   pixel shuffles produce NCHW; ``nn.LayerNorm``/``nn.RMSNorm`` over the last axis and
   ``nn.Linear`` on a rank-4 tensor produce NHWC (subclasses such as timm's ``LayerNorm2d``,
   which normalise axis 1, are told apart by which axis has the normalised size);
3. a module that returns the very tensor another module returned (a container handing on its
   last child's output, ``nn.Identity``) has that module's layout;
4. a module whose output shape equals its input's (activations, Dropout, containers such as a
   residual block) has the layout of its input;
5. a container: the layout of its last child whose output has the container's output shape;
6. the shape: when only NCHW (or only NHWC) tensors of rules 1-2 and the model input have this
   very shape, that layout;
7. otherwise the layout is unknown, and the adapter refuses to tap the layer, naming the
   ``layer_layouts`` override.

A model where no tensor is known to be NHWC (no rule-2 NHWC module, no NHWC override, no NHWC
model input) keeps the simple rule: every rank-4 tensor is NCHW.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules import batchnorm, conv, instancenorm, padding, pooling

from .probe import INPUT, Probe, Record, Source

__all__ = ["NCHW", "NHWC", "Layouts", "resolve"]

NCHW, NHWC = "NCHW", "NHWC"

_NCHW_TYPES: tuple[type[nn.Module], ...] = (
    conv._ConvNd,
    batchnorm._BatchNorm,
    instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    pooling._MaxPoolNd,
    pooling._AvgPoolNd,
    pooling._AdaptiveAvgPoolNd,
    pooling._AdaptiveMaxPoolNd,
    pooling._LPPoolNd,
    nn.FractionalMaxPool2d,
    nn.MaxUnpool2d,
    padding._ConstantPadNd,
    padding._ReflectionPadNd,
    padding._ReplicationPadNd,
    padding._CircularPadNd,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
    nn.Fold,
)
_LAST_AXIS_NORMS: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.LayerNorm, getattr(nn, "RMSNorm", None)) if isinstance(t, type)
)


@dataclass
class Layouts:
    """Resolved layouts per module id: ``NCHW``, ``NHWC`` or None (unknown), rank-4 only."""

    outputs: dict[int, str | None] = field(default_factory=dict)
    inputs: dict[int, str | None] = field(default_factory=dict)
    detected: bool = False  # False: no NHWC tensor anywhere, every rank-4 tensor is NCHW


def _rank4(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4


def _type_layout(m: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Rule 2: the layout a module's type produces, or None when its type does not say."""
    if isinstance(m, _NCHW_TYPES):
        return NCHW
    if isinstance(m, _LAST_AXIS_NORMS):
        size = tuple(getattr(m, "normalized_shape", ()))
        if len(size) != 1:
            return None
        return NHWC if type(m) in _LAST_AXIS_NORMS else _by_axis(shape, size[0])
    if isinstance(m, nn.Linear):
        return NHWC if type(m) is nn.Linear else _by_axis(shape, m.out_features)
    return None


def _by_axis(shape: tuple[int, ...], channels: int) -> str | None:
    last, second = shape[-1] == channels, shape[1] == channels
    if last and not second:
        return NHWC
    if second and not last:
        return NCHW
    return None


class _Resolver:
    def __init__(
        self,
        probe: Probe,
        modules: Mapping[int, nn.Module],
        input_layout: str,
        overrides: Mapping[int, str],
    ) -> None:
        self.records, self.modules = probe.records, modules
        self.input_layout = input_layout
        self.memo: dict[int, str | None] = {}
        self.definite: dict[int, str] = {}
        for key, rec in self.records.items():
            if key in modules and _rank4(rec.out_shape):
                found = overrides.get(key) or _type_layout(modules[key], rec.out_shape or ())
                if found:
                    self.definite[key] = found
        self.votes: dict[tuple[int, ...], set[str]] = {}
        for key, layout in self.definite.items():
            self._vote(self.records[key].out_shape or (), layout)
        raw = _raw_input_shape(probe.input_shape, input_layout)
        if raw is not None:
            self._vote(raw, input_layout)

    def _vote(self, shape: tuple[int, ...], layout: str) -> None:
        self.votes.setdefault(tuple(shape[1:]) if len(shape) == 4 else shape, set()).add(layout)

    def by_shape(self, shape: tuple[int, ...]) -> str | None:
        found = self.votes.get(tuple(shape[1:]), set())
        return next(iter(found)) if len(found) == 1 else None

    def source(self, key: Source) -> str | None:
        if key is None:
            return None
        if key == INPUT:
            return self.input_layout
        if key not in self.memo:
            self.memo[key] = None  # a cycle (a module fed its own output) resolves to unknown
            self.memo[key] = self._output(key)
        return self.memo[key]

    def _output(self, key: int) -> str | None:
        rec = self.records.get(key)
        if rec is None or not _rank4(rec.out_shape):
            return None
        return (
            self.definite.get(key)
            or self.source(rec.out_source)
            or (self.source(rec.in_source) if rec.in_shape == rec.out_shape else None)
            or self._last_child(key, rec)
            or self.by_shape(rec.out_shape or ())
        )

    def _last_child(self, key: int, rec: Record) -> str | None:
        module = self.modules.get(key)
        if module is None:
            return None
        kids = [
            (self.records[id(c)].order, id(c))
            for c in module.children()
            if id(c) in self.records and self.records[id(c)].out_shape == rec.out_shape
        ]
        return self.source(max(kids)[1]) if kids else None

    def input_of(self, key: int, rec: Record) -> str | None:
        return self.source(rec.in_source) or self.by_shape(rec.in_shape or ())


def _raw_input_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...] | None:
    """The model input's torch shape (batch 1) from the channels-last numpy sample shape."""
    if len(shape) != 3:
        return None
    h, w, c = shape
    return (1, c, h, w) if layout == NCHW else (1, h, w, c)


def resolve(
    probe: Probe,
    modules: Mapping[int, nn.Module],
    input_layout: str,
    overrides: Mapping[int, str] | None = None,
    input_overrides: Mapping[int, str] | None = None,
) -> Layouts:
    """The layout of every rank-4 output and first argument the probe saw (see the module doc).

    Args:
        probe: the records of one complete pass.
        modules: the model's modules by id.
        input_layout: the layout of the model's input tensor ("NCHW" or "NHWC"; the sequence
            layouts "NCL"/"NLC" pass a rank-4 input as it is, so they count as "NHWC").
        overrides: forced output layouts by module id (the ``layer_layouts`` option).
        input_overrides: forced layouts of modules' first arguments, by module id.
    """
    input_layout = NHWC if input_layout in ("NCL", "NLC") else input_layout
    overrides, input_overrides = overrides or {}, input_overrides or {}
    r = _Resolver(probe, modules, input_layout, overrides)
    has_nhwc_input = input_layout == NHWC and len(probe.input_shape) == 3
    detected = has_nhwc_input or NHWC in r.definite.values() or NHWC in input_overrides.values()
    out = Layouts(detected=detected)
    for key, rec in probe.records.items():
        if _rank4(rec.out_shape):
            out.outputs[key] = r.source(key) if detected else NCHW
        if _rank4(rec.in_shape):
            forced = input_overrides.get(key)
            out.inputs[key] = forced or (r.input_of(key, rec) if detected else NCHW)
    return out
