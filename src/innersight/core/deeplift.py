"""The ``deeplift`` capability: DeepLift (rescale rule) multipliers from an adapter.

Backend-neutral: this module only states the contract; the torch and Keras backends implement it
(``backends/torch/deeplift.py``, ``backends/keras/deeplift.py``) and the ``deeplift`` and
``deeplift_shap`` techniques use it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from innersight.core.adapter import ModelAdapter
from innersight.core.objectives import Objective

__all__ = ["DEFAULT_EPS", "DeepLiftAdapter"]

#: Below this ``|x - x0|`` a nonlinearity passes its ordinary gradient (Captum's ``eps``).
DEFAULT_EPS = 1e-10


@runtime_checkable
class DeepLiftAdapter(ModelAdapter, Protocol):
    """An adapter with the ``deeplift`` capability.

    ``deeplift_value_and_grad(x, baseline, objective)`` runs ONE pass over the doubled batch
    ``[x; baseline]`` (Captum's convention) in which every supported nonlinearity ``y = f(u)``
    backpropagates the DeepLift rescale multiplier instead of its derivative:

        grad_u = grad_y * (f(u) - f(u0)) / (u - u0)     where |u - u0| >= eps,
        grad_u = grad_y * f'(u)                          elsewhere (the ordinary gradient),

    ``u0`` being the same unit's value in the baseline half. Max pooling follows Captum's rule
    (the differences of the pooled maxima, scattered to the argmax of each half, over the input
    difference); linear operations keep their gradient. Both halves' objective values are
    summed, as Captum does, so the baseline half sees the same upstream multipliers.

    Returns:
        ``(values, multipliers)``: ``values`` ``(N,)`` float32 is the objective's change
        ``F(x) - F(baseline)`` per sample, the total that ``(x - baseline) * multipliers`` adds
        up to (exactly, up to float round-off, for networks of linear layers, max pooling and
        the supported elementwise nonlinearities); ``multipliers`` has the shape of ``x``
        (channels-last numpy, float32). ``values`` of a Custom objective are its scores' change.

    The adapter leaves the model as it found it (no hook, flag or weight changed), as for
    ``value_and_grad``. A nonlinearity it cannot give the rescale rule is either reported (its
    gradient stays ordinary and the summation check shows it) or refused with a
    CapabilityError that says so; which, is documented by each backend.
    """

    def deeplift_value_and_grad(
        self, x: np.ndarray, baseline: np.ndarray, objective: Objective
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(F(x) - F(baseline)`` per sample ``(N,)``, DeepLift multipliers shaped like ``x``).

        ``baseline`` has the shape of ``x``: one baseline per sample.
        """
        ...
