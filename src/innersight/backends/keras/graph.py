"""What the Keras adapter reads from a model's functional graph, without changing it.

Everything here works on the symbolic ``KerasTensor`` graph of a built Sequential or Functional
model: its inputs (one, or several for a derived adapter, see :mod:`.packing`), the output
explained (the only one, or the one the ``output=`` option names), each top-level layer's output
tensor, and where the logits live when the model ends in softmax/sigmoid. Sub-models are built
from these tensors with ``keras.Model(inputs, outputs)``, which reuses the user's layers (and
their live variables) but adds no node to them and changes no attribute.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from innersight.core.errors import CapabilityError, InputError, LayerNotFoundError, did_you_mean

__all__ = [
    "LogitsPlan",
    "ModelGraph",
    "output_names",
    "plan_logits",
    "read_graph",
    "top_layers",
    "unknown",
]

PROB_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ModelGraph:
    """The parts of a model's graph the adapter needs, read once per model structure."""

    model: Any
    input: Any  # KerasTensor: the first (for a plain adapter, the only) model input
    output: Any  # KerasTensor: the output explained
    layers: tuple[Any, ...]
    tensors: dict[str, Any] = field(default_factory=dict)  # layer name -> output KerasTensor
    shapes: dict[str, tuple[int | None, ...]] = field(default_factory=dict)  # without batch
    problems: dict[str, str] = field(default_factory=dict)  # layer name -> why it can't be tapped
    inputs: dict[str, Any] = field(default_factory=dict)  # layer name -> first positional input
    model_inputs: tuple[Any, ...] = ()  # every model input KerasTensor, in order

    def tensor(self, name: str) -> Any:
        """The output KerasTensor of top-level layer ``name`` (validated by the caller)."""
        if name in self.problems:
            model = self.model.name
            raise CapabilityError(f"layer {name!r} of Keras model {model!r} {self.problems[name]}")
        if name not in self.tensors:  # pragma: no cover - callers validate names first
            raise LayerNotFoundError(f"layer {name!r} not found in Keras model {self.model.name!r}")
        return self.tensors[name]

    def input_tensor(self, name: str) -> Any:
        """The KerasTensor top-level layer ``name`` receives as its first positional argument."""
        self.tensor(name)  # the same rules: a layer called more than once has no one input
        found = self.inputs.get(name)
        if found is None:
            raise CapabilityError(
                f"the input of layer {name!r} of Keras model {self.model.name!r} is not one "
                "tensor (e.g. the list a Concatenate or Add layer takes); tap the layers that "
                "feed it instead"
            )
        return found


def _functional(model: Any) -> Any:
    """The Functional graph behind a Sequential or Functional model, or an innersight error."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None or not model.built:
            raise InputError(
                f"Keras Sequential model {model.name!r} is not built: its input shape is unknown. "
                "Start it with keras.Input(shape), call model.build((None, *shape)), or call it "
                "once on a batch before wrapping it"
            )
        return fn
    if not hasattr(model, "_nodes_by_depth") or not hasattr(model, "inputs"):
        raise CapabilityError(
            f"subclassed Keras model {type(model).__name__} has no functional graph to tap; "
            "expected a Sequential or Functional model. Wrap it in one: "
            "inputs = keras.Input(shape); model = keras.Model(inputs, your_model(inputs))"
        )
    return model


def output_names(fn: Any) -> list[str]:
    """The names ``output=`` accepts, one per output: the layer that computes it."""
    return [str(t._keras_history[0].name) for t in fn.outputs]


def _chosen_output(fn: Any, output: int | str | None, model: Any) -> Any:
    """The output explained: the only one, or the one ``output`` names (index or name)."""
    names = output_names(fn)
    if output is None:
        if len(names) == 1:
            return fn.outputs[0]
        choices = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
        raise CapabilityError(
            f"Keras model {model.name!r} has {len(names)} outputs; expected exactly one unless "
            f"you choose: innersight.wrap(model, output={names[0]!r}) (or output=0), with one "
            f"of {choices}. A single-output view works too: keras.Model(model.inputs, "
            "model.outputs[0])"
        )
    if isinstance(output, str) and output in names:
        return fn.outputs[names.index(output)]
    if isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(names):
        return fn.outputs[output]
    choices = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
    raise InputError(
        f"output={output!r} is not an output of Keras model {model.name!r}; use an index or a "
        f"name: {choices}{did_you_mean(output, names) if isinstance(output, str) else ''}"
    )


def top_layers(model: Any) -> tuple[Any, ...]:
    """Top-level layers in execution order, the auto-generated InputLayer left out."""
    return tuple(la for la in model.layers if not isinstance(la, keras.layers.InputLayer))


def _layer_nodes(fn: Any) -> dict[int, list[Any]]:
    nodes: dict[int, list[Any]] = {}
    for depth_nodes in fn._nodes_by_depth.values():
        for node in depth_nodes:
            nodes.setdefault(id(node.operation), []).append(node)
    return nodes


def _tap_problem(found: Sequence[Any]) -> str | None:
    if len(found) != 1:
        return (
            f"is called {len(found)} times in the model, so its output is ambiguous; "
            "tap a layer that is called once"
        )
    if len(found[0].outputs) != 1:
        return f"returns {len(found[0].outputs)} tensors; only single-output layers can be tapped"
    return None


def _first_argument(node: Any) -> Any:
    """The node's first positional argument when it is one KerasTensor, else None."""
    args = getattr(getattr(node, "arguments", None), "args", ())
    first = args[0] if args else None
    return first if isinstance(first, keras.KerasTensor) else None


