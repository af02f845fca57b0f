"""Layer-wise relevance propagation (LRP): the rules, the composites and the adapter contract.

Backend-neutral: this module defines *what* each rule computes; the torch and Keras adapters
(``lrp_relevance``) apply it layer by layer, each with its own tensors, through
:func:`propagate`, which is written once against the small :class:`LayerMath` protocol.

Notation for one layer ``z = W x + b`` (dense, convolution, batch norm as an affine map, average
pooling with implicit weights): ``R`` is the relevance of the layer's outputs, ``R_in`` the
relevance handed to its inputs, ``x+ = max(x, 0)``, ``x- = min(x, 0)`` (likewise ``W+``, ``W-``,
``b+``, ``b-``), ``J_V^T v`` the input gradient of ``<V x, v>`` (the backward pass of the layer
with weights ``V``), and ``s(d) = d + e * sign(d)`` with ``sign(0) = +1`` (the stabiliser ``e``):

========== ====================================================================================
Epsilon    ``R_in = x * J_W^T (R / s(z))``, ``e = epsilon`` (epsilon=0: LRP-0)
ZPlus      ``R_in = x+ * J_{W+}^T q + x- * J_{W-}^T q``, ``q = R / s(W+ x+ + W- x- + b+)``
AlphaBeta  ``alpha * [ZPlus part] - beta * [x+ * J_{W-}^T n + x- * J_{W+}^T n]``,
           ``n = R / s(W- x+ + W+ x- + b-)``; ``alpha - beta = 1``
Gamma      ``P = W + gamma W+``, ``M = W + gamma W-``; where ``z > 0``:
           ``q = R / s(P x+ + M x- + b + gamma b+)``, ``R_in = x+ * J_P^T q + x- * J_M^T q``; where
           ``z < 0``: the same with ``P`` and ``M`` swapped and ``b + gamma b-`` (zennit's
           generalised gamma; the original rule on non-negative inputs)
ZBox       ``q = R / s(W x - W+ l - W- h)``, ``R_in = x * J_W^T q - l * J_{W+}^T q - h *
           J_{W-}^T q`` (``l``, ``h``: the lowest and highest input values; the bias cancels)
Flat       ``R_in = J_1^T (R / s(1 1))``: weights and inputs all ones, no bias
WSquare    ``R_in = J_{W^2}^T (R / s(W^2 1 + b^2))``
Pass       ``R_in = R`` (element-wise layers: activations, batch norm by default)
Gradient   the plain backward pass (reshapes, max pooling: winner takes all)
========== ====================================================================================

These are the rules as zennit defines them (``zennit.rules``), including where it modifies the
bias along with the weights (``zero_bias=True`` is zennit's ``zero_params=["bias"]``). The
relevance at the output is the objective's value at its target: the one-hot of the target
score times the score (``R = onehot * z``), as zennit's ``attr_output=onehot * output`` and
Captum's ``LRP`` use it.

Composites (:func:`composite`) assign a rule to each layer by kind (:data:`KINDS`), with an
optional rule for the first layer of some kinds, and per-layer-name overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from innersight.core import validate
from innersight.core.errors import CapabilityError, InputError, ObjectiveError
from innersight.core.objectives import Custom, Logit

__all__ = [
    "COMPOSITES",
    "KINDS",
    "RULES",
    "AlphaBeta",
    "Composite",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "LayerMath",
    "LrpAdapter",
    "Pass",
    "Rule",
    "Signs",
    "WSquare",
    "ZBox",
    "ZPlus",
    "check_request",
    "composite",
    "no_rule_error",
    "norm_shares",
    "propagate",
    "single_rule",
]

#: A backend tensor (torch.Tensor, tf.Tensor): the rule algebra uses only + - * / on it.
T = Any

# -- the rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon; ``epsilon=0`` is LRP-0 (then ``R_in`` is gradient x input for a linear map).

    A larger epsilon absorbs the relevance of weak outputs (``z`` small against epsilon): the
    map gets sparser and no longer sums to the score."""

    epsilon: float = 1e-6
    zero_bias: bool = False

    def __post_init__(self) -> None:
        validate.number("epsilon", self.epsilon, low=0.0, example="1e-6")


