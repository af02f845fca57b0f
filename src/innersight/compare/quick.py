"""Every technique on two models at once, quickly (``innersight compare --all``).

Each technique proposes its own ``"quick"`` parameters (``technique.presets(ctx)``, see
:mod:`innersight.core.presets`), chosen on model A; a technique that picks a layer may pick only
one with a counterpart in model B. Techniques run in section order (``technique.order``, then
the name); one that a model cannot run (a missing capability) is skipped with the reason, one
that fails is recorded with its error, and the others still run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from innersight.api import techniques, wrap
from innersight.compare.result import Comparison
from innersight.compare.run import LayerTranslator, compare
from innersight.core.adapter import ModelAdapter
from innersight.core.errors import InnersightError
from innersight.core.presets import PresetContext
from innersight.core.technique import Technique
from innersight.report.presets import (
    in_order,
    preset_context,
    preset_params,
    skip_for_capabilities,
)

__all__ = ["QuickComparison", "compare_all", "quick_context"]


@dataclass
class QuickComparison:
    """What :func:`compare_all` found.

    Attributes:
        comparisons: one :class:`Comparison` per technique that ran, in section order.
        skipped: ``{technique: why}`` for techniques a model cannot run (a missing capability).
        failures: ``{technique: error message}`` for techniques that raised.
    """

    comparisons: list[Comparison] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def quick_context(
    a: ModelAdapter, x: np.ndarray | None, translate: LayerTranslator, *, seed: int = 0
) -> PresetContext:
    """The ``"quick"`` context of model A: its layers with shapes, one input's shape, and only
    layers that have a counterpart in model B may be picked."""
    return preset_context(
        "quick",
        a,
        x,
        seed=seed,
        layer_ok=lambda name: translate(name, strict=False) is not None,
    )


def compare_all(
    model_a: Any,
    model_b: Any,
    inputs: np.ndarray | None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    layer_map: Mapping[str, str] | None = None,
) -> QuickComparison:
    """Compare every registered technique on ``model_a`` and ``model_b`` with quick settings.

    Args:
        model_a, model_b: the two models (native or wrapped), taking the same inputs.
        inputs: the batch both explain, or None (only techniques that make their own images).
        params: ``{technique: {parameter: value}}``, overriding the quick presets
            (``<param>_b`` keys as for :func:`innersight.compare`).
        seed: the seed every technique gets.
        layer_map: ``{layer of A: layer of B}``, as for :func:`innersight.compare`.

    Returns:
        A :class:`QuickComparison`: the comparisons, and the skipped and failed techniques.
    """
    a, b = wrap(model_a), wrap(model_b)
    x = None if inputs is None else np.asarray(inputs)
    translate = LayerTranslator(a, b, layer_map)
    ctx = quick_context(a, x, translate, seed=seed)
    found = QuickComparison()
    for tech in in_order(techniques().values()):
        why = skip_for_capabilities(tech, a, b)
        if why is not None:
            found.skipped[tech.name] = why
            continue
        try:
            found.comparisons.append(_one(tech, a, b, x, ctx, layer_map, params))
        except InnersightError as err:
            found.failures[tech.name] = str(err)
    return found


def _one(
    tech: Technique,
    a: ModelAdapter,
    b: ModelAdapter,
    x: np.ndarray | None,
    ctx: PresetContext,
    layer_map: Mapping[str, str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
) -> Comparison:
    user = (params or {}).get(tech.name)
    return compare(tech.name, a, b, x, layer_map=layer_map, **preset_params(tech, ctx, user))
