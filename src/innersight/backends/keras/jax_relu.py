"""Guided/deconv ReLUs and layer gradients on Keras-on-JAX, by re-playing the traced jaxpr.

A Keras model on JAX is a pure function of its variables and input (``stateless_call``). JAX
traces it to a jaxpr, in which every ReLU Keras computes (``activation="relu"``, ``ReLU()``,
``keras.ops.relu``, ``relu6``) is a ``custom_jvp_call`` of ``jax.nn.relu``/``relu6``. :func:`replay`
evaluates that jaxpr equation by equation, exactly as ``jax.core.eval_jaxpr`` does, except that:

* each ReLU/ReLU6 call is answered by a ``jax.custom_vjp`` function with the same forward and
  the guided/deconv backward (the rules of the TensorFlow and torch backends):

  - guided:  ``grad * (y > 0) * (grad > 0)`` (``relu6``: also ``y < 6``), Springenberg et al.
  - deconv:  ``relu(grad)``, Zeiler & Fergus.

* one chosen variable (the output of the layer a layer gradient is taken w.r.t.) gets a zero
  ``eps`` added where it is defined, so ``d values / d eps`` is the gradient w.r.t. that tensor
  through every consumer of it.

``Replay(mode="deeplift")`` re-plays the doubled batch ``[x; baseline]`` with the DeepLift rescale
rule on every nonlinearity (see the DeepLift section at the end and :mod:`.deeplift`).

Nothing of the user's model is touched: only the adapter's own trace is re-played. What cannot be
covered is refused (CapabilityError), never returned as plain gradients: a ReLU inside control
flow or a custom derivative rule (``lax.scan`` of an RNN, a ``custom_vjp``), and ``leaky_relu``
calls. ``hard_sigmoid``/``hard_silu`` compute ``relu6(x + 3) / 6`` inside; they are gates, not
ReLUs of the network, and keep their plain gradient (as on TensorFlow, where the same ``Relu6`` is
recognised by its pattern).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from innersight.backends.keras.relu_forms import refuse
from innersight.core.errors import CapabilityError

__all__ = ["Replay", "relu_cap", "replay"]

_CALLS = ("jit", "pjit", "closed_call", "core_call")
# jax.nn functions that use a relu6 inside a smooth-ish gate: plain gradient (see module doc).
_PLAIN_GATES = frozenset({"hard_sigmoid", "hard_silu", "hard_swish"})
_LEAKY = frozenset({"leaky_relu"})


def _masked(keep: Any, grad: Any) -> Any:
    return jnp.where(keep, jnp.maximum(grad, 0), jnp.zeros_like(grad))


def _override(cap: float, mode: str) -> Callable[[Any], Any]:
    """A ReLU (``cap`` inf) or ReLU6 with the forward of jax.nn and the ``mode`` backward."""

    @jax.custom_vjp
    def relu(x: Any) -> Any:
        y = jnp.maximum(x, 0)
        return y if cap == math.inf else jnp.minimum(y, cap)

    def fwd(x: Any) -> tuple[Any, Any]:
        y = relu(x)
        return y, y

    def bwd(y: Any, grad: Any) -> tuple[Any]:
        if mode == "deconv":
            return (jnp.maximum(grad, 0),)
        keep = y > 0 if cap == math.inf else (y > 0) & (y < cap)
        return (_masked(keep, grad),)

    relu.defvjp(fwd, bwd)
    return relu


def _subjaxprs(eqn: Any) -> list[Any]:
    """The jaxprs an equation's parameters hold (jit bodies, cond branches, loop bodies)."""
    found = []
    for value in eqn.params.values():
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, jcore.ClosedJaxpr):
                found.append(v.jaxpr)
            elif isinstance(v, jcore.Jaxpr):
                found.append(v)
    return found


def _primitives(jaxpr: Any) -> list[Any]:
    """The equations of ``jaxpr`` with nested jit calls flattened (for recognising relu)."""
    out: list[Any] = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _CALLS:
            for sub in _subjaxprs(eqn):
                out.extend(_primitives(sub))
        else:
            out.append(eqn)
    return out


def _literal(atom: Any) -> float | None:
    value = getattr(atom, "val", None)
    try:
        return float(value) if value is not None and jnp.ndim(value) == 0 else None
    except (TypeError, ValueError):
        return None


