"""How the ``lrp`` technique turns its parameters into a :class:`~innersight.core.lrp.Composite`."""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core import validate
from innersight.core.errors import InputError
from innersight.core.lrp import (
    COMPOSITES,
    RULES,
    AlphaBeta,
    Composite,
    Epsilon,
    Gamma,
    Rule,
    ZBox,
    ZPlus,
    composite,
    single_rule,
)

__all__ = ["build_composite", "describe", "zbox_bounds"]


def zbox_bounds(inputs: np.ndarray, low: Any, high: Any) -> tuple[Any, Any]:
    """ZBox's bounds: as given, else the smallest/largest value of the batch."""
    lo = float(np.min(inputs)) if low is None else low
    hi = float(np.max(inputs)) if high is None else high
    ZBox(lo, hi)  # validates
    return lo, hi


def _rule(name: str, epsilon: float, gamma: float, alpha: float, beta: float) -> Rule:
    validate.choice("rule", name, RULES)
    if name == "epsilon":
        return Epsilon(epsilon)
    if name == "gamma":
        return Gamma(gamma)
    if name == "alpha_beta":
        return AlphaBeta(alpha, beta)
    return ZPlus()


def build_composite(
    rule: str | None,
    composite_name: str | Composite | None,
    params: dict[str, Any],
) -> Composite:
    """The composite of the technique's parameters: ``rule`` (one rule for every dense and
    convolution layer) or ``composite`` (zennit's name, or a Composite), never both."""
    if rule is not None and composite_name is not None:
        raise InputError(
            f"rule={rule!r} and composite={composite_name!r} are alternatives: pass one rule "
            "for every layer (rule=...) or a per-layer assignment (composite=...), not both"
        )
    if isinstance(composite_name, Composite):
        return composite_name
    epsilon = validate.number("epsilon", params["epsilon"], low=0.0, example=1e-6)
    if rule is not None:
        return single_rule(_rule(rule, epsilon, params["gamma"], params["alpha"], params["beta"]))
    name = "epsilon_plus" if composite_name is None else composite_name
    validate.choice("composite", name, COMPOSITES)
    return composite(
        name, epsilon=epsilon, gamma=params["gamma"], low=params["low"], high=params["high"]
    )


def describe(rules: Composite) -> dict[str, Any]:
    """A JSON-ready description: the composite's name and the rule of each layer kind."""
    out: dict[str, Any] = {"name": rules.name}
    out["rules"] = {kind: repr(rule) for kind, rule in rules.rules.items()}
    if rules.first is not None:
        out["first"] = {"rule": repr(rules.first), "kinds": sorted(rules.first_kinds)}
    if rules.layers:
        out["layers"] = {name: repr(rule) for name, rule in rules.layers.items()}
    return out