@dataclass(frozen=True)
class Gamma:
    """LRP-gamma (zennit's generalised form): favours positive contributions by ``gamma``."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    zero_bias: bool = False

    def __post_init__(self) -> None:
        validate.number("gamma", self.gamma, low=0.0, example="0.25")
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")


@dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta: ``alpha`` times the positive, minus ``beta`` times the negative share."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    zero_bias: bool = False

    def __post_init__(self) -> None:
        validate.number("alpha", self.alpha, low=0.0, example="2")
        validate.number("beta", self.beta, low=0.0, example="1")
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise InputError(
                f"alpha - beta must be 1 for the relevance to be conserved; got alpha="
                f"{self.alpha}, beta={self.beta}: use e.g. alpha=2, beta=1 or alpha=1, beta=0"
            )


@dataclass(frozen=True)
class ZPlus:
    """LRP-z+ (= alpha-beta with alpha=1, beta=0, also on negative inputs)."""

    stabilizer: float = 1e-6
    zero_bias: bool = False

    def __post_init__(self) -> None:
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")


@dataclass(frozen=True)
class ZBox:
    """LRP-z^B for the input layer: ``low``/``high`` are the smallest and largest input values
    (floats, or arrays broadcastable to one channels-last input, e.g. one value per channel)."""

    low: Any = 0.0
    high: Any = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
            raise InputError(
                f"ZBox needs finite bounds with low <= high, got low={self.low!r}, "
                f"high={self.high!r}; use the range of the inputs, e.g. low=0.0, high=1.0"
            )


@dataclass(frozen=True)
class Flat:
    """LRP-flat: the relevance spread evenly over each output's receptive field."""

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")


@dataclass(frozen=True)
class WSquare:
    """LRP-w^2: the relevance spread in proportion to the squared weights."""

    stabilizer: float = 1e-6
    zero_bias: bool = False

    def __post_init__(self) -> None:
        validate.number("stabilizer", self.stabilizer, low=0.0, example="1e-6")


@dataclass(frozen=True)
class Pass:
    """The relevance passes unchanged (element-wise layers)."""


@dataclass(frozen=True)
class Gradient:
    """The plain backward pass (reshapes, max pooling: winner takes all)."""


Rule = Epsilon | Gamma | AlphaBeta | ZPlus | ZBox | Flat | WSquare | Pass | Gradient
#: Rule names as the ``lrp`` technique takes them.
RULES = ("epsilon", "gamma", "alpha_beta", "zplus")

# -- layer kinds and composites ---------------------------------------------------------------

#: The layer kinds a backend sorts its layers into. ``dense``: fully connected; ``conv``:
#: convolutions; ``avgpool``: average/sum pooling and means over non-batch axes; ``sum``: the
#: element-wise sum of several tensors (Keras ``Add``, a residual ``x + y`` in torch);
#: ``maxpool``; ``batchnorm`` (inference); ``activation``: element-wise activations; ``reshape``:
#: flatten/reshape/dropout/identity.
KINDS = ("dense", "conv", "avgpool", "sum", "maxpool", "batchnorm", "activation", "reshape")
#: Kinds a rule with weights may be given to (the others take Epsilon, Pass or Gradient).
WEIGHTED = frozenset({"dense", "conv", "batchnorm"})

