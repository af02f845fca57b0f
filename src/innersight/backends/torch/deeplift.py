"""torch adapter methods for deeplift_value_and_grad (DeepLift rescale rule) (work in progress)."""

from __future__ import annotations

from innersight.core.adapter import Capability

__all__ = ["DeepLiftMixin"]


class DeepLiftMixin:
    """Mixed into the adapter; ``provides`` lists the capabilities it adds."""

    provides: frozenset[Capability] = frozenset()
