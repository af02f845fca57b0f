"""The public entry points: wrap, explain, evaluate, techniques, metrics, layers."""

from __future__ import annotations

import contextlib
import functools
import platform
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import numpy as np

from innersight.core import validate
from innersight.core.adapter import (
    Capability,
    ModelAdapter,
    _as_array,
    check_input_array,
    is_dataset,
    missing_capabilities,
    require_capabilities,
    shaped_layers,
)
from innersight.core.errors import (
    CapabilityError,
    InnersightError,
    InputError,
    PluginError,
    TechniqueNotFoundError,
    did_you_mean,
)
from innersight.core.inputs import (
    concat_values,
    extra_arguments,
    has_batch_axis,
    input_kind,
    is_native_tensor,
    merge_meta,
    pack_parameters,
    unpack_values,
)
from innersight.core.inputspec import InputSpec, SeveralInputsAdapter
from innersight.core.manager import PluginInfo, get_plugin_manager
from innersight.core.metric import Evaluation, Metric
from innersight.core.technique import COMMON_PARAMETERS, INPUT_KINDS, Explanation, Technique

__all__ = ["clear_cache", "evaluate", "explain", "layers", "metrics", "techniques", "wrap"]


def wrap(model: Any, **options: Any) -> ModelAdapter:
    """Wrap a native model (torch ``nn.Module``, Keras 3 model, ...) in a ModelAdapter.

    An adapter passes through unchanged (options must then be empty). The adapters of the last
    four models are cached (keyed by the model's identity and the options), so calling
    ``explain`` in a loop reuses traced functions; :func:`clear_cache` releases them.

    Args:
        model: the model to look inside.
        **options: backend options, e.g. ``input_layout="NHWC"`` (torch), ``logits="auto"``.

    Raises:
        BackendNotFoundError: no installed backend accepts the model.
    """
    cached = _ADAPTERS.lookup(model, options)  # before the (slow) protocol check
    if cached is not None:
        return cached
    if isinstance(model, ModelAdapter):
        if options:
            raise InputError(
                f"{type(model).__name__} is already wrapped; options {sorted(options)} apply only "
                "when wrapping a native model: pass the model itself"
            )
        return model
    return _ADAPTERS.get(model, options)


class _AdapterCache:
    """The adapters of the last few models, so repeated calls reuse their traced functions.

    Wrapping is cheap, but an adapter's caches (Keras: traced ``tf.function``s and sub-models,
    torch: the shape probe) are not: ``explain(name, model, x)`` in a loop would otherwise retrace
    on every call (measured: Keras saliency 27x slower than one traced forward+backward). The
    cache holds at most :attr:`size` models strongly; :func:`clear_cache` releases them.
    """

    size = 4

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, Any], tuple[Any, ModelAdapter]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(model: Any, options: Mapping[str, Any]) -> tuple[int, Any] | None:
        try:
            key: tuple[int, Any] = (id(model), tuple(sorted(options.items())))
            hash(key)
        except TypeError:  # unhashable option values: not cached
            return None
        return key

    def lookup(self, model: Any, options: Mapping[str, Any]) -> ModelAdapter | None:
        """The cached adapter of ``model`` with ``options``, or None (only native models are
        ever cached, so a hit needs no adapter check)."""
        key = self._key(model, options)
        if key is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is model:
                self._entries.move_to_end(key)
                return entry[1]
        return None

    def get(self, model: Any, options: Mapping[str, Any]) -> ModelAdapter:
        key = self._key(model, options)
        if key is None:  # unhashable option values: wrap afresh
            return get_plugin_manager().wrap(model, options)
        cached = self.lookup(model, options)
        if cached is not None:
            return cached
        adapter = get_plugin_manager().wrap(model, options)
        with self._lock:
            self._entries[key] = (model, adapter)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return adapter

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_ADAPTERS = _AdapterCache()


def clear_cache() -> None:
    """Forget the cached adapters (and with them the models they hold) and batch-size choices."""
    from innersight.core.batching import BatchPlanner

    _ADAPTERS.clear()
    BatchPlanner.clear_cache()


def techniques() -> Mapping[str, Technique]:
    """Every registered technique (built-in and plugins) by name."""
    return get_plugin_manager().techniques()


