"""KerasAdapter: Keras 3 models on TensorFlow, torch or JAX, seen through the ModelAdapter protocol.

Sequential and Functional models (built) are served on every Keras 3 backend: one input, or
several through :meth:`KerasAdapter.with_inputs` (:mod:`.packing`); one output, or the one the
``output=`` option chooses. Every request runs as ONE call of a cached function around a
functional sub-model of the user's model, built by the engine of the backend the model runs on:
a ``tf.function`` (:mod:`.compiled`), an eager torch pass with autograd (:mod:`.torch_engine`)
or a ``jax.jit`` of ``stateless_call`` (:mod:`.jax_engine`). The user's model, layers,
activations and weights are never changed; what is checked before anything runs (targets,
taps, ReLU forms, options) is the same on every backend.

Overhead of the TensorFlow engine, measured at batch 1 on the reference convnet (150x150x3: 4x
Conv2D(relu)+MaxPool, Dense(512, relu), Dense(2); 3.45 M parameters), 2 vCPUs, TF 2.21 / Keras
3.15 (the other engines: docs/keras-backends.md, benchmarks/bench_keras_backends.py).
Baseline: a raw ``tf.function(input_signature=[(None, 150, 150, 3)])`` around
``model(x, training=False)`` (and a ``GradientTape`` for the gradient) called with numpy, results
converted with ``.numpy()``. Calls interleaved, 300-400 rounds, median per call; the VM is
shared, so only ratios within one run mean anything:

============================  ===========  ===========  =========
call                          raw          adapter      overhead
============================  ===========  ===========  =========
forward                       5.24 ms      5.14 ms      -2 %
forward + input gradient      11.42 ms     11.49 ms     +0.6 %
  (second run, busier VM)     16.49 ms     16.37 ms     -0.7 %
guided forward + gradient     --           13.01 ms     (+13 % vs plain: the masks' extra ops)
============================  ===========  ===========  =========

On a near-empty model (GlobalAveragePooling + Dense) the fixed cost is visible: raw 0.52 / 0.86
ms, adapter 0.38 / 0.74 ms (forward / forward+backward). The adapter is not slower than the raw
``tf.function`` because it calls the traced *concrete* function directly (see
:class:`.compiled.Traced`): that saves ``tf.function``'s per-call argument binding (~0.25 ms
with three arguments), which pays for input validation (~0.05 ms: a float32 copy and a NaN
check) and index checks.
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import keras
import numpy as np

from innersight.backends.keras import native, packing
from innersight.backends.keras.deeplift import DeepLiftMixin
from innersight.backends.keras.errors import model_call
from innersight.backends.keras.graph import (
    LogitsPlan,
    ModelGraph,
    plan_logits,
    read_graph,
    unknown,
)
from innersight.backends.keras.lrp import LrpMixin
from innersight.backends.keras.override import LayerOverrideMixin
from innersight.backends.keras.requests import FunctionCache, GradRequest, shape_probe
from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
    is_input_tap,
)
from innersight.core.errors import CapabilityError, InputError, ObjectiveError, did_you_mean
from innersight.core.inputspec import InputSpec
from innersight.core.objectives import (
    Channel,
    Custom,
    Logit,
    Neuron,
    Objective,
    channel_indices,
    check_custom_values,
    neuron_flat_index,
    per_sample,
)

__all__ = ["BACKENDS", "OPTIONS", "KerasAdapter", "engine_for"]

OPTIONS = ("logits", "output")
_LOGITS_VALUES = ("auto", True, False)
#: Keras backend -> the engine module that builds and runs its functions.
BACKENDS = {
    "tensorflow": "innersight.backends.keras.compiled",
    "torch": "innersight.backends.keras.torch_engine",
    "jax": "innersight.backends.keras.jax_engine",
}


def engine_for(backend: str) -> ModuleType:
    """The engine module for a Keras backend name (imported on first use)."""
    return importlib.import_module(BACKENDS[backend])


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Reject options the Keras backend does not take, listing the valid ones."""
    for key in options:
        if key not in OPTIONS:
            raise InputError(
                f"unknown option {key!r} for a Keras model; valid options: {', '.join(OPTIONS)}"
                f"{did_you_mean(key, OPTIONS)}"
            )
    return options