def read_graph(model: Any, output: int | str | None = None) -> ModelGraph:
    """Read a built Sequential/Functional model's graph; innersight errors for anything else.

    Args:
        model: the Keras model.
        output: which output to explain (index or output layer name); None: the only one.
    """
    fn = _functional(model)
    out = _chosen_output(fn, output, model)
    graph = ModelGraph(model, fn.inputs[0], out, top_layers(model), model_inputs=tuple(fn.inputs))
    nodes = _layer_nodes(fn)
    for layer in graph.layers:
        found = nodes.get(id(layer), [])
        graph.shapes[layer.name] = tuple(found[0].outputs[0].shape[1:]) if found else ()
        problem = _tap_problem(found)
        if problem is None:
            graph.tensors[layer.name] = found[0].outputs[0]
            graph.inputs[layer.name] = _first_argument(found[0])
        else:
            graph.problems[layer.name] = problem
    return graph


# -- logits="auto" ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogitsPlan:
    """Where Logit objectives read their scores.

    ``tensor`` is what the sub-model returns. With ``dense`` set, the score is that Dense layer's
    pre-activation, computed from ``tensor`` (the layer's input) and the layer's own live
    ``kernel``/``bias``: nothing is copied, so later weight updates are always seen.
    """

    tensor: Any
    dense: Any = None
    source: str = "model outputs"
    check_output: bool = False  # look for a softmax/sigmoid op hidden inside the final layer
    problem: str | None = None  # a fused softmax/sigmoid that could not be seen past


def _activation_name(fn: Any) -> str | None:
    """'softmax' / 'sigmoid' when ``fn`` is Keras' own activation of that name, else None."""
    for name in PROB_ACTIVATIONS:
        if fn is getattr(keras.activations, name):
            return name
    return None


def _output_node(out: Any) -> tuple[Any, Any]:
    op, node_index, _ = out._keras_history
    return op, op._inbound_nodes[node_index]


def _separate_activation(op: Any) -> str | None:
    """The probability activation applied by a stand-alone final layer/operation, if any."""
    if isinstance(op, keras.layers.Softmax):
        return "softmax"
    if isinstance(op, keras.layers.Activation):
        return _activation_name(op.activation)
    if not isinstance(op, keras.layers.Layer) and type(op).__name__ in ("Softmax", "Sigmoid"):
        return type(op).__name__.lower()  # keras.ops.softmax / sigmoid used functionally
    return None


def _plain_dense(op: Any) -> bool:
    return (
        isinstance(op, keras.layers.Dense)
        and type(op).call is keras.layers.Dense.call
        and getattr(op, "quantization_mode", None) is None
    )


def plan_logits(graph: ModelGraph, mode: bool | str) -> LogitsPlan:
    """Decide where Logit objectives read their scores (see ``KerasAdapter`` for the rules)."""
    if mode is False:
        return LogitsPlan(graph.output)
    op, node = _output_node(graph.output)
    act = _separate_activation(op)
    if act is not None:
        return LogitsPlan(node.input_tensors[0], source=f"input of final {act} layer {op.name!r}")
    fused = _activation_name(getattr(op, "activation", None))
    if fused is None:
        return LogitsPlan(graph.output, check_output=True)
    if _plain_dense(op):
        source = f"pre-{fused} scores of {op.name!r}"
        return LogitsPlan(node.input_tensors[0], dense=op, source=source)
    problem = f"final layer {op.name!r} ({type(op).__name__}) applies {fused} inside itself"
    if mode is True:
        unknown(problem, mode)  # refused when wrapping: the user asked for logits explicitly
    return LogitsPlan(graph.output, problem=problem)


def unknown(what: str, mode: bool | str, stacklevel: int = 4) -> None:
    """A softmax/sigmoid the adapter cannot see past: warn for "auto", refuse for True."""
    if mode is True:
        raise CapabilityError(
            f"logits=True but {what}, and innersight cannot compute its pre-activation scores; "
            "end the model with a separate keras.layers.Activation/Softmax layer, or pass "
            "logits=False (or 'auto') to use the outputs"
        )
    warnings.warn(
        f"{what}; Logit objectives use the probabilities (gradients may vanish). End the model "
        "with a separate Activation/Softmax layer, or pass logits=False to silence this",
        UserWarning,
        stacklevel=stacklevel,
    )