def layers(model: Any, **options: Any) -> list[Any]:
    """The model's tappable layers as LayerInfo (name, kind, output_shape, num_params)."""
    return list(wrap(model, **options).layers())


def get_technique(name: str) -> Technique:
    """The technique called ``name``; TechniqueNotFoundError with suggestions otherwise."""
    if not isinstance(name, str):
        raise InputError(f"technique must be a name (str), got {type(name).__name__}")
    registry = techniques()
    if name not in registry:
        raise TechniqueNotFoundError(
            f"no technique named {name!r}; available: {', '.join(sorted(registry))}"
            f"{did_you_mean(name, registry)}"
        )
    return registry[name]


_PARAMETERS: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _parameter_names(technique: Technique) -> tuple[str, ...]:
    """``technique.parameters()`` names, remembered per ``explain`` function where they come
    from its signature alone (reading a signature took a tenth of a small model's saliency
    call); a technique that overrides ``parameters`` is asked every time."""
    plain = type(technique).parameters is Technique.parameters
    explain = getattr(technique.explain, "__func__", None) if plain else None
    try:
        names = _PARAMETERS.get(explain) if explain is not None else None
    except TypeError:
        names = None
    if names is None:
        names = tuple(technique.parameters())
        if explain is not None:
            _PARAMETERS[explain] = names
    return names


def check_params(technique: Technique, params: Mapping[str, Any]) -> None:
    """Reject parameters that ``technique.explain`` does not take, listing the valid ones."""
    if not params:
        return
    valid = _parameter_names(technique)
    for key in params:
        if key not in valid:
            raise InputError(
                f"technique {technique.name!r} has no parameter {key!r}; valid parameters: "
                f"{', '.join(valid) or 'none'}{did_you_mean(key, valid)}"
            )


def prepare_inputs(adapter: ModelAdapter, inputs: Any) -> np.ndarray:
    """A validated float32 batch; one sample without the batch axis gets one added.

    Lists and other array-likes are converted first (a framework tensor the adapter does not
    convert with ``from_native`` is refused with a message saying how to convert it); see
    :func:`~innersight.core.check_input_array` for the dtype rule (floats only) and the shape,
    NaN/Inf and range checks.
    """
    expected = adapter.input_shape
    arr = inputs if isinstance(inputs, np.ndarray) else _as_array(inputs)
    if expected is not None and arr.ndim == len(expected):
        arr = arr[None]
    return check_input_array(arr, expected=expected)


RETURN_TYPES = ("numpy", "native")


def explain(
    technique: str,
    model: Any,
    inputs: Any = None,
    *,
    additional_forward_args: Any = None,
    return_type: str = "numpy",
    **params: Any,
) -> Explanation:
    """Run a technique on a model and return its Explanation.

    Args:
        technique: a name from :func:`techniques`, e.g. ``"saliency"``.
        model: a native model or a ModelAdapter from :func:`wrap`.
        inputs: a batch, channels last: images (N, H, W, C), sequences (N, L, C) or tabular
            rows (N, F), floating point (float16/32/64; integer arrays are refused, since only
            you know their scaling, except (N, T) token ids for the techniques that take
            ``"tokens"``), finite. One image (H, W, C) gets the batch axis added when the
            model's input shape is known. A torch or TensorFlow tensor is taken as it is (the
            adapter copies it; yours is never changed). A tuple of such batches is several
            inputs (a model ``forward(a, b)``): ``values`` is then a tuple with one map per
            input. Techniques that generate their own images (filter/class maximization) take
            none. See ``docs/inputs.md``.
        additional_forward_args: arguments passed to the model after the inputs and not
            explained (Captum's ``additional_forward_args``): one object or a tuple. Arrays and
            tensors whose first axis has N entries travel with their sample (the technique then
            runs one sample at a time; a ``seed`` becomes ``seed + n`` for sample n); the
            others are passed unchanged to every call. An api keyword, not a technique
            parameter: every technique takes it.
        return_type: ``"numpy"`` (default) or ``"native"``: the maps as tensors of the input's
            own type and device (numpy inputs give numpy either way).
        **params: the technique's keyword parameters (see ``techniques()[name].parameters()``).

    Raises:
        InnersightError: (a subclass of it) for every user mistake, with a message saying what
            to do.
        PluginError: a third-party technique crashed or returned a malformed Explanation (the
            message names the plugin and its distribution).
    """
    tech = get_technique(technique)
    check_params(tech, params)
    validate.choice("return_type", return_type, RETURN_TYPES)
    adapter = wrap(model)
    require_capabilities(f"technique {tech.name!r}", tech.requires, adapter)
    extras = extra_arguments(additional_forward_args)
    if inputs is None or (tech.accepts_datasets and is_dataset(inputs)):
        if extras:
            raise InputError("additional_forward_args go with an array of inputs; pass inputs")
        return _explain_plain(tech, adapter, _no_inputs(tech, inputs), params)
    batch = _UserInputs.read(adapter, inputs)
    if batch.kind not in tech.input_kinds and batch.kind in _KIND_ORDER and not batch.several:
        _model_error_first(adapter, batch.parts[0])
    _check_kind(tech, adapter, batch.kind)
    if batch.given_tuple and not batch.several:  # (x,): a per-input (value,) is that value
        params = {k: _only(v) if k in tech.per_input_parameters else v for k, v in params.items()}
    if batch.several or extras or batch.kind == "tokens":
        result = _explain_spec(tech, adapter, batch, extras, params)
    else:
        result = _explain_plain(tech, adapter, batch.parts[0], params)
    if batch.given_tuple:
        _as_tuple(result, batch)
    if return_type == "native":
        _to_native(adapter, result, batch)
    return result


