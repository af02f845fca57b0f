"""Built-in metrics: how far can an explanation be trusted?

One metric per module, each a plugin registered through ``innersight_register_metrics`` and
written against :mod:`innersight.core` only (as a third party would):

=====================  ==========================================================  ========
metric                 what it measures                                            better
=====================  ==========================================================  ========
``deletion``           score left as the most important pixels are removed (RISE)  lower
``insertion``          score gained as they are revealed on a blur (RISE)          higher
``randomization``      similarity of the maps once the weights are randomised      lower
``data_randomization`` similarity to the maps of a model trained on random labels  lower
``infidelity``         squared error of attributions x perturbation vs score drop  lower
``max_sensitivity``    largest relative change of the map under small noise        lower
``completeness``       |sum of attributions - score difference| / |difference|     lower
``road``               score once top pixels are removed and debiased (ROAD)       lower
``agreement``          rank correlation (top-k overlap, SSIM) with another map     higher
=====================  ==========================================================  ========

``innersight.evaluate(metric, model, explanation, **params)`` runs one; see docs/metrics.md.

This package is also the function ``innersight.metrics()``: calling it returns every registered
metric by name (as :func:`innersight.api.metrics`). A package and a function cannot share the
name ``innersight.metrics`` otherwise: importing ``innersight.metrics.deletion`` binds the
package to that attribute of ``innersight``, whatever was there before.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from innersight.core.metric import Metric


class _MetricsPackage(types.ModuleType):
    """The ``innersight.metrics`` package, callable as ``innersight.metrics()``."""

    def __call__(self) -> Mapping[str, Metric]:
        """Every registered metric (built-in and plugins) by name."""
        from innersight.api import metrics

        return metrics()


sys.modules[__name__].__class__ = _MetricsPackage
