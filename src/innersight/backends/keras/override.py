"""Adapter methods that replace a layer's output (layer integrated gradients, tokens)."""

from __future__ import annotations

from innersight.core.adapter import Capability

__all__ = ["LayerOverrideMixin"]


class LayerOverrideMixin:
    """Mixed into the adapter; ``provides`` lists the capabilities it adds."""

    provides: frozenset[Capability] = frozenset()