def _only(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) and len(value) == 1 else value


def _no_inputs(tech: Technique, inputs: Any) -> Any:
    """The inputs of a run without an array: None (generating techniques) or a data set."""
    if inputs is None and tech.needs_inputs:
        raise InputError(f"technique {tech.name!r} needs inputs: pass a batch (N, H, W, C)")
    return inputs


def _explain_plain(tech: Technique, adapter: ModelAdapter, x: Any, params: Any) -> Explanation:
    """One run of ``tech`` on one batch (or none, or a data set) and the result checked."""
    if isinstance(x, np.ndarray):
        _ensure_shapes(adapter, x)  # plugins see output shapes in model.layers()
    t0 = time.perf_counter()
    result = _run(tech, adapter, x, params)
    elapsed = time.perf_counter() - t0
    _check_result(tech, result, x if isinstance(x, np.ndarray) else None)
    result.meta.setdefault("backend", adapter.backend)
    result.meta.setdefault("model", adapter.name)
    result.meta.setdefault("seconds", elapsed)
    result.meta.setdefault("versions", versions(adapter.backend))
    return result


@dataclass(frozen=True)
class _UserInputs:
    """The user's inputs as validated numpy batches (one per input) and what they came as."""

    parts: tuple[np.ndarray, ...]
    natives: tuple[Any, ...]  # per input: the user's tensor, or None for numpy/array-likes
    given_tuple: bool

    @property
    def several(self) -> bool:
        return len(self.parts) > 1

    @property
    def kind(self) -> str | None:
        return "several" if self.several else input_kind(self.parts[0])

    @classmethod
    def read(cls, adapter: ModelAdapter, inputs: Any) -> _UserInputs:
        if not isinstance(inputs, tuple):
            arr, native = _numpy_of(adapter, inputs)
            return cls((_checked(adapter, arr, one=True),), (native,), False)
        if not inputs:
            raise InputError("inputs is an empty tuple; pass one batch, or a tuple of batches")
        read = [_numpy_of(adapter, x) for x in inputs]
        parts = tuple(_checked(adapter, a, one=len(read) == 1) for a, _ in read)
        sizes = [len(p) for p in parts]
        if len(set(sizes)) > 1:
            raise InputError(
                f"the {len(parts)} inputs have {', '.join(map(str, sizes))} samples; every "
                "input needs one entry per sample (the same first axis)"
            )
        return cls(parts, tuple(n for _, n in read), True)

    def sample(self, n: int) -> _UserInputs:
        return _UserInputs(tuple(p[n : n + 1] for p in self.parts), self.natives, self.given_tuple)


def _numpy_of(adapter: ModelAdapter, x: Any) -> tuple[Any, Any]:
    """``x`` as numpy through the adapter's ``from_native`` when it is a framework tensor the
    adapter takes; otherwise ``x`` itself (validated later) and no native."""
    if not is_native_tensor(x):
        return x, None
    from_native = getattr(adapter, "from_native", None)
    arr = from_native(x) if callable(from_native) else None
    return (x, None) if arr is None else (np.asarray(arr), x)


