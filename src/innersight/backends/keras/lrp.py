"""keras adapter methods for lrp_relevance (layer-wise relevance propagation) (work in progress)."""

from __future__ import annotations

from innersight.core.adapter import Capability

__all__ = ["LrpMixin"]


class LrpMixin:
    """Mixed into the adapter; ``provides`` lists the capabilities it adds."""

    provides: frozenset[Capability] = frozenset()
