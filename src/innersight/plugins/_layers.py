"""What the built-in techniques know about layers in general: kinds, maps, tokens, aliases.

Techniques pick default layers from ``adapter.layers()`` alone (names, kinds, channels-last
output shapes, aliases), so the rules are the same for every backend. Kinds are class names,
which differ between frameworks (``BatchNorm2d`` / ``BatchNormalization``), hence the sets
below hold both spellings and the tests match by family (``"norm"`` in the name).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from innersight.core import LayerInfo, LayerNotFoundError, ModelAdapter

__all__ = [
    "Choice",
    "describe",
    "display_name",
    "is_activation",
    "is_map",
    "is_normalisation",
    "is_padding",
    "is_pass_through",
    "map_size",
    "size_text",
    "square_tokens",
]


@dataclass(frozen=True)
class Choice:
    """The layer Grad-CAM runs on: ``tap`` (the adapter's layer), ``name`` (shown: the
    outermost alias of ``tap``) and ``rule`` (why, in words)."""

    tap: str
    name: str
    rule: str


#: Layers that return their input unchanged at inference (or never run): never worth a default.
PASS_THROUGH = frozenset(
    {
        "Identity",
        "InputLayer",
        "ActivityRegularization",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "FeatureAlphaDropout",
        "DropPath",
        "DropBlock2d",
    }
)
#: Elementwise activations, torch and Keras class names (Keras ``Activation`` wraps any).
ACTIVATIONS = frozenset(
    {
        "Activation",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "PReLU",
        "RReLU",
        "ELU",
        "SELU",
        "CELU",
        "GELU",
        "QuickGELU",
        "SiLU",
        "Swish",
        "Mish",
        "Hardswish",
        "HardSwish",
        "Hardsigmoid",
        "HardSigmoid",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softsign",
        "Hardtanh",
        "Threshold",
    }
)


def is_pass_through(kind: str) -> bool:
    """Identity, dropout, noise and the like: the same numbers as the layer before."""
    low = kind.lower()
    return kind in PASS_THROUGH or "dropout" in low or low.startswith("droppath")


def is_padding(kind: str) -> bool:
    """ZeroPadding2D, ZeroPad2d, ReflectionPad2d, ...: the previous map with a border."""
    low = kind.lower()
    return "padding" in low or low.endswith(("pad1d", "pad2d", "pad3d"))


def is_activation(kind: str) -> bool:
    return kind in ACTIVATIONS or kind.lower().endswith("activation")


def is_normalisation(kind: str) -> bool:
    """BatchNorm2d, BatchNormalization, LayerNorm, GroupNorm, timm's BatchNormAct2d, ..."""
    return "norm" in kind.lower()


def map_size(info: LayerInfo) -> tuple[int, int] | None:
    """(H, W) of a layer with a known (H, W, C) output, else None."""
    shape = tuple(info.output_shape)
    if len(shape) != 3 or shape[0] is None or shape[1] is None:
        return None
    return int(shape[0]), int(shape[1])


def is_map(info: LayerInfo, min_side: int = 2) -> bool:
    """An (H, W, C) output with H and W at least ``min_side`` (default: no 1x1 "maps"); an
    unknown size (``None``: a Keras model with a flexible input) counts as large enough."""
    shape = tuple(info.output_shape)
    return len(shape) == 3 and all(d is None or d >= min_side for d in shape[:2])


def size_text(info: LayerInfo) -> str:
    """``"7x7"`` (``"?x?"`` where unknown)."""
    return "x".join("?" if d is None else str(d) for d in tuple(info.output_shape)[:2])


def square_tokens(count: int) -> tuple[int, int] | None:
    """``(leading tokens to drop, grid side)`` when ``count`` tokens are a square grid (s*s)
    or a square grid after one class token (s*s + 1), with s >= 2; else None."""
    for skip in (0, 1):
        side = math.isqrt(max(count - skip, 0))
        if side >= 2 and side * side == count - skip:
            return skip, side
    return None


def display_name(model: ModelAdapter, info: LayerInfo) -> str:
    """The outermost alias of a layer that the adapter accepts as a name (torch ``layer4`` for
    ``layer4.1.relu``), else the layer's own name."""
    lookup = getattr(model, "layer_info", None)
    for alias in reversed(tuple(info.aliases)):
        if lookup is None:
            return str(alias)
        try:
            lookup(alias)
        except LayerNotFoundError:
            continue
        return str(alias)
    return str(info.name)


def describe(info: LayerInfo, shown: str) -> str:
    """``'layer4' (= 'layer4.1.relu', ReLU)`` or ``'relu2' (ReLU)``."""
    if shown != info.name:
        return f"{shown!r} (the output of {info.name!r}, {info.kind})"
    return f"{shown!r} ({info.kind})"


def names(infos: Sequence[Any]) -> list[str]:
    return [str(info.name) for info in infos]