def relu_cap(eqn: Any) -> float | None:
    """The cap of the ReLU a ``custom_jvp_call`` computes (inf for ``jax.nn.relu``, 6.0 for
    ``relu6``), recognised by its body (``max(x, 0)``, then ``min(., cap)``); None otherwise."""
    if eqn.primitive.name != "custom_jvp_call":
        return None
    body = _primitives(eqn.params["call_jaxpr"].jaxpr)
    names = [e.primitive.name for e in body]
    if names[:1] != ["max"] or _literal(body[0].invars[1]) != 0.0:
        return None
    if names == ["max"]:
        return math.inf
    cap = _literal(body[1].invars[1]) if names == ["max", "min"] else None
    return cap if cap is not None and cap > 0 else None


def _has_relu(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if relu_cap(eqn) is not None:
            return True
        if eqn.primitive.name in _CALLS and eqn.params.get("name") in _PLAIN_GATES:
            continue
        if any(_has_relu(sub) for sub in _subjaxprs(eqn)):
            return True
    return False


@dataclass
class Replay:
    """Options and counts of one replay: ``mode``, the variable ``perturbed`` by ``eps``."""

    mode: str = "plain"
    perturbed: Any = None
    eps: Any = None
    overridden: int = 0
    _fns: dict[float, Callable[[Any], Any]] = field(default_factory=dict)

    def relu(self, cap: float) -> Callable[[Any], Any]:
        if cap not in self._fns:
            self._fns[cap] = _override(cap, self.mode)
        return self._fns[cap]


def replay(closed: Any, args: Sequence[Any], opts: Replay) -> list[Any]:
    """Evaluate a ClosedJaxpr on ``args`` with the overrides of ``opts`` (see module doc)."""
    return _eval(closed.jaxpr, closed.consts, args, opts, top=True)


def _eval(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], opts: Replay, top: bool) -> Any:
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def write(v: Any, value: Any) -> None:
        if top and v is opts.perturbed:
            value = value + opts.eps
        env[v] = value

    for v, value in zip(jaxpr.constvars, consts, strict=True):
        write(v, value)
    for v, value in zip(jaxpr.invars, args, strict=True):
        write(v, value)
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars], opts)
        for v, value in zip(eqn.outvars, outs, strict=True):
            write(v, value)
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn: Any, invals: list[Any], opts: Replay) -> list[Any]:
    name = eqn.primitive.name
    if opts.mode == "deeplift":
        return _apply_deeplift(eqn, invals, opts)
    if opts.mode != "plain":
        cap = relu_cap(eqn)
        if cap is not None:
            opts.overridden += 1
            return [opts.relu(cap)(invals[0])]
        call_name = eqn.params.get("name") if name in _CALLS else None
        if call_name in _LEAKY:
            refuse(opts.mode, "a leaky_relu call inside a layer is not a plain ReLU")
        if call_name not in _PLAIN_GATES and any(_has_relu(s) for s in _subjaxprs(eqn)):
            if name not in _CALLS:
                refuse(
                    opts.mode,
                    f"a ReLU runs inside a {name} (control flow such as an RNN's scan, or a "
                    "custom derivative rule)",
                )
            sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            return list(_eval(sub.jaxpr, sub.consts, invals, opts, top=False))
    return _bind(eqn, invals)