class KerasAdapter(LayerOverrideMixin, DeepLiftMixin, LrpMixin, BaseAdapter):
    """ModelAdapter for a built Keras 3 Sequential/Functional model (TensorFlow, torch, JAX).

    Args:
        model: the Keras model; it is never modified.
        logits: where ``Logit`` objectives read their scores. ``"auto"`` (default): when the model
            ends in a separate softmax/sigmoid layer (``Activation``, ``Softmax``, or
            ``keras.ops.softmax``/``sigmoid``), its input; when it ends in a ``Dense`` with a
            fused softmax/sigmoid, the Dense pre-activation computed from the layer's own live
            kernel and bias; otherwise the outputs (with a warning when a softmax/sigmoid is
            fused into some other layer). ``True``: as "auto", but a softmax/sigmoid it cannot see
            past raises CapabilityError. ``False``: always the outputs (probabilities).
            ``forward`` and ``predict_classes`` always use the outputs.
        output: which output of a multi-output model to explain: its index or its name (the
            layer that computes it, ``model.output_names``). None (default): the model's only
            output; a model with several is refused with the choices.

    Several inputs, extra arguments and token ids: :meth:`with_inputs` derives an adapter for
    an :class:`~innersight.core.inputspec.InputSpec` (the plain adapter of a model with several
    inputs has ``input_shape`` None and refuses ``forward``, naming that method). A model on an
    integer input takes integer ids as they are (checked against its Embedding's vocabulary);
    input gradients are refused there, naming the Embedding layer to attribute to.
    ``from_native``/``to_native`` convert TensorFlow, torch and JAX tensors (:mod:`.native`).

    ``last_relu_report``: after a ``value_and_grad``/``layer_value_and_grad`` call with
    ``relu="guided"`` or ``"deconv"``, ``{"overridden": n, "not_overridden": {name: n}}``: how
    many ReLU/ReLU6 ops of that pass got the override, and how many other nonlinear activations
    (by Keras name: ``silu``, ``gelu``, ``hard_silu``, ``sigmoid``, ...) kept their plain
    gradient (see :mod:`.activations`); None after a ``relu="plain"`` call.

    ``crop_graph`` and ``crop_session`` (the ``cropped_forward`` capability: exact incremental
    occlusion) are :mod:`.incremental`'s; on the JAX backend ``crop_graph`` declines, with the
    reason, and ``occlusion(method="auto")`` keeps the naive path there.

    Traced functions are cached on the instance, at most :data:`.requests.CACHE_SIZE` of them
    (least recently used dropped; each holds one functional sub-model of the user's model).
    ``keras_backend`` names the backend the model runs on ("tensorflow", "torch" or "jax"),
    fixed when Keras was imported (``KERAS_BACKEND``).

    Threads: one adapter may be shared by several threads (``innersight.explain`` on the same
    model shares its cached adapter). Every public method (``forward`` and so
    ``predict_classes``, ``value_and_grad``, ``layer_value_and_grad``, ``layers``,
    ``input_shape``) is serialised by a per-adapter re-entrant lock: the function cache, the
    lazily re-read graph of a Sequential that changed and the traces are not safe to build
    concurrently. Serialising whole calls is the simple, safe choice (TensorFlow parallelises
    inside each call); different adapters run in parallel.
    """

    backend = "keras"
    capabilities = frozenset(
        {
            Capability.FORWARD,
            Capability.LAYER_TAPS,
            Capability.INPUT_GRADIENTS,
            Capability.LAYER_GRADIENTS,
            Capability.RELU_OVERRIDE,
            Capability.CROPPED_FORWARD,
            Capability.SEVERAL_INPUTS,
        }
    ) | (LayerOverrideMixin.provides | DeepLiftMixin.provides | LrpMixin.provides)

    def __init__(
        self, model: Any, *, logits: bool | str = "auto", output: int | str | None = None
    ) -> None:
        if not any(logits is v or (isinstance(v, str) and logits == v) for v in _LOGITS_VALUES):
            raise InputError(f"logits={logits!r} is not valid; use 'auto', True or False")
        if output is not None and (isinstance(output, bool) or not isinstance(output, (int, str))):
            raise InputError(
                f"output={output!r} is not valid; pass an output's index (e.g. output=0) or its "
                "name (the layer that computes it, e.g. output='head')"
            )
        self.model = model
        self.logits = logits
        self.output = output
        self.keras_backend = str(keras.backend.backend())
        self._engine = engine_for(self.keras_backend)
        self._lock = threading.RLock()
        self._cache = FunctionCache()
        # InputSpec.structure() -> the function cache its derived adapters share (4 structures)
        self._families = FunctionCache(size=4)
        self._root = self
        self._spec: InputSpec | None = None
        self._extras: list[Any] = []
        self.last_relu_report: dict[str, Any] | None = None
        self._load()

    @classmethod
    def from_options(cls, model: Any, options: Mapping[str, Any]) -> KerasAdapter:
        """The adapter for ``model`` with hook ``options``; InputError for unknown ones."""
        return cls(model, **check_options(dict(options)))

    def _load(self) -> None:
        self._graph: ModelGraph = read_graph(self.model, self.output)
        self._plan: LogitsPlan = plan_logits(self._graph, self.logits)
        self._functional = getattr(self.model, "_functional", self.model)
        self._infos: tuple[LayerInfo, ...] | None = None
        self._warned = False
        self._hidden: str | None = None
        self._feed = packing.Feed((self._graph.input,))
        if self._spec is None:
            self._cache.clear()
            self._families.clear()
        else:  # a derived adapter of a Sequential that changed: its own cache from now on
            self._feed, self._extras = packing.feed_for(
                self._graph.model_inputs, self._spec, self.name
            )
            self._cache = FunctionCache()

    def _sync(self) -> ModelGraph:
        # A Sequential that gained or lost layers after wrapping has a new graph: read it again.
        if getattr(self.model, "_functional", self.model) is not self._functional:
            self._load()
        return self._graph

    # -- description ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.model.name)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """One sample's shape (channels-last); a derived adapter's packed row ``(width,)``; None
        for a plain adapter of a model with several inputs (see :meth:`with_inputs`)."""
        with self._lock:
            self._sync()
            if self._spec is None and len(self._graph.model_inputs) > 1:
                return None
            return self._feed.x_shape

    @property
    def logits_source(self) -> str:
        """Where Logit objectives read their scores, e.g. "pre-softmax scores of 'fc'"."""
        return self._plan.source

    def layers(self) -> Sequence[LayerInfo]:
        with self._lock:
            graph = self._sync()
            if self._infos is None:
                self._infos = tuple(
                    LayerInfo(
                        la.name, type(la).__name__, graph.shapes[la.name], int(la.count_params())
                    )
                    for la in graph.layers
                )
            return self._infos

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """Outputs and tapped activations (float32, channels-last) from ONE traced forward.

        Besides layer names, ``taps`` may hold :data:`~innersight.core.LOGITS` (the scores
        ``Logit`` objectives read, see ``logits``) and :func:`~innersight.core.input_tap` names
        (what a layer receives as its first positional argument in the functional graph).
        """
        with self._lock:
            graph = self._sync()
            self._check_single()
            x = self._engine_input(x)
            names = self.check_taps(taps)
            key = ("forward", tuple(sorted(names)))
            order = key[1]
            tensors = [self._tap_tensor(n) for n in order] + [graph.output]
            dense: dict[int, Any] = {}
            if LOGITS in order:
                self._check_logits()
                if self._plan.dense is not None:
                    dense[order.index(LOGITS)] = self._plan.dense
            with self._model_call():
                fn = self._cache.get(
                    key, lambda: self._engine.make_forward(self._feed, tensors, dense)
                )
                outs = fn(x, *self._extras)
        numpy = self._engine.to_numpy
        acts = {n: numpy(outs[order.index(n)]) for n in names}
        return ForwardResult(outputs=numpy(outs[-1]), activations=acts)

    def _model_call(self) -> Any:
        return model_call(self.name, self.keras_backend)

    def check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        """Layer names, LOGITS and input taps, validated, unique, in request order."""
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(dict.fromkeys(taps))
        for name in taps:
            if name != LOGITS:
                self.layer_info(is_input_tap(name) or name)
        return taps

    def _tap_tensor(self, name: str) -> Any:
        if name == LOGITS:
            return self._plan.tensor  # the Dense pre-activation is applied in the trace
        layer = is_input_tap(name)
        return self._graph.tensor(name) if layer is None else self._graph.input_tensor(layer)

    # -- cropped forwards (exact incremental occlusion, see :mod:`.incremental`) -------------
    def crop_graph(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The layers that can be recomputed on a crop, for channels-last ``input_shape``."""
        from innersight.backends.keras import incremental

        return incremental.crop_graph(self, input_shape)

    def crop_session(self, x: np.ndarray, sizes: Any, *, tap: str | None = None) -> Any:
        """Cache the activations of ``x``; return the cropped run (:mod:`.incremental`)."""
        from innersight.backends.keras import incremental

        return incremental.crop_session(self, x, sizes, tap)

    # -- gradients -----------------------------------------------------------------------------
    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample values ``(N,)`` and d(sum of values)/d(x), shaped like ``x`` (float32).

        Channel/Neuron objectives run the network only up to the objective's layer.
        """
        with self._lock:
            x, idx, crop, req, key = self._request(x, objective, relu, wrt=None)
            self._check_float_input()
            values, grads = self._run_grad(req, key, x, idx, crop)
        values = self._engine.to_numpy(values)
        if isinstance(objective, Custom):
            check_custom_values(objective, values, len(x))
        return values, self._engine.to_numpy(grads)

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values ``(N,)``, the activations of ``layer`` and d(sum of values)/d(activations).

        The gradient is taken w.r.t. the very tensor the rest of the network consumes (Grad-CAM).
        It is zero where the objective does not depend on ``layer``.
        """
        with self._lock:
            self.layer_info(layer)
            wrt = self._sync().tensor(layer)
            x, idx, crop, req, key = self._request(x, objective, relu, wrt=wrt)
            values, acts, grads = self._run_grad(req, (*key, layer), x, idx, crop)
        numpy = self._engine.to_numpy
        if isinstance(objective, Custom):
            check_custom_values(objective, numpy(values), len(x))
        return numpy(values), numpy(acts), numpy(grads)

    def _run_grad(self, req: GradRequest, key: tuple[Any, ...], *args: Any) -> Any:
        """One call of the request's cached gradient function (built on a miss).

        Engines that trace lazily (JAX) or run eagerly (torch) learn about a softmax hidden in
        the last layer and about the ReLUs they overrode only while running, so both are read
        after the call; ``last_relu_report`` stays None when the call fails.
        """
        make = self._engine.make_grad
        self.last_relu_report = None
        with self._model_call():
            fn = self._cache.get(key, lambda: make(self._feed, req, self.name))
            if req.kind in ("logit", "custom"):
                self._check_logits()
            out = fn(*args, *self._extras)
        if req.kind in ("logit", "custom"):
            self._check_logits()
        self.last_relu_report = fn.relu_report
        return out

    def _request(self, x: Any, objective: Any, relu: str, wrt: Any) -> tuple[Any, ...]:
        """Validated ``(x, per-sample indices, crop, GradRequest, cache key)``."""
        self._sync()
        self._check_single()
        self.check_relu(relu)
        x = self._engine_input(x)
        if isinstance(objective, Logit):
            return (x, *self._logit_request(x, objective, relu, wrt))
        if isinstance(objective, (Channel, Neuron)):
            return (x, *self._layer_request(x, objective, relu, wrt))
        if isinstance(objective, Custom):
            return (x, *self._custom_request(x, objective, relu, wrt))
        raise ObjectiveError(
            f"unknown objective {objective!r}; expected innersight.objectives.Logit, Channel, "
            "Neuron or Custom"
        )

    def _custom_request(
        self, x: np.ndarray, objective: Custom, relu: str, wrt: Any
    ) -> tuple[Any, ...]:
        """A score of the user's own on the Logit tensor (the cached function holds ``fn``, so
        its ``id`` in the key cannot be reused while the entry lives)."""
        plan = self._plan
        report = self._hidden_probabilities if plan.check_output else None
        req = GradRequest("custom", plan.tensor, plan.dense, wrt, relu, report, objective.fn)
        idx = np.zeros(x.shape[0], dtype=np.int64)
        return idx, np.int32(0), req, ("grad", "custom", id(objective.fn), relu)

    def _logit_request(
        self, x: np.ndarray, objective: Logit, relu: str, wrt: Any
    ) -> tuple[Any, ...]:
        plan = self._plan
        idx = per_sample(objective.index, x.shape[0], what="target")
        self._check_targets(idx, x)
        report = self._hidden_probabilities if plan.check_output else None
        req = GradRequest("logit", plan.tensor, plan.dense, wrt, relu, report)
        return idx, np.int32(0), req, ("grad", "logit", None, relu)

    def _layer_request(
        self, x: np.ndarray, objective: Channel | Neuron, relu: str, wrt: Any
    ) -> tuple[Any, ...]:
        self.layer_info(objective.layer)
        target = self._graph.tensor(objective.layer)
        shape = self._shape_of(target, x)
        crop = np.int32(0)
        if isinstance(objective, Channel):
            idx = channel_indices(objective, (x.shape[0], *shape))
            crop = np.int32(objective.crop if len(shape) == 3 else 0)
        else:
            idx = neuron_flat_index(objective, shape, x.shape[0])
        kind = type(objective).__name__.lower()
        req = GradRequest(kind, target, None, wrt, relu)
        return idx, crop, req, ("grad", kind, objective.layer, relu)

    def _check_targets(self, idx: np.ndarray, x: np.ndarray) -> None:
        """Targets within the score count, checked before anything is traced or run: a
        Dense(softmax) head scores ``units`` classes, whatever the size of its input."""
        plan = self._plan
        count = int(plan.dense.units) if plan.dense is not None else None
        if count is None:
            count = _size(self._shape_of(plan.tensor, x))
        bad = idx[(idx < 0) | (idx >= count)]
        if bad.size:
            raise ObjectiveError(
                f"target {int(bad[0])} is out of range: valid values are 0..{count - 1} "
                f"(Keras model {self.name!r} has {count} outputs)"
            )

    def _check_float_input(self) -> None:
        """Input gradients need a float input: refused, with the layer to use instead, when
        every explained input is integer (token ids, uint8 pixels)."""
        explained = self._graph.model_inputs[: self._spec.count if self._spec else 1]
        if not all(packing.is_integer(t.dtype) for t in explained):
            return
        dtypes = ", ".join(sorted({str(t.dtype) for t in explained}))
        layers = self._graph.layers
        embeddings = [la.name for la in layers if isinstance(la, keras.layers.Embedding)]
        ids = {id(t) for t in explained}
        first = [la.name for la in layers if id(self._graph.inputs.get(la.name)) in ids]
        layer = (embeddings or first or [layers[0].name])[0]
        if embeddings:
            what, where, fix = " (token ids)", f"its Embedding layer {layer!r}", ""
        else:
            what, where = "", f"layer {layer!r}"
            fix = ", or build the model on a float input: keras.Input(shape, dtype='float32')"
        raise CapabilityError(
            f"Keras model {self.name!r} takes {dtypes} inputs{what}, and gradients w.r.t. "
            f"integer inputs do not exist (they would all be zero). Attribute to the output of "
            f"{where} instead: innersight.explain('layer_gradient_x_activation', model, x, "
            f"layer={layer!r}) or 'layer_integrated_gradients' with layer={layer!r}{fix}"
        )

    # -- several inputs, extra arguments, token ids, tensors (see innersight.core.inputspec) --
    def with_inputs(self, spec: InputSpec) -> KerasAdapter:
        """An adapter for the same model that takes the batch ``spec`` describes.

        Packed: ``(N, spec.width)`` float32 rows, split into the model's inputs inside each
        traced function (gradients come back packed). ``packed=False``: one input in its own
        shape and dtype (integer ids for an Embedding model). ``spec.extra_args`` are the
        model's trailing inputs that are not explained (a Keras model has no other forward
        arguments: give a subclassed model's ``call`` keyword arguments a ``keras.Input`` each in
        a functional wrapper); they are traced function arguments, so adapters that differ only
        in the extras' values share traced functions. The user's model is not changed.
        """
        if not isinstance(spec, InputSpec):
            raise InputError(
                f"with_inputs takes an innersight InputSpec, got {type(spec).__name__}"
            )
        root = self._root
        with root._lock:
            graph = root._sync()
            feed, extras = packing.feed_for(graph.model_inputs, spec, root.name)
            derived = copy.copy(root)
            derived._spec, derived._feed, derived._extras = spec, feed, extras
            derived._cache = root._families.get(spec.structure(), FunctionCache)
            derived.last_relu_report = None
            if spec.packed or extras:  # cropped forwards run the plain one-input function
                derived.capabilities = root.capabilities - {Capability.CROPPED_FORWARD}
        return derived

    def _check_single(self) -> None:
        if self._spec is None and len(self._graph.model_inputs) > 1:
            names = [str(t._keras_history[0].name) for t in self._graph.model_inputs]
            raise CapabilityError(
                f"Keras model {self.name!r} has {len(names)} inputs ({', '.join(names)}); pass "
                "them as a tuple, e.g. innersight.explain('saliency', model, (a, b)), or derive "
                "an adapter that takes them packed: adapter.with_inputs(InputSpec(...))"
            )

    def _engine_input(self, x: Any) -> np.ndarray:
        """The validated batch for a traced function: not copied where the engine copies it
        anyway (TensorFlow; 5-15 us a call on a 150x150 image), so the model never sees the
        caller's memory either way."""
        return self.check_input(x, copy=not getattr(self._engine, "COPIES_INPUT", False))

    def check_input(self, x: Any, *, copy: bool = True) -> np.ndarray:
        """The validated batch: float32 (see :func:`~innersight.core.check_input_array`), or
        integer ids when the adapter takes them (the model's Embedding bounds checked)."""
        kind = getattr(getattr(x, "dtype", None), "kind", "")
        if self._feed.tokens or (packing.is_integer(self._graph.input.dtype) and kind in "iu"):
            shape = self._feed.x_shape
            ids = packing.check_tokens(x, shape, self._feed.x_dtype, self._vocab(0))
            return np.asarray(ids)
        x = super().check_input(x, copy=copy)
        if self._feed.packed:
            self._check_packed_ids(x)
        return x

    def _check_packed_ids(self, x: np.ndarray) -> None:
        """The integer inputs of a packed row: whole numbers, within their Embedding's ids."""
        parts = self._spec.split(x) if self._spec is not None else []
        for i, (part, inp) in enumerate(zip(parts, self._graph.model_inputs, strict=False)):
            if packing.is_integer(inp.dtype):
                packing.check_tokens(part, part.shape[1:], str(inp.dtype), self._vocab(i))

    def _vocab(self, i: int) -> int | None:
        """The ``input_dim`` of the Embedding that reads model input ``i`` directly."""
        inp = self._graph.model_inputs[i]
        for layer in self._graph.layers:
            if (
                isinstance(layer, keras.layers.Embedding)
                and self._graph.inputs.get(layer.name) is inp
            ):
                return int(layer.input_dim)
        return None

    def from_native(self, x: Any) -> np.ndarray | None:
        """A numpy copy of a TensorFlow/torch/JAX tensor (channels-last already), else None."""
        return native.from_native(x)

    def to_native(self, values: np.ndarray, like: Any) -> Any:
        """``values`` as a tensor of ``like``'s framework (``tf.convert_to_tensor`` for TF)."""
        return native.to_native(values, like)

    def _check_logits(self) -> None:
        # A softmax/sigmoid the adapter cannot see past: warn once per adapter (logits="auto"),
        # raise on every call (logits=True). stacklevel 5 points at the caller of the adapter.
        problem = self._plan.problem or self._hidden
        if problem is not None and (self.logits is True or not self._warned):
            self._warned = True
            unknown(problem, self.logits, stacklevel=5)

    def _hidden_probabilities(self, op_type: str) -> None:
        # Called while tracing; reported by _check_logits once the trace is done.
        self._hidden = f"the model's output is computed by a {op_type} op inside a layer"

    def _shape_of(self, tensor: Any, x: np.ndarray) -> tuple[int, ...]:
        """A graph tensor's per-sample shape for input ``x`` (static when the model fixes it)."""
        shape = tuple(tensor.shape[1:])
        if None not in shape:
            return tuple(int(d) for d in shape)
        key = ("shape", id(tensor))
        inputs = packing.graph_inputs(self._feed)
        with self._model_call():
            probe = self._cache.get(key, lambda: shape_probe(inputs, tensor))
            shape = probe(packing.probe_shapes(self._feed, x))
        return tuple(int(d) for d in shape[1:])


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))