def _checked(adapter: ModelAdapter, x: Any, *, one: bool) -> np.ndarray:
    """A validated copy: floats as float32 (the model's input shape checked for one input),
    (N, T) integers (token ids) as they are."""
    arr = x if isinstance(x, np.ndarray) else _as_array(x)
    if arr.dtype.kind in "iu" and arr.ndim == 2 and arr.size:
        return np.array(arr)
    if not one:
        return check_input_array(arr)
    return prepare_inputs(adapter, arr)


_KIND_NAMES = {
    "image": "images (N, H, W, C)",
    "sequence": "sequences (N, L, C)",
    "tabular": "tabular rows (N, F)",
    "tokens": "token ids (N, T) of an integer dtype",
    "several": "several inputs (a tuple of batches)",
}


_KIND_ORDER = {k: i for i, k in enumerate(INPUT_KINDS)}


def _model_error_first(adapter: ModelAdapter, x: np.ndarray) -> None:
    """Run the model on the inputs a technique is about to refuse: when the model itself
    rejects them (flattened images given to an image model), its InputError naming the shape
    is the advice that works, not a list of techniques that take that kind."""
    if x.dtype.kind not in "f":
        return
    try:
        adapter.forward(x[:1])
    except InnersightError:
        adapter.forward(x)  # raises again, naming the shape the user passed


def _check_kind(tech: Technique, adapter: ModelAdapter, kind: str | None) -> None:
    """CapabilityError when ``tech`` does not declare the kind of input it was given, naming the
    kinds it takes and the registered techniques that take this kind."""
    if kind is None or kind in tech.input_kinds:
        return
    takers = sorted(
        t.name for t in techniques().values() if kind in t.input_kinds and t.needs_inputs
    )
    kinds = sorted(tech.input_kinds, key=lambda k: (_KIND_ORDER.get(k, 99), k))
    takes = ", ".join(_KIND_NAMES.get(k, k) for k in kinds) or "no inputs"
    raise CapabilityError(
        f"technique {tech.name!r} takes {takes}; got {_KIND_NAMES[kind]}. Techniques that take "
        f"{kind} inputs: {', '.join(takers) or 'none registered'}{_kind_advice(adapter, kind)}"
    )


def _kind_advice(adapter: ModelAdapter, kind: str) -> str:
    if kind == "tokens":
        embeddings = [i.name for i in adapter.layers() if "embedding" in i.kind.lower()]
        where = f"layer={embeddings[0]!r}" if embeddings else "layer=<the embedding layer>"
        return (
            f"; token ids are explained at the embedding layer: run one of them with {where} "
            "(if these are numeric features, not token ids, convert them: x.astype(np.float32))"
        )
    if kind == "several":
        return "; or explain one input at a time"
    return ""


def _several_inputs_adapter(adapter: ModelAdapter, spec: InputSpec) -> ModelAdapter:
    """``adapter.with_inputs(spec)``; CapabilityError naming several_inputs when it has none."""
    if str(Capability.SEVERAL_INPUTS) not in missing_capabilities(
        [Capability.SEVERAL_INPUTS], adapter
    ) and isinstance(adapter, SeveralInputsAdapter):
        return adapter.with_inputs(spec)
    what = "several inputs" if spec.count > 1 else "extra forward arguments or token ids"
    raise CapabilityError(
        f"{what} need the several_inputs capability, which the "
        f"{getattr(adapter, 'backend', '?')} adapter for {getattr(adapter, 'name', '?')} does "
        "not provide (no with_inputs); use the torch or Keras adapter (innersight.wrap), or "
        "explain one float input without additional_forward_args"
    )