def _bind(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """The equation's own computation on ``invals``."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: Sequence[Any] = ()
    if isinstance(params, tuple):  # older JAX versions return (subfuns, params)
        subfuns, params = params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


# -- DeepLift (rescale rule) ---------------------------------------------------------------------
# ``Replay(mode="deeplift")`` answers, on the doubled batch ``[x; baseline]``, every ReLU/ReLU6
# call, jax.nn activation call (elu, softplus, gelu, silu, ... as one unit), ``logistic``
# (sigmoid) and ``tanh`` equation with the rescale multiplier
# ``grad * (f(u) - f(u0)) / (u - u0)`` (the ordinary gradient where ``|u - u0| < eps``), and
# ``reduce_window_max`` (max pooling) with Captum's max-pool rule; see backends/keras/deeplift.py.
DEEPLIFT_EPS = 1e-10
_RESCALED = frozenset({"logistic", "tanh"})
# jax.nn's elementwise activations are jitted functions of these names: rescaled as one unit
# (JAX computes ELU, softplus, GELU, ... from several primitives).
_UNITS = frozenset(
    {"elu", "celu", "selu", "softplus", "leaky_relu", "silu", "swish", "gelu", "mish"}
    | {"softsign", "log_sigmoid", "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "relu"}
    | {"relu6", "hard_tanh"}
)


def _halves(t: Any) -> tuple[Any, Any]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _twice(t: Any) -> Any:
    return jnp.concatenate([t, t], axis=0)


def _with_rule(
    f: Callable[[Any], Any], rule: Callable[[Callable[[Any], Any], Any, Any, Any], Any]
) -> Callable[[Any], Any]:
    """``f`` whose backward is ``rule(f, u, y, grad)`` (``u`` its input, ``y`` its output)."""

    @jax.custom_vjp
    def g(u: Any) -> Any:
        return f(u)

    def fwd(u: Any) -> tuple[Any, Any]:
        y = f(u)
        return y, (u, y)

    def bwd(res: Any, grad: Any) -> tuple[Any]:
        u, y = res
        return (rule(f, u, y, grad),)

    g.defvjp(fwd, bwd)
    return g


def _rescale_rule(f: Callable[[Any], Any], u: Any, y: Any, grad: Any) -> Any:
    """The rescale multiplier (the plain gradient where the input's delta is below eps)."""
    (ua, ub), (ya, yb) = _halves(u), _halves(y)
    delta_in, delta_out = _twice(ua - ub), _twice(ya - yb)
    (plain,) = jax.vjp(f, u)[1](grad)
    small = jnp.abs(delta_in) < DEEPLIFT_EPS
    return jnp.where(small, plain, grad * delta_out / jnp.where(small, 1.0, delta_in))


def _max_pool_rule(f: Callable[[Any], Any], u: Any, y: Any, grad: Any) -> Any:
    """Captum's max-pool rule (``f``'s own VJP scatters a cotangent to each window's argmax,
    sample by sample)."""
    scatter = jax.vjp(f, u)[1]
    ya, yb = _halves(y)
    top = jnp.maximum(ya, yb)
    (spread,) = scatter(grad * jnp.concatenate([top - yb, ya - top], axis=0))
    sa, sb = _halves(spread)
    ua, ub = _halves(u)
    delta_in = _twice(ua - ub)
    (plain,) = scatter(grad)
    small = jnp.abs(delta_in) < DEEPLIFT_EPS
    return jnp.where(small, plain, _twice(sa + sb) / jnp.where(small, 1.0, delta_in))


def _rescaled(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``f`` with the rescale multiplier as its backward."""
    return _with_rule(f, _rescale_rule)


def _max_pooled(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A max pooling ``f`` with Captum's rule as its backward."""
    return _with_rule(f, _max_pool_rule)


def _unit(eqn: Any) -> bool:
    """A jit call of one of jax.nn's elementwise activations: one output shaped like the
    first input, every other input a scalar (a slope, an alpha)."""
    if eqn.primitive.name not in _CALLS or eqn.params.get("name") not in _UNITS:
        return False
    first, *rest = (getattr(v, "aval", None) for v in eqn.invars)
    shapes = [getattr(a, "shape", None) for a in (first, *rest)]
    same = len(eqn.outvars) == 1 and eqn.outvars[0].aval.shape == shapes[0]
    return same and all(shape == () for shape in shapes[1:])


def _deeplift_fn(eqn: Any, invals: Sequence[Any]) -> Callable[[Any], Any] | None:
    """The DeepLift version of a nonlinearity equation; None for every other equation."""
    cap = relu_cap(eqn)
    if cap is not None:
        return _rescaled(lambda u: jnp.minimum(jnp.maximum(u, 0), cap))
    name = eqn.primitive.name
    if name not in _RESCALED and name != "reduce_window_max" and not _unit(eqn):
        return None

    def f(u: Any) -> Any:
        return _bind(eqn, [u, *invals[1:]])[0]

    return _max_pooled(f) if name == "reduce_window_max" else _rescaled(f)


def _has_deeplift_target(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if relu_cap(eqn) is not None or eqn.primitive.name in _RESCALED | {"reduce_window_max"}:
            return True
        if _unit(eqn):
            return True
        if eqn.primitive.name in _CALLS and eqn.params.get("name") in _PLAIN_GATES:
            continue
        if any(_has_deeplift_target(sub) for sub in _subjaxprs(eqn)):
            return True
    return False


def _apply_deeplift(eqn: Any, invals: list[Any], opts: Replay) -> list[Any]:
    fn = _deeplift_fn(eqn, invals)
    if fn is not None:
        opts.overridden += 1
        return [fn(invals[0])]
    name = eqn.primitive.name
    if not any(_has_deeplift_target(s) for s in _subjaxprs(eqn)):
        return _bind(eqn, invals)
    if name not in _CALLS:
        raise CapabilityError(
            f"deeplift cannot be applied exactly to this Keras model: a nonlinearity runs "
            f"inside a {name} (control flow such as an RNN's scan, or a custom derivative "
            "rule), where the rescale rule cannot reach it. Use integrated_gradients (the path "
            "integral DeepLift approximates) for this model"
        )
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    return list(_eval(sub.jaxpr, sub.consts, invals, opts, top=False))