_BASE: dict[str, Rule] = {
    "avgpool": Epsilon(1e-6),  # zennit's Norm
    "sum": Epsilon(1e-6),  # zennit's Norm on its Sum layer
    "maxpool": Gradient(),
    "batchnorm": Pass(),
    "activation": Pass(),
    "reshape": Gradient(),
}


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets.

    Attributes:
        name: a label ("epsilon_plus", "rule:epsilon", ...).
        rules: kind (see :data:`KINDS`) -> rule; kinds left out take the base map (Pass for
            activations and batch norm, Epsilon(1e-6) for average pooling and sums, Gradient
            for max pooling and reshapes).
        first: the rule of the first layer, in execution order, whose kind is in
            ``first_kinds`` (zennit's ``first_map``), or None.
        first_kinds: see ``first``.
        layers: layer name -> rule, overriding everything else.
        merge_batchnorm: fold a batch norm that directly follows a dense or convolution layer
            (whose output nothing else reads) into that layer, as zennit's
            ``SequentialMergeBatchNorm`` canonizer does: the layer's rule then sees
            ``W * scale`` and ``b * scale + shift`` and its output after the batch norm, and
            the batch norm passes the relevance. Other batch norms keep their own rule.
    """

    name: str
    rules: Mapping[str, Rule]
    first: Rule | None = None
    first_kinds: frozenset[str] = frozenset({"conv"})
    layers: Mapping[str, Rule] = field(default_factory=dict)
    merge_batchnorm: bool = False

    def __post_init__(self) -> None:
        for kind, rule in self.rules.items():
            validate.choice("layer kind", kind, KINDS)
            _check_rule(kind, rule)

    def rule_for(self, kind: str, name: str, first: bool) -> Rule:
        """The rule of layer ``name`` of ``kind``; ``first``: no layer of ``first_kinds`` ran
        before it."""
        if name in self.layers:
            _check_rule(kind, self.layers[name], name)
            return self.layers[name]
        if first and self.first is not None and kind in self.first_kinds:
            return self.first
        return self.rules.get(kind, _BASE.get(kind, Gradient()))


def _check_rule(kind: str, rule: Any, name: str | None = None) -> None:
    what = f"layer {name!r}" if name is not None else f"{kind!r} layers"
    if not isinstance(rule, Rule):
        raise InputError(
            f"the rule for {what} must be an innersight.core.lrp rule (Epsilon, Gamma, "
            f"AlphaBeta, ZPlus, ZBox, Flat, WSquare, Pass, Gradient), got {rule!r}"
        )
    if kind not in WEIGHTED and not isinstance(rule, (Epsilon, Pass, Gradient)):
        raise InputError(
            f"{type(rule).__name__} modifies weights, and {what} ({kind}) have none; give "
            "them Epsilon (zennit's Norm), Pass or Gradient"
        )


def single_rule(rule: Rule) -> Composite:
    """One rule for every dense and convolution layer (the base map for the others)."""
    _check_rule("dense", rule)
    return Composite(f"rule:{type(rule).__name__.lower()}", {"dense": rule, "conv": rule})


#: Composite names, as zennit registers them.
COMPOSITES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")


def composite(
    name: str,
    *,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low: Any = 0.0,
    high: Any = 1.0,
) -> Composite:
    """zennit's composite ``name`` (see :data:`COMPOSITES`) with its layer assignments:

    * ``epsilon_plus``: ZPlus on convolutions, Epsilon on dense layers.
    * ``epsilon_plus_flat``: the same, Flat on the first dense or convolution layer.
    * ``epsilon_gamma_box``: ZBox(low, high) on the first convolution, Gamma on the others,
      Epsilon on dense layers.
    * ``epsilon_alpha2_beta1``: AlphaBeta(2, 1) on convolutions, Epsilon on dense layers.
    """
    validate.choice("composite", name, COMPOSITES)
    eps = Epsilon(epsilon)
    if name == "epsilon_plus":
        return Composite(name, {"conv": ZPlus(), "dense": eps})
    if name == "epsilon_plus_flat":
        rules: dict[str, Rule] = {"conv": ZPlus(), "dense": eps}
        return Composite(name, rules, Flat(), frozenset({"conv", "dense"}))
    if name == "epsilon_gamma_box":
        rules = {"conv": Gamma(gamma), "dense": eps}
        return Composite(name, rules, ZBox(low, high), frozenset({"conv"}))
    return Composite(name, {"conv": AlphaBeta(2.0, 1.0), "dense": eps})


# -- the adapter contract ---------------------------------------------------------------------


@runtime_checkable
class LrpAdapter(Protocol):
    """An adapter that propagates relevance layer by layer (the ``lrp`` capability).

    ``lrp_relevance(x, objective, rules)`` takes channels-last inputs ``x`` (N, ...), an output
    objective (``Logit`` or ``Custom``; the pre-softmax scores, as ``value_and_grad`` reads
    them) and a :class:`Composite`, and returns ``(values (N,), relevance (N, *x.shape[1:]))``:
    the objective's values, and the relevance of each input value, float32, channels-last
    like ``x``. The relevance at the scores is ``scores * d value / d scores`` (for a Logit:
    the target score at the target, zero elsewhere); every layer then hands its outputs'
    relevance to its inputs with the rule the composite assigns it (:func:`propagate`).

    The model is never changed: modified weights are computed on the fly. A model with a layer
    of no known kind (LayerNorm, attention, GELU, ...) raises a CapabilityError naming those
    layers (:func:`no_rule_error`).
    """

    def lrp_relevance(
        self, x: np.ndarray, objective: Any, rules: Composite
    ) -> tuple[np.ndarray, np.ndarray]: ...


def no_rule_error(model: str, layers: list[tuple[str, str]]) -> CapabilityError:
    """The error for layers LRP has no rule for: ``layers`` is ``[(name, type), ...]``."""
    listed = ", ".join(f"{name!r} ({kind})" for name, kind in layers[:8])
    more = f" and {len(layers) - 8} more" if len(layers) > 8 else ""
    kinds = "; ".join(dict.fromkeys(kind.split(", ")[0] for _, kind in layers))
    return CapabilityError(
        f"lrp has no rule for {len(layers)} layer(s) of {model}: {listed}{more} (kinds without "
        f"a rule: {kinds}). LRP rules "
        "are defined for dense, convolution, pooling and mean, batch-norm, sums of tensors "
        "(residual connections), reshape/concatenation and element-wise activation layers "
        "(ReLU family, tanh, sigmoid); gated activations (GELU, SiLU, Hardswish), products of "
        "activations (squeeze-excite gates), normalisation over features (LayerNorm), "
        "attention and other layers need rules of their own (zennit's composites have none "
        "either). Explain this model with input_x_gradient, integrated_gradients or deeplift "
        "instead"
    )


# -- the rule algebra, written once for every backend -----------------------------------------


class LayerMath(Protocol):
    """One layer ``z = W x + b`` seen by :func:`propagate`, with the backend's tensors ``T``.

    ``weights`` modifiers map a parameter tensor to another (e.g. its positive part); for a
    layer without parameters (average pooling) they are ignored, and only rules that leave
    the weights as they are may be applied to it.
    """

    def output(self, x: T, weight: Callable[[T], T], bias: Callable[[T], T] | None) -> T:
        """``mod(W) x + mod(b)`` (no bias when ``bias`` is None or the layer has none)."""
        ...

    def backward(self, weight: Callable[[T], T], v: T) -> T:
        """``J_{mod(W)}^T v``: the input gradient of ``<mod(W) x, v>``."""
        ...

    def pos(self, t: T) -> T: ...
    def neg(self, t: T) -> T: ...
    def above(self, t: T) -> T:
        """1.0 where ``t > 0``, else 0.0, same dtype."""
        ...

    def below(self, t: T) -> T:
        """1.0 where ``t < 0``, else 0.0, same dtype."""
        ...

    def ones_like(self, t: T) -> T: ...
    def bounds(self, value: Any, like: T) -> T:
        """``value`` (a ZBox bound, channels-last numpy broadcastable to one input) as a tensor
        shaped like the layer input ``like``."""
        ...


def _same(t: Any) -> Any:
    return t


class Signs(Protocol):
    """The part of :class:`LayerMath` the stabilised division needs."""

    def above(self, t: T) -> T: ...
    def below(self, t: T) -> T: ...


def _stable(m: Signs, d: Any, e: float) -> Any:
    """``d + e * sign(d)``, ``sign(0) = +1``."""
    return d + e * (1.0 - 2.0 * m.below(d))


def _ratio(m: Signs, r: Any, d: Any, e: float) -> Any:
    """``r / s(d)``; with ``e == 0`` (LRP-0), outputs with ``d == 0`` pass no relevance (0, not
    the 0/0 of a plain division). The denominator is ``d + (1 - nonzero)``: 1 where ``d == 0``,
    ``d`` itself elsewhere. (``d + 1 - nonzero`` rounded every ``|d|`` below float32's 6e-8 to
    0, and tiny outputs, e.g. a random-weight network's 1e-11 scores, to Inf/NaN relevance.)"""
    if e > 0:
        return r / _stable(m, d, e)
    nonzero = m.above(d) + m.below(d)
    return r * nonzero / (d + (1.0 - nonzero))


def propagate(rule: Rule, m: LayerMath, x: T, r: T, z: T) -> T:
    """The relevance of the layer's inputs ``x`` given its outputs' relevance ``r`` (and its
    plain output ``z``), for a weighted rule (not Pass or Gradient)."""
    if isinstance(rule, Epsilon):
        bias = None if rule.zero_bias else _same
        return x * m.backward(_same, _ratio(m, r, m.output(x, _same, bias), rule.epsilon))
    if isinstance(rule, (ZPlus, AlphaBeta)):
        return _alpha_beta(rule, m, x, r)
    if isinstance(rule, Gamma):
        return _gamma(rule, m, x, r, z)
    if isinstance(rule, ZBox):
        return _zbox(rule, m, x, r)
    if isinstance(rule, (Flat, WSquare)):
        return _flat(rule, m, x, r)
    raise InputError(f"{type(rule).__name__} is not a rule with weights")  # pragma: no cover


def norm_shares(m: Signs, xs: list[T], r: T, z: T, rule: Epsilon) -> list[T]:
    """zennit's Norm rule for a sum ``z = x_1 + x_2 + ...`` of same-shaped tensors: each
    summand gets ``R_i = x_i * R / s(z)`` (``e = rule.epsilon``; with 0, outputs with
    ``z == 0`` pass nothing). The shares add up to ``R * z / s(z)``: the sum conserves."""
    q = _ratio(m, r, z, rule.epsilon)
    return [x * q for x in xs]


def _split(m: LayerMath, x: T, r: T, first: Any, second: Any, bias: Any, e: float) -> T:
    """``x+ J_first^T q + x- J_second^T q`` with ``q = r / s(first x+ + second x- + bias)``."""
    xp, xn = m.pos(x), m.neg(x)
    q = _ratio(m, r, m.output(xp, first, bias) + m.output(xn, second, None), e)
    return xp * m.backward(first, q) + xn * m.backward(second, q)


def _alpha_beta(rule: ZPlus | AlphaBeta, m: LayerMath, x: T, r: T) -> T:
    alpha, beta = (1.0, 0.0) if isinstance(rule, ZPlus) else (rule.alpha, rule.beta)
    e = rule.stabilizer
    pos, neg = m.pos, m.neg
    positive = _split(m, x, r, pos, neg, None if rule.zero_bias else pos, e)
    if beta == 0.0:
        return positive if alpha == 1.0 else positive * alpha
    negative = _split(m, x, r, neg, pos, None if rule.zero_bias else neg, e)
    return positive * alpha - negative * beta


def _gamma(rule: Gamma, m: LayerMath, x: T, r: T, z: T) -> T:
    g = rule.gamma

    def up(w: T) -> T:
        return w + m.pos(w) * g

    def down(w: T) -> T:
        return w + m.neg(w) * g

    bias_up, bias_down = (None, None) if rule.zero_bias else (up, down)
    e = rule.stabilizer
    return _split(m, x, r * m.above(z), up, down, bias_up, e) + _split(
        m, x, r * m.below(z), down, up, bias_down, e
    )


def _zbox(rule: ZBox, m: LayerMath, x: T, r: T) -> T:
    low, high = m.bounds(rule.low, x), m.bounds(rule.high, x)
    d = m.output(x, _same, None) - m.output(low, m.pos, None) - m.output(high, m.neg, None)
    q = _ratio(m, r, d, rule.stabilizer)
    return x * m.backward(_same, q) - low * m.backward(m.pos, q) - high * m.backward(m.neg, q)


def _flat(rule: Flat | WSquare, m: LayerMath, x: T, r: T) -> T:
    ones = m.ones_like(x)
    if isinstance(rule, Flat):
        weight: Callable[[T], T] = m.ones_like
        bias: Callable[[T], T] | None = None
    else:

        def weight(w: T) -> T:
            return w * w

        bias = None if rule.zero_bias else weight
    return m.backward(weight, _ratio(m, r, m.output(ones, weight, bias), rule.stabilizer))


def check_request(objective: Any, rules: Any) -> Logit | Custom:
    """The checks every adapter's ``lrp_relevance`` makes first: an output-score objective
    (Logit or Custom) and a :class:`Composite`; ObjectiveError / InputError otherwise."""
    if not isinstance(objective, (Logit, Custom)):
        name = type(objective).__name__
        raise ObjectiveError(
            f"lrp explains output scores (Logit or Custom objectives), got {name}; relevance "
            f"of a {name} objective is not defined here: use a Logit target, or a gradient "
            "technique for layer objectives"
        )
    if not isinstance(rules, Composite):
        raise InputError(
            f"rules must be an innersight.core.lrp.Composite, got {type(rules).__name__}; "
            "build one with innersight.core.lrp.composite('epsilon_plus') or single_rule()"
        )
    return objective