def _explain_spec(
    tech: Technique,
    adapter: ModelAdapter,
    batch: _UserInputs,
    extras: tuple[Any, ...],
    params: dict[str, Any],
) -> Explanation:
    """Several inputs, extra forward arguments or token ids: through ``adapter.with_inputs``,
    one sample at a time when an extra argument travels with its sample."""
    n = len(batch.parts[0])
    batched = tuple(has_batch_axis(a, n) for a in extras)
    if not any(batched):
        return _explain_derived(tech, adapter, batch, _ExtraArgs(extras, batched), params)
    t0 = time.perf_counter()
    seed = params.get("seed", COMMON_PARAMETERS["seed"].default)
    results = []
    for i in range(n):
        args = tuple(a[i : i + 1] if b else a for a, b in zip(extras, batched, strict=True))
        own = {**params, "seed": seed + i} if isinstance(seed, int) else params
        results.append(
            _explain_derived(tech, adapter, batch.sample(i), _ExtraArgs(args, batched), own)
        )
    return _joined(results, params, time.perf_counter() - t0)


@dataclass(frozen=True)
class _ExtraArgs:
    """The extra forward arguments of one derived adapter and which of them are batched."""

    args: tuple[Any, ...]
    batched: tuple[bool, ...]


def _explain_derived(
    tech: Technique,
    adapter: ModelAdapter,
    batch: _UserInputs,
    extra: _ExtraArgs,
    params: dict[str, Any],
) -> Explanation:
    """One run on the adapter derived for these inputs: packed when there are several."""
    parts = batch.parts
    spec = InputSpec(
        shapes=tuple(tuple(int(d) for d in p.shape[1:]) for p in parts),
        dtypes=tuple(p.dtype.name for p in parts),
        extra_args=extra.args,
        batched_extra=extra.batched,
        packed=batch.several,
    )
    derived = _several_inputs_adapter(adapter, spec)
    if not batch.several:
        return _explain_plain(tech, derived, parts[0], params)
    own = pack_parameters(params, tech.per_input_parameters, parts, spec)
    result = _explain_plain(tech, derived, spec.pack(parts), own)
    values = result.values
    flat = isinstance(values, np.ndarray) and values.shape == (len(parts[0]), spec.width)
    if result.kind == "heatmap" and flat:
        how = result.params.get("reduce_channels")
        result.values = unpack_values(np.asarray(values), spec, how)
    result.inputs = parts
    result.params.update({k: params[k] for k in tech.per_input_parameters if k in params})
    result.meta["input_shapes"] = [list(shape) for shape in spec.shapes]
    return result


def _joined(results: list[Explanation], params: dict[str, Any], seconds: float) -> Explanation:
    """Per-sample Explanations as one: values and inputs joined, meta merged."""
    first = results[0]
    inputs = [r.inputs for r in results]
    joined = None if inputs[0] is None else concat_values(inputs)
    meta = merge_meta([r.meta for r in results])
    meta.update(seconds=seconds, per_sample_runs=len(results))
    params_out = merge_meta([r.params for r in results])
    params_out.update({k: v for k, v in params.items() if k in params_out})
    return replace(
        first,
        values=concat_values([r.values for r in results]),
        inputs=joined,
        params=params_out,
        meta=meta,
    )


def _as_tuple(result: Explanation, batch: _UserInputs) -> None:
    """Tuple in, tuple out (as Captum): a one-element tuple of inputs gives a one-element tuple
    of maps (several inputs already have one map per input)."""
    if not batch.several and isinstance(result.values, np.ndarray):
        result.values = (result.values,)
        if isinstance(result.inputs, np.ndarray):
            result.inputs = (result.inputs,)


def _to_native(adapter: ModelAdapter, result: Explanation, batch: _UserInputs) -> None:
    """``return_type="native"``: each input's map as a tensor like that input (numpy inputs
    keep numpy maps)."""
    to_native = getattr(adapter, "to_native", None)
    values = result.values
    if isinstance(values, tuple):
        result.values = tuple(
            _native(to_native, v, like) for v, like in zip(values, batch.natives, strict=True)
        )
    elif isinstance(values, np.ndarray):
        result.values = _native(to_native, values, batch.natives[0])
    elif any(n is not None for n in batch.natives):
        raise InputError(
            f"return_type='native' converts maps; technique {result.technique!r} returns "
            f"{result.kind!r} values (a mapping): use return_type='numpy'"
        )


def _native(to_native: Any, values: np.ndarray, like: Any) -> Any:
    return values if like is None or to_native is None else to_native(values, like=like)


#: Adapters whose ``layers()`` already showed output shapes: they keep them (an adapter learns
#: shapes once), so ``explain`` does not list every layer again on each call.
_SHAPED: weakref.WeakSet[Any] = weakref.WeakSet()


