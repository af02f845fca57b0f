"""The public entry points: wrap, explain, techniques, layers."""

from __future__ import annotations

import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter, check_input_array
from innersight.core.errors import (
    CapabilityError,
    InnersightError,
    InputError,
    TechniqueNotFoundError,
    did_you_mean,
)
from innersight.core.manager import get_plugin_manager
from innersight.core.technique import Explanation, Technique

__all__ = ["clear_cache", "explain", "layers", "techniques", "wrap"]


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

    def get(self, model: Any, options: Mapping[str, Any]) -> ModelAdapter:
        try:
            key: tuple[int, Any] = (id(model), tuple(sorted(options.items())))
            hash(key)
        except TypeError:  # unhashable option values: wrap afresh
            return get_plugin_manager().wrap(model, options)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is model:
                self._entries.move_to_end(key)
                return entry[1]
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


def check_params(technique: Technique, params: Mapping[str, Any]) -> None:
    """Reject parameters that ``technique.explain`` does not take, listing the valid ones."""
    valid = technique.parameters()
    for key in params:
        if key not in valid:
            raise InputError(
                f"technique {technique.name!r} has no parameter {key!r}; valid parameters: "
                f"{', '.join(valid) or 'none'}{did_you_mean(key, valid)}"
            )


def prepare_inputs(adapter: ModelAdapter, inputs: Any) -> np.ndarray:
    """A validated float32 batch; one image without the batch axis gets one added."""
    expected = adapter.input_shape
    arr = inputs if isinstance(inputs, np.ndarray) else check_input_array(inputs)
    if expected is not None and arr.ndim == len(expected):
        arr = arr[None]
    return check_input_array(arr, expected=expected)


def explain(technique: str, model: Any, inputs: Any = None, **params: Any) -> Explanation:
    """Run a technique on a model and return its Explanation.

    Args:
        technique: a name from :func:`techniques`, e.g. ``"saliency"``.
        model: a native model or a ModelAdapter from :func:`wrap`.
        inputs: numpy batch (N, H, W, C) or one image (H, W, C), channels last, float. Techniques
            that generate their own images (filter/class maximization) take none.
        **params: the technique's keyword parameters (see ``techniques()[name].parameters()``).

    Raises:
        InnersightError: (a subclass of it) for every user mistake, with a message saying what to do.
    """
    tech = get_technique(technique)
    check_params(tech, params)
    adapter = wrap(model)
    missing = sorted(
        str(c) for c in tech.requires if c not in {str(k) for k in adapter.capabilities}
    )
    if missing:
        raise CapabilityError(
            f"technique {tech.name!r} needs {', '.join(missing)}, which the {adapter.backend} "
            f"adapter for {adapter.name} does not provide; pick another technique or backend"
        )
    x: np.ndarray | None = None
    if inputs is not None or tech.needs_inputs:
        if inputs is None:
            raise InputError(f"technique {tech.name!r} needs inputs: pass a batch (N, H, W, C)")
        x = prepare_inputs(adapter, inputs)
    t0 = time.perf_counter()
    result = tech.explain(adapter, x, **params)
    elapsed = time.perf_counter() - t0
    _check_result(tech, result, x)
    result.meta.setdefault("backend", adapter.backend)
    result.meta.setdefault("model", adapter.name)
    result.meta.setdefault("seconds", elapsed)
    result.meta.setdefault("versions", versions(adapter.backend))
    return result


def _check_result(tech: Technique, result: Any, x: np.ndarray | None) -> None:
    provider = get_plugin_manager().provider(tech.name)
    if not isinstance(result, Explanation):
        raise InnersightError(
            f"technique {tech.name!r} from {provider} returned {type(result).__name__}, not an "
            "Explanation; report this to the plugin's authors"
        )
    values = result.values.values() if isinstance(result.values, dict) else [result.values]
    for v in values:
        arr = np.asarray(v)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise InnersightError(
                f"technique {tech.name!r} from {provider} returned NaN/Inf values; the model may "
                "overflow on these inputs (check their scale) or the plugin has a bug"
            )
        if x is not None and tech.needs_inputs and arr.shape[:1] != (len(x),):
            raise InnersightError(
                f"technique {tech.name!r} from {provider} returned {arr.shape[0] if arr.ndim else 0} "
                f"results for {len(x)} inputs; report this to the plugin's authors"
            )


def versions(backend: str) -> dict[str, str]:
    """Versions of Python, numpy, innersight and the backend's framework, for ``meta``."""
    import sys
    from importlib import metadata

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("innersight", {"torch": "torch", "keras": "keras"}.get(backend, "")):
        if dist:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    if backend == "keras" and "tensorflow" in sys.modules:
        out["tensorflow"] = getattr(sys.modules["tensorflow"], "__version__", "")
    return out
