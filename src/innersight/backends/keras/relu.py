"""Guided and deconvnet ReLU gradients without touching the user's model.

How it works: in Keras 3 on TensorFlow every plain ReLU (``Conv2D(activation="relu")``,
``Dense(activation="relu")``, ``keras.layers.ReLU()``, ``Activation("relu")``, ``keras.ops.relu``)
ends in a ``tf.nn.relu`` op of type ``Relu`` (``Relu6`` for ``max_value=6``). Inside the adapter's
``tf.function`` the forward pass runs under ``graph.gradient_override_map``, which tags every
``Relu``/``Relu6`` op created there with a gradient function registered here once; the gradient
is then taken with ``tf.gradients``, which honours the tag (``tf.GradientTape`` would not). The
user's layers, activations and weights are never changed, not even temporarily: only the ops of
the adapter's own traced graph carry the tag.

* guided:  ``grad * (y > 0) * (grad > 0)`` (``relu6``: also ``y < 6``), Springenberg et al.
* deconv:  ``relu(grad)``, the backward ReLU of Zeiler & Fergus' deconvnet.

What cannot be covered is refused with a CapabilityError, never returned as plain gradients:
leaky/parametric/thresholded ReLUs (layers, ``keras.activations.relu`` with ``negative_slope`` or
``threshold``, ``LeakyRelu`` ops), and ReLUs inside nested TensorFlow functions or control flow,
which the override map does not reach (e.g. ``SimpleRNN(activation="relu")``). After each trace
the forward ops are checked: every ``Relu`` op must carry the override. A ReLU written by hand as
``maximum(x, 0)`` in a Lambda layer cannot be told apart from other maxima and gets plain
gradients; other activations (GELU, ELU, tanh, ...) keep their ordinary gradients, as in the
papers. That includes ``hard_sigmoid`` and ``hard_silu``/hard-swish, which TensorFlow computes
as ``relu6(x + 3) / 6``: their inner ``Relu6`` op is recognised by that pattern and keeps its
plain gradient (it is part of a smooth-ish gate, not a ReLU of the network).

The DeepLift rescale rule (:func:`deeplift_override`, used by :mod:`.deeplift`) rides on the same
mechanism: its gradient functions split each tagged op's doubled batch ``[x; baseline]`` into
halves and return ``grad * (y - y0) / (x - x0)`` (the op's own gradient where ``|x - x0|`` is
below eps), and Captum's max-pool rule for ``MaxPool`` ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow as tf

from innersight.backends.keras.relu_forms import check_model_relus, refuse
from innersight.core.errors import CapabilityError

__all__ = ["check_forward_ops", "check_model_relus", "deeplift_override", "relu_override"]

_OVERRIDES = {
    "guided": {"Relu": "InnersightGuidedRelu", "Relu6": "InnersightGuidedRelu6"},
    "deconv": {"Relu": "InnersightDeconvRelu", "Relu6": "InnersightDeconvRelu"},
}
_RELU_OPS = ("Relu", "Relu6")
_CALL_OPS = frozenset(
    {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf"}
    | {"Case", "StatelessCase"}
)


def _guided(op: Any, grad: Any) -> Any:
    return tf.where(op.outputs[0] > 0, tf.nn.relu(grad), tf.zeros_like(grad))


def _guided6(op: Any, grad: Any) -> Any:
    y = op.outputs[0]
    return tf.where((y > 0) & (y < 6), tf.nn.relu(grad), tf.zeros_like(grad))


def _deconv(op: Any, grad: Any) -> Any:
    return tf.nn.relu(grad)


def _register() -> None:
    for name, fn in (
        ("InnersightGuidedRelu", _guided),
        ("InnersightGuidedRelu6", _guided6),
        ("InnersightDeconvRelu", _deconv),
    ):
        # Already registered when the module is re-imported: TF's registry is process-wide.
        with contextlib.suppress(KeyError):
            tf.RegisterGradient(name)(fn)


_register()


@contextlib.contextmanager
def relu_override(mode: str, counts: dict[str, int] | None = None) -> Iterator[None]:
    """Inside a tf.function trace: tag the ReLU ops created in the block for ``mode``.

    On leaving the block the ops it created are checked (see :func:`check_forward_ops`), so a
    ReLU the override did not reach raises instead of silently giving plain gradients. With
    ``counts`` given, ``counts["overridden"]`` is set to the number of ReLU/ReLU6 ops tagged.
    """
    if mode == "plain":
        yield
        return
    graph = tf.compat.v1.get_default_graph()
    start = len(graph.get_operations())
    with graph.gradient_override_map(_OVERRIDES[mode]):
        yield
    relus = []
    for op in graph.get_operations()[start:]:
        if _in_hard_sigmoid(op):
            op._clear_attr("_gradient_op_type")  # back to TensorFlow's own Relu6 gradient
        else:
            relus.append(op)
    check_forward_ops(graph, relus, mode)
    if counts is not None:
        counts["overridden"] = sum(op.type in _RELU_OPS for op in relus)


def _constant(t: Any) -> float | None:
    value = tf.get_static_value(t)
    return float(value) if value is not None and getattr(value, "size", 1) == 1 else None


def _in_hard_sigmoid(op: Any) -> bool:
    """True for the ``Relu6`` of ``relu6(x + 3) / 6`` (Keras' hard_sigmoid and hard_silu)."""
    if op.type != "Relu6":
        return False
    add = op.inputs[0].op
    if add.type not in ("AddV2", "Add") or 3.0 not in [_constant(t) for t in add.inputs]:
        return False
    users = op.outputs[0].consumers()
    return len(users) == 1 and (
        (users[0].type in ("RealDiv", "Div") and _constant(users[0].inputs[1]) == 6.0)
        or (users[0].type == "Mul" and 1 / 6 in [_constant(t) for t in users[0].inputs])
    )


def check_forward_ops(graph: Any, ops: Sequence[Any], mode: str) -> None:
    """Every ReLU op of a traced forward must carry the override; none may hide in a function."""
    expected = _OVERRIDES[mode]
    if any(op.type in _CALL_OPS for op in ops) and _nested_relu(graph):
        refuse(mode, "a ReLU runs inside a nested function or control flow (e.g. an RNN)")
    for op in ops:
        if op.type in _RELU_OPS:
            try:
                tag = op.get_attr("_gradient_op_type").decode()
            except ValueError:
                tag = ""
            if tag != expected[op.type]:
                refuse(mode, f"op {op.name!r} was created outside the override")
        elif op.type == "LeakyRelu":
            refuse(mode, f"op {op.name!r} is a leaky ReLU")


def _nested_relu(graph: Any) -> bool:
    library = graph.as_graph_def().library
    return any(node.op in _RELU_OPS for f in library.function for node in f.node_def)


# -- DeepLift (rescale rule) --------------------------------------------------------------------
# Each covered op's ordinary gradient, from TensorFlow's own gradient kernels.
_PLAIN_GRADS: dict[str, Callable[[Any, Any], Any]] = {
    "Relu": lambda op, g: tf.raw_ops.ReluGrad(gradients=g, features=op.inputs[0]),
    "Relu6": lambda op, g: tf.raw_ops.Relu6Grad(gradients=g, features=op.inputs[0]),
    "Elu": lambda op, g: tf.raw_ops.EluGrad(gradients=g, outputs=op.outputs[0]),
    "Selu": lambda op, g: tf.raw_ops.SeluGrad(gradients=g, outputs=op.outputs[0]),
    "Softplus": lambda op, g: tf.raw_ops.SoftplusGrad(gradients=g, features=op.inputs[0]),
    "Sigmoid": lambda op, g: tf.raw_ops.SigmoidGrad(y=op.outputs[0], dy=g),
    "Tanh": lambda op, g: tf.raw_ops.TanhGrad(y=op.outputs[0], dy=g),
    "LeakyRelu": lambda op, g: tf.raw_ops.LeakyReluGrad(
        gradients=g, features=op.inputs[0], alpha=op.get_attr("alpha")
    ),
}
_DEEPLIFT = {name: f"InnersightDeepLift{name}" for name in (*_PLAIN_GRADS, "MaxPool")}
_DEEPLIFT_EPS = [1e-10]  # set by deeplift_override before tracing (read while differentiating)


def _halves(t: Any) -> tuple[Any, Any]:
    n = tf.shape(t)[0] // 2
    return t[:n], t[n:]


def _twice(t: Any) -> Any:
    return tf.concat([t, t], axis=0)


def _rescale(op: Any, grad: Any) -> Any:
    """The rescale multiplier of an elementwise op over the doubled batch (see deeplift.py)."""
    ua, ub = _halves(op.inputs[0])
    ya, yb = _halves(op.outputs[0])
    delta_in, delta_out = _twice(ua - ub), _twice(ya - yb)
    plain = _PLAIN_GRADS[op.type](op, grad)
    return tf.where(tf.abs(delta_in) < _DEEPLIFT_EPS[0], plain, grad * delta_out / delta_in)


def _rescale_max_pool(op: Any, grad: Any) -> Any:
    """Captum's max-pool rule; TensorFlow's MaxPoolGrad scatters to each sample's argmax."""
    u, y = op.inputs[0], op.outputs[0]
    attrs = {k: op.get_attr(k) for k in ("ksize", "strides", "padding", "data_format")}
    if attrs["padding"] == b"EXPLICIT":
        attrs["explicit_paddings"] = op.get_attr("explicit_paddings")

    def scatter(g: Any) -> Any:
        return tf.raw_ops.MaxPoolGrad(orig_input=u, orig_output=y, grad=g, **attrs)

    ua, ub = _halves(u)
    ya, yb = _halves(y)
    top = tf.maximum(ya, yb)
    spread_a, spread_b = _halves(scatter(grad * tf.concat([top - yb, ya - top], axis=0)))
    delta_in = _twice(ua - ub)
    rescaled = _twice(spread_a + spread_b) / delta_in
    return tf.where(tf.abs(delta_in) < _DEEPLIFT_EPS[0], scatter(grad), rescaled)


def _register_deeplift() -> None:
    for op_type, name in _DEEPLIFT.items():
        with contextlib.suppress(KeyError):  # registered already (the registry is global)
            tf.RegisterGradient(name)(_rescale_max_pool if op_type == "MaxPool" else _rescale)


_register_deeplift()


@contextlib.contextmanager
def deeplift_override(eps: float, counts: dict[str, int] | None = None) -> Iterator[None]:
    """Inside a tf.function trace: the nonlinearity ops created in the block backpropagate
    DeepLift multipliers over the doubled batch ``[x; baseline]``.

    On leaving the block every covered op must carry the override (CapabilityError otherwise,
    e.g. for one inside an RNN's loop); the ``Relu6`` of hard_sigmoid/hard_silu keeps its
    ordinary gradient. ``counts["rescaled"]`` / ``counts["max_pools"]`` get the numbers tagged.
    """
    _DEEPLIFT_EPS[0] = eps
    graph = tf.compat.v1.get_default_graph()
    start = len(graph.get_operations())
    with graph.gradient_override_map(_DEEPLIFT):
        yield
    ops = graph.get_operations()[start:]
    for op in ops:
        if _in_hard_sigmoid(op):
            op._clear_attr("_gradient_op_type")
    covered = [op for op in ops if op.type in _DEEPLIFT and not _in_hard_sigmoid(op)]
    if any(op.type in _CALL_OPS for op in ops) and _nested(graph, _DEEPLIFT):
        _refuse_deeplift("a nonlinearity runs inside a nested function or control flow (an RNN)")
    for op in covered:
        if _tag(op) != _DEEPLIFT[op.type]:
            _refuse_deeplift(f"op {op.name!r} was created outside the override")
    if counts is not None:
        counts["max_pools"] = sum(op.type == "MaxPool" for op in covered)
        counts["rescaled"] = len(covered) - counts["max_pools"]


def _tag(op: Any) -> str:
    try:
        return str(op.get_attr("_gradient_op_type").decode())
    except ValueError:
        return ""


def _nested(graph: Any, types: Any) -> bool:
    library = graph.as_graph_def().library
    return any(node.op in types for f in library.function for node in f.node_def)


def _refuse_deeplift(what: str) -> None:
    raise CapabilityError(
        f"deeplift cannot be applied exactly to this Keras model: {what}, where the rescale "
        "rule cannot reach it. Use integrated_gradients (the path integral DeepLift "
        "approximates) for this model"
    )