def _ensure_shapes(adapter: ModelAdapter, x: np.ndarray) -> None:
    """:func:`shaped_layers` once per adapter (listing a torch model's layers took ~60 us)."""
    try:
        if adapter in _SHAPED:
            return
    except TypeError:  # not weak-referenceable or unhashable: check every call
        _probe_shapes(adapter, x)
        return
    infos = _probe_shapes(adapter, x)
    if any(tuple(info.output_shape) != () for info in infos):
        with contextlib.suppress(TypeError):  # not weak-referenceable: probed every call
            _SHAPED.add(adapter)


def _probe_shapes(adapter: ModelAdapter, x: np.ndarray) -> list[Any]:
    """:func:`shaped_layers` with one input; when that pass fails, once more with the whole
    batch, so the error names the shape the user passed (not a one-input slice of it)."""
    try:
        return shaped_layers(adapter, x[:1])
    except InnersightError:
        if len(x) == 1:
            raise
    return shaped_layers(adapter, x)


def _provider(tech: Technique) -> PluginInfo:
    """The plugin that registered ``tech`` (looked up on error paths only: it asks every plugin)."""
    try:
        return get_plugin_manager().provider(tech.name)
    except Exception:  # registered some other way: say what is known
        module = type(tech).__module__
        return PluginInfo(module, module.split(".")[0])


def _run(tech: Technique, adapter: ModelAdapter, x: Any, params: Any) -> Any:
    """``tech.explain``; a third-party plugin's own exception becomes a PluginError.

    The wrapping names the plugin and its distribution, so the report reaches its authors; the
    original exception is chained (``__cause__``) with its traceback. Passed on unchanged:
    innersight errors (user mistakes, found by the adapter or the plugin), KeyboardInterrupt,
    exceptions raised while the adapter was running the model (the model's or the backend's,
    not the plugin's), and the exceptions of built-in techniques, whose bugs must stay visible
    as what they are.
    """
    try:
        return tech.run(adapter, x, **params)
    except InnersightError:
        raise
    except Exception as err:
        provider = _provider(tech)
        if provider.distribution == "innersight" or _passed_through(err, adapter):
            raise
        raise PluginError(
            f"technique {tech.name!r} from {provider} raised {type(err).__name__}: {err} "
            f"(at {_origin(err)}). This is a bug or limitation of that plugin, not of your "
            "inputs: report it to its authors with the traceback chained above, or use another "
            "technique (innersight.techniques())"
        ) from err


def _passed_through(err: BaseException, adapter: ModelAdapter) -> bool:
    """True when ``err`` was raised inside one of ``adapter``'s methods (running the model)."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_locals.get("self") is adapter:
            return True
        tb = tb.tb_next
    return False


def _origin(err: BaseException) -> str:
    """``file:line`` where ``err`` was raised."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def _check_result(tech: Technique, result: Any, x: np.ndarray | None) -> None:
    """PluginError (naming the plugin) for a malformed Explanation: wrong type, non-numeric
    values, NaN/Inf, or not one result per input."""
    if not isinstance(result, Explanation):
        _bad_result(tech, f"returned {type(result).__name__}, not an Explanation")
    if not isinstance(result.meta, dict) or not isinstance(result.params, dict):
        _bad_result(tech, "returned an Explanation whose meta or params is not a dict")
    values = result.values
    if isinstance(values, Mapping):
        if not values:
            _bad_result(tech, "returned an Explanation with no values (an empty mapping)")
        items = [(f"values[{k!r}]", v) for k, v in values.items()]
    elif isinstance(values, tuple):
        items = [(f"values[{i}]", v) for i, v in enumerate(values)]
    else:
        items = [("values", values)]
    for where, v in items:
        _check_values(tech, where, v, x)


