"""The ``layer_override`` capability: run a model with one layer's tensor replaced.

Layer integrated gradients (Captum's ``LayerIntegratedGradients``) integrates the gradient
along a straight path *in a layer's activation space*: the model runs on the real inputs, but
the layer returns a point between the activations of a baseline and those of the input.
Gradients with respect to what a layer *receives* (``attribute_to_layer_input=True``) are the
same call with the replacement equal to the real input of the layer. An adapter with the
``layer_override`` capability provides that one call, :meth:`LayerOverrideAdapter.
layer_override_value_and_grad`; :func:`layer_override_adapter` types an adapter as one, or
says in a CapabilityError what is missing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from innersight.core.adapter import Capability, ModelAdapter, ReluMode
from innersight.core.errors import CapabilityError
from innersight.core.objectives import Objective

__all__ = ["LayerOverrideAdapter", "has_layer_override", "layer_override_adapter"]


@runtime_checkable
class LayerOverrideAdapter(ModelAdapter, Protocol):
    """An adapter with the ``layer_override`` capability.

    The contract of :meth:`layer_override_value_and_grad`:

    * ``layer`` is a layer name (its output is replaced: every consumer of that output sees
      the replacement) or an :func:`~innersight.core.input_tap` name (what that layer receives
      as its first argument is replaced, for that layer only).
    * ``replacement`` is channels-last numpy, shaped exactly like the tensor it replaces for
      this batch (what ``forward(x, taps=[layer])`` returns for ``layer``), any float dtype;
      the adapter converts it to the layer's own layout and dtype.
    * Everything else runs on the real ``x``: a residual path that bypasses the layer, or a
      second branch reading the same input, sees the activations of ``x``, not the replacement.
      A backend that cannot do that exactly for a graph raises a CapabilityError naming the
      layer and the reason; it never returns an approximation.
    * A module that runs several times in one pass is replaced at the call its taps read
      (torch: the last call).
    * Returns ``(values (N,), grad)``: the objective's per-sample values and
      d(sum of values)/d(replacement), channels-last, shaped like ``replacement``, float32.
      With ``replacement`` equal to the real activations, ``grad`` is exactly
      ``layer_value_and_grad``'s gradient.
    * The user's model is left as it came in (parameters, buffers, flags, hooks).
    """

    def layer_override_value_and_grad(
        self,
        x: np.ndarray,
        objective: Objective,
        layer: str,
        replacement: np.ndarray,
        *,
        relu: ReluMode = "plain",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(N,)`` and d(sum of values)/d(replacement) with ``layer`` replaced."""
        ...


def has_layer_override(model: ModelAdapter) -> bool:
    """Whether ``model`` declares and implements the ``layer_override`` capability."""
    declared = Capability.LAYER_OVERRIDE in getattr(model, "capabilities", frozenset())
    return declared and isinstance(model, LayerOverrideAdapter)


def layer_override_adapter(
    model: ModelAdapter, what: str = "this technique"
) -> LayerOverrideAdapter:
    """``model`` typed as a :class:`LayerOverrideAdapter`; CapabilityError otherwise."""
    if not has_layer_override(model) or not isinstance(model, LayerOverrideAdapter):
        backend = getattr(model, "backend", "?")
        raise CapabilityError(
            f"{what} needs layer_override (running the model with a layer's output replaced), "
            f"which the {backend} adapter for {getattr(model, 'name', '?')} does not provide; "
            "the torch and Keras adapters do"
        )
    return model