def _check_values(tech: Technique, where: str, v: Any, x: np.ndarray | None) -> None:
    try:
        arr = np.asarray(v)
    except Exception as err:  # ragged sequences
        _bad_result(tech, f"returned {where} that is not an array ({type(err).__name__}: {err})")
    if arr.dtype.kind not in "biuf":
        _bad_result(
            tech, f"returned {where} of dtype {arr.dtype} ({type(v).__name__}); expected numbers"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        scale = f" (the inputs reach |x| = {float(np.max(np.abs(x))):.3g})" if x is not None else ""
        _bad_result(
            tech,
            f"returned {bad} NaN/Inf value(s) in {where}; the model may overflow on these "
            f"inputs{scale}: check their scale, or the plugin has a bug",
        )
    if x is not None and tech.needs_inputs and arr.shape[:1] != (len(x),):
        got = arr.shape[0] if arr.ndim else "a scalar, not"
        place = "" if where == "values" else f" in {where}"
        _bad_result(tech, f"returned {got} results for {len(x)} inputs{place}")


def _bad_result(tech: Technique, what: str) -> NoReturn:
    raise PluginError(
        f"technique {tech.name!r} from {_provider(tech)} {what}; report this to the plugin's "
        "authors"
    )


def versions(backend: str) -> dict[str, str]:
    """Versions of Python, numpy, innersight and the backend's framework, for ``meta``.

    Looked up once per backend and process (reading package metadata took half of a small
    model's saliency call); each call returns a fresh dict.
    """
    return dict(_versions(backend))


@functools.cache
def _versions(backend: str) -> tuple[tuple[str, str], ...]:
    import sys
    from importlib import metadata

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("innersight", {"torch": "torch", "keras": "keras"}.get(backend, "")):
        if dist:
            with contextlib.suppress(metadata.PackageNotFoundError):
                out[dist] = metadata.version(dist)
    if backend == "keras" and "tensorflow" in sys.modules:
        out["tensorflow"] = getattr(sys.modules["tensorflow"], "__version__", "")
    return tuple(out.items())


# -- metrics -------------------------------------------------------------------------------------
def metrics() -> Mapping[str, Metric]:
    """Every registered metric (built-in and plugins) by name."""
    return get_plugin_manager().metrics()


def get_metric(name: str) -> Metric:
    """The metric called ``name``; InputError with suggestions otherwise."""
    if not isinstance(name, str):
        raise InputError(f"metric must be a name (str), got {type(name).__name__}")
    registry = metrics()
    if name not in registry:
        raise InputError(
            f"no metric named {name!r}; available: {', '.join(sorted(registry))}"
            f"{did_you_mean(name, registry)}"
        )
    return registry[name]


def evaluate(
    metric: str,
    model: Any,
    explanation: Explanation | str,
    inputs: Any = None,
    *,
    technique_params: Mapping[str, Any] | None = None,
    **params: Any,
) -> Evaluation:
    """Score an explanation with a metric: how far can it be trusted on this model?

        >>> ex = ins.explain("saliency", model, x)
        >>> ins.evaluate("deletion", model, ex).summary()["mean"]
        >>> ins.evaluate("deletion", model, "grad_cam", x, technique_params={"layer": "conv3"})

    Args:
        metric: a name from :func:`metrics`, e.g. ``"deletion"`` or ``"randomization"``.
        model: the model the explanation was made on (native, or a ModelAdapter).
        explanation: an Explanation holding its inputs, or a technique name: then ``inputs``
            (and ``technique_params``) are explained first, with :func:`explain`.
        inputs: the inputs to explain, with a technique name only.
        technique_params: parameters of the technique, with a technique name only.
        **params: the metric's keyword parameters (see ``metrics()[name].parameters()``).

    Returns:
        An :class:`~innersight.core.metric.Evaluation`: one score per input, curves, meta.

    Raises:
        InnersightError: (a subclass of it) for every user mistake, with what to do.
        PluginError: a third-party metric crashed or returned a malformed Evaluation.
    """
    chosen = get_metric(metric)
    _check_metric_params(chosen, params)
    adapter = wrap(model)
    _check_capabilities(chosen, adapter)
    ex = _explanation_for(chosen, adapter, explanation, inputs, technique_params)
    t0 = time.perf_counter()
    result = _run_metric(chosen, adapter, ex, params)
    elapsed = time.perf_counter() - t0
    _check_evaluation(chosen, result, ex)
    result.meta.setdefault("technique", ex.technique)
    result.meta.setdefault("backend", adapter.backend)
    result.meta.setdefault("model", adapter.name)
    result.meta.setdefault("higher_is_better", chosen.higher_is_better)
    result.meta.setdefault("reference", chosen.reference)
    result.meta.setdefault("seconds", elapsed)
    result.meta.setdefault("versions", versions(adapter.backend))
    return result


def _check_metric_params(metric: Metric, params: Mapping[str, Any]) -> None:
    valid = metric.parameters()
    for key in params:
        if key not in valid:
            raise InputError(
                f"metric {metric.name!r} has no parameter {key!r}; valid parameters: "
                f"{', '.join(valid) or 'none'}{did_you_mean(key, valid)}"
            )


def _check_capabilities(metric: Metric, adapter: ModelAdapter) -> None:
    require_capabilities(f"metric {metric.name!r}", metric.requires, adapter)


def _explanation_for(
    metric: Metric,
    adapter: ModelAdapter,
    explanation: Any,
    inputs: Any,
    technique_params: Mapping[str, Any] | None,
) -> Explanation:
    if isinstance(explanation, str):
        if inputs is None:
            raise InputError(
                f"evaluate({metric.name!r}, model, {explanation!r}) needs inputs to explain: "
                f"evaluate({metric.name!r}, model, {explanation!r}, x)"
            )
        return explain(explanation, adapter, inputs, **dict(technique_params or {}))
    if not isinstance(explanation, Explanation):
        raise InputError(
            f"explanation must be an Explanation or a technique name, got "
            f"{type(explanation).__name__}"
        )
    if inputs is not None or technique_params:
        raise InputError(
            "inputs and technique_params go with a technique name only; the Explanation already "
            "holds its inputs and parameters: pass evaluate(metric, model, explanation)"
        )
    if explanation.kind not in metric.kinds:
        raise InputError(
            f"metric {metric.name!r} evaluates explanations of kind "
            f"{', '.join(sorted(metric.kinds))}; technique {explanation.technique!r} gave kind "
            f"{explanation.kind!r}: pick a heatmap technique (saliency, occlusion, grad_cam, ...)"
        )
    if isinstance(explanation.inputs, tuple):
        raise InputError(
            f"metric {metric.name!r} scores explanations of one input; this "
            f"{explanation.technique!r} explanation has {len(explanation.inputs)} inputs (a "
            "tuple), which metrics do not take yet: evaluate a model of one input"
        )
    if explanation.inputs is None:
        raise InputError(
            f"the {explanation.technique!r} Explanation holds no inputs, which metric "
            f"{metric.name!r} needs; evaluate the Explanation that innersight.explain returned"
        )
    return explanation


def _metric_provider(metric: Metric) -> PluginInfo:
    try:
        return get_plugin_manager().metric_provider(metric.name)
    except Exception:  # registered some other way: say what is known
        module = type(metric).__module__
        return PluginInfo(module, module.split(".")[0])


def _run_metric(metric: Metric, adapter: ModelAdapter, ex: Explanation, params: Any) -> Any:
    """``metric.evaluate``; a third-party metric's own exception becomes a PluginError (as
    :func:`_run` does for techniques)."""
    try:
        return metric.evaluate(adapter, ex, **params)
    except InnersightError:
        raise
    except Exception as err:
        provider = _metric_provider(metric)
        if provider.distribution == "innersight" or _passed_through(err, adapter):
            raise
        raise PluginError(
            f"metric {metric.name!r} from {provider} raised {type(err).__name__}: {err} "
            f"(at {_origin(err)}). This is a bug or limitation of that plugin: report it to its "
            "authors with the traceback chained above, or use another metric"
        ) from err


def _check_evaluation(metric: Metric, result: Any, ex: Explanation) -> None:
    """PluginError for a malformed Evaluation: wrong type, or not one score per input."""
    n = len(ex)
    problem = ""
    if not isinstance(result, Evaluation):
        problem = f"returned {type(result).__name__}, not an Evaluation"
    elif result.scores.shape != (n,):
        problem = f"returned {result.scores.shape[0]} scores for {n} inputs"
    elif any(c.y.shape[0] != n for c in result.curves.values()):
        problem = f"returned curves whose rows do not match the {n} inputs"
    elif not isinstance(result.meta, dict) or not isinstance(result.params, dict):
        problem = "returned an Evaluation whose meta or params is not a dict"
    if problem:
        raise PluginError(
            f"metric {metric.name!r} from {_metric_provider(metric)} {problem}; report this to "
            "the plugin's authors"
        )
