"""The ModelAdapter protocol: the one thing a backend has to provide.

Everything crosses this boundary as numpy: float32, batch first, channels last (N, H, W, C) for
images and (N, D) for vectors. Adapters build their own tensors from the numpy input and never
mutate the user's arrays or model.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from innersight.core.errors import (
    CapabilityError,
    InputError,
    LayerNotFoundError,
    did_you_mean,
    summarize_names,
)
from innersight.core.objectives import Objective

__all__ = [
    "LOGITS",
    "BaseAdapter",
    "Capability",
    "CroppedForwardAdapter",
    "ForwardResult",
    "LayerGradientAdapter",
    "LayerInfo",
    "ModelAdapter",
    "ReluMode",
    "capability_message",
    "check_input_array",
    "input_tap",
    "is_input_tap",
    "layer_gradient_adapter",
    "missing_capabilities",
    "require_capabilities",
    "shaped_layers",
]

ReluMode = Literal["plain", "guided", "deconv"]

#: Special tap: ``forward(x, taps=[LOGITS]).activations[LOGITS]`` is the (N, K) score that
#: ``Logit`` objectives read: the pre-activation of a final softmax/sigmoid where the adapter
#: finds one, else the outputs themselves. One meaning of "logit" for every technique.
LOGITS = "@logits"
_INPUT_SUFFIX = "@input"


def input_tap(layer: str) -> str:
    """The tap name for the INPUT of ``layer`` (its first positional argument, channels-last).

    ``forward(x, taps=[input_tap("fc")])`` returns what ``fc`` receives, e.g. the flattened,
    pooled features before a final dense layer, whatever functional ops made them.
    """
    return f"{layer}{_INPUT_SUFFIX}"


def is_input_tap(tap: str) -> str | None:
    """The layer name of an :func:`input_tap`, or None for an ordinary tap."""
    return tap[: -len(_INPUT_SUFFIX)] if tap.endswith(_INPUT_SUFFIX) else None


RELU_MODES: tuple[str, ...] = ("plain", "guided", "deconv")


class Capability(str, enum.Enum):
    """What an adapter can do. A ``str`` enum: plain strings work wherever one is expected."""

    FORWARD = "forward"
    LAYER_TAPS = "layer_taps"
    INPUT_GRADIENTS = "input_gradients"
    LAYER_GRADIENTS = "layer_gradients"
    WEIGHTS = "weights"
    RELU_OVERRIDE = "relu_override"
    CROPPED_FORWARD = "cropped_forward"
    SEVERAL_INPUTS = "several_inputs"
    LAYER_OVERRIDE = "layer_override"
    DEEPLIFT = "deeplift"
    LRP = "lrp"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LayerInfo:
    """One tappable layer.

    Attributes:
        name: unique, stable name (torch: ``named_modules`` path; Keras: ``layer.name``).
        kind: the layer's class name, e.g. ``"Conv2d"`` or ``"Dense"``.
        output_shape: channels-last output shape without the batch axis, e.g. ``(32, 32, 16)``;
            ``None`` entries where unknown; ``()`` when the backend cannot tell at all (a layer
            that was never run and has no static shape).
        num_params: number of parameters the layer itself owns.
        aliases: other names whose output is this very tensor, innermost first (torch: the
            containers a leaf's last call completes, e.g. ``("layer4.1", "layer4")`` for
            ``layer4.1.relu``). Techniques may name a layer by its outermost alias.
    """

    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    num_params: int = 0
    aliases: tuple[str, ...] = ()

    @property
    def is_spatial(self) -> bool:
        """True for (H, W, C) outputs, the layers an activation grid can show."""
        return len(self.output_shape) == 3


@dataclass(frozen=True)
class ForwardResult:
    """What one forward pass returns: the model outputs and the tapped activations."""

    outputs: np.ndarray
    activations: Mapping[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class ModelAdapter(Protocol):
    """What techniques see of a model. Third-party backends implement exactly this.

    Example:
        >>> adapter = innersight.wrap(model)
        >>> fr = adapter.forward(x, taps=["conv1"])
        >>> fr.outputs.shape, fr.activations["conv1"].shape
        ((4, 10), (4, 30, 30, 16))
        >>> values, grads = adapter.value_and_grad(x, objectives.Logit(3))

    Optional: adapters that declare the ``layer_gradients`` capability also implement
    ``layer_value_and_grad(x, objective, layer, *, relu="plain") -> (values, activations,
    grads)``: per-sample values ``(N,)``, the channels-last activations of ``layer`` and
    d(sum of values)/d(activations) (Grad-CAM uses it): the :class:`LayerGradientAdapter`
    protocol. It is not a member of this protocol, so adapters without it still satisfy
    ``isinstance(obj, ModelAdapter)``; the core checks a technique's ``requires`` before the
    technique can call it.

    Optional: adapters that declare ``cropped_forward`` can recompute a layer chain on cropped
    regions (exact incremental occlusion) and implement ``crop_graph(input_shape) -> dict``
    (the layers that can be recomputed on a crop, in backend-neutral terms) and
    ``crop_session(x, sizes, *, tap=None) -> run``, which caches the activations of the
    unoccluded images ``x`` and returns ``run(image_index, starts, patches)``: the outputs
    (or ``tap``) of a batch of images whose input regions are replaced by ``patches``
    (the :class:`CroppedForwardAdapter` protocol). The dict keys and the region rules are in
    :mod:`innersight.plugins._incremental`.
    """

    backend: str
    capabilities: frozenset[Capability]

    @property
    def name(self) -> str:
        """A short display name of the model (its class name, or the Keras model name)."""
        ...

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """Channels-last input shape without the batch axis, or None when unknown."""
        ...

    def layers(self) -> Sequence[LayerInfo]:
        """Every tappable layer, in execution order.

        Adapters that learn the graph from a pass (torch) list, once a pass has run, only the
        layers that ran, ordered by the completion of their last call.
        """
        ...

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """Outputs and the activations of ``taps`` from ONE forward pass (inference mode).

        Besides layer names, ``taps`` may hold :data:`LOGITS` and :func:`input_tap` names;
        an adapter that cannot serve them raises LayerNotFoundError for them.
        """
        ...

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` int64: the argmax of the outputs per sample."""
        ...

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: ReluMode = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample objective values ``(N,)`` and d(sum of values)/d(x), shaped like ``x``."""
        ...


@runtime_checkable
class LayerGradientAdapter(ModelAdapter, Protocol):
    """An adapter with the ``layer_gradients`` capability (Grad-CAM and the CAM family)."""

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: ReluMode = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-sample values ``(N,)``, the channels-last activations of ``layer`` and
        d(sum of values)/d(activations)."""
        ...


@runtime_checkable
class CroppedForwardAdapter(ModelAdapter, Protocol):
    """An adapter with the ``cropped_forward`` capability (exact incremental occlusion)."""

    def crop_graph(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The layers that can be recomputed on a crop, in backend-neutral terms."""
        ...

    def crop_session(self, x: np.ndarray, sizes: Any, *, tap: str | None = None) -> Any:
        """A ``run(image_index, starts, patches)`` over the cached activations of ``x``."""
        ...


def check_input_array(
    x: Any, *, expected: tuple[int | None, ...] | None = None, copy: bool = True
) -> np.ndarray:
    """Validate a batch and return it as a fresh float32 array (never the caller's object).

    ``copy=False`` returns a float32 input as it is (no copy): for an adapter that copies the
    data anyway, e.g. onto a GPU, and never lets the model see the caller's memory.

    The dtype rule: floating point (float16/32/64) is accepted and converted to float32.
    Everything else is refused with an InputError saying how to convert, because no conversion
    is right for every model: integers (uint8 pixels 0..255, or label-like codes) need the
    scaling the model was trained with, and booleans are masks, not images.

    Raises:
        InputError: for non-arrays, empty batches, bool/integer/complex/object dtypes, NaN/Inf,
            values beyond float32's range, or a shape that does not match ``expected``
            (channels-last, without the batch axis).
    """
    if not isinstance(x, np.ndarray):
        x = _as_array(x)
    _check_dtype(x.dtype)
    if x.ndim < 2:
        raise InputError(
            f"inputs must be a batch (N, ...) with at least 2 axes, got shape {x.shape}; "
            "add the batch axis with x[None] for one sample"
        )
    if x.shape[0] == 0:
        raise InputError(f"inputs are an empty batch (shape {x.shape}); pass at least one sample")
    if expected is not None:
        _check_shape(x.shape, expected)
    with np.errstate(over="ignore"):
        out = np.array(x, dtype=np.float32, copy=True if copy else None)
    if not np.isfinite(out).all():  # one pass in the common case; the cause only on failure
        _explain_non_finite(x)
    return out


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach") or hasattr(x, "numpy"):
        raise InputError(
            f"inputs must be a numpy array, got {type(x).__name__}, a tensor that is not "
            "converted here (innersight.explain converts the torch and Keras adapters' own "
            "tensors); convert with .detach().cpu().numpy() (torch) or .numpy() (TensorFlow), "
            "in channels-last (N, H, W, C) layout"
        )
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise InputError(
            f"inputs must be an array, got {type(x).__name__} that numpy cannot turn into one "
            f"({err}); pass a numpy array (N, H, W, C)"
        ) from err
    if arr.dtype == object:  # ragged nested lists, or objects numpy cannot convert
        raise InputError(
            f"inputs must be a numeric array, got {type(x).__name__} that becomes an object "
            "array (ragged nesting or non-numbers?); pass a numpy float array (N, H, W, C)"
        )
    return arr


def _check_dtype(dtype: np.dtype[Any]) -> None:
    if dtype.kind == "f":
        return
    if dtype.kind == "b":
        raise InputError(
            "inputs have dtype bool; innersight explains images, not masks: convert with "
            "x.astype(np.float32) if 0/1 values are really what the model takes"
        )
    if dtype.kind in "iu":
        raise InputError(
            f"inputs have integer dtype {dtype}; integers are not converted implicitly because "
            "the scaling depends on the model: convert to float32 and scale as the model "
            "expects (e.g. x.astype(np.float32) / 255)"
        )
    raise InputError(
        f"inputs must be a floating point array, got dtype {dtype}; pass real numbers, e.g. "
        "x.astype(np.float32)"
    )


def _explain_non_finite(x: np.ndarray) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), finite.shape))
        raise InputError(
            f"inputs contain {bad} NaN or Inf value(s) (the first at index {first}); clean or "
            "clip them first, e.g. np.nan_to_num(x)"
        )
    big = float(np.max(np.abs(x)))
    raise InputError(
        f"inputs have values up to {big:.3g}, beyond float32's range (about 3.4e38), which "
        "innersight computes in; rescale them to the range the model was trained on"
    )


def _check_shape(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    got = shape[1:]
    exp = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
    if len(got) != len(expected):
        hint = ""
        if _fits((0, *shape), expected):
            hint = "; this looks like one sample without the batch axis: pass x[None]"
        raise InputError(
            f"inputs have shape {shape}, expected {exp} (rank {len(expected) + 1}, got rank "
            f"{len(shape)}){hint}"
        )
    if _fits(shape, expected):
        return
    if len(expected) == 3 and _fits((0, got[1], got[2], got[0]), expected):
        raise InputError(
            f"inputs have shape {shape}, expected {exp}; this looks channels-first (N, C, H, W): "
            "transpose with x.transpose(0, 2, 3, 1) (innersight takes channels-last arrays, "
            "whatever the framework)"
        )
    for axis, (g, e) in enumerate(zip(got, expected, strict=True)):
        if e is not None and g != e:
            if len(expected) == 3 and axis == 2:
                what = f"wrong channel count: {g} instead of {e}"
            elif len(expected) == 3:
                what = f"wrong spatial size: {got[0]}x{got[1]} instead of {_size(expected)}"
            else:
                what = f"axis {axis + 1} has {g} entries instead of {e}"
            raise InputError(f"inputs have shape {shape}, expected {exp} ({what})")


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """True when ``shape[1:]`` matches ``expected`` (None matching anything)."""
    return len(shape) - 1 == len(expected) and all(
        e is None or g == e for g, e in zip(shape[1:], expected, strict=True)
    )


def _size(expected: tuple[int | None, ...]) -> str:
    return "x".join("?" if e is None else str(e) for e in expected[:2])


class BaseAdapter:
    """Shared validation for adapters. Optional: the protocol is what counts.

    Subclasses set ``backend`` and ``capabilities`` and implement ``layers``, ``forward`` and
    ``value_and_grad``; this class provides input checks, layer lookup with suggestions, and
    ``predict_classes`` on top of ``forward``.
    """

    backend: str = "unknown"
    capabilities: frozenset[Capability] = frozenset()

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return None

    def layers(self) -> Sequence[LayerInfo]:
        raise NotImplementedError

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        raise NotImplementedError

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        out = self.forward(x).outputs
        return np.asarray(out.reshape(out.shape[0], -1).argmax(axis=1), dtype=np.int64)

    # -- helpers for subclasses ------------------------------------------------------------
    def check_input(self, x: Any, *, copy: bool = True) -> np.ndarray:
        """Validated float32 copy of ``x`` (see :func:`check_input_array`)."""
        return check_input_array(x, expected=self.input_shape, copy=copy)

    def layer_info(self, name: str) -> LayerInfo:
        """The LayerInfo called ``name``; LayerNotFoundError with suggestions otherwise."""
        for info in self.layers():
            if info.name == name:
                return info
        names = [i.name for i in self.layers()]
        raise LayerNotFoundError(
            f"layer {name!r} not found in {self.backend} model {self.name}; "
            f"{summarize_names(names)}{did_you_mean(name, names)}"
        )

    def check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        """Validate tap names (unique, existing) and return them as a tuple in request order."""
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(dict.fromkeys(taps))
        for name in taps:
            self.layer_info(name)
        return taps

    @staticmethod
    def check_relu(relu: str) -> None:
        if relu not in RELU_MODES:
            raise InputError(f"relu={relu!r} is not supported; use one of {', '.join(RELU_MODES)}")


def is_dataset(inputs: Any) -> bool:
    """True for an iterable of batches (a generator, a tf.data.Dataset, a DataLoader).

    Arrays, lists, tuples, mappings, strings and tensors (anything with ``shape`` or
    ``__array__``) are one array, not a data set.
    """
    return (
        not isinstance(inputs, (np.ndarray, list, tuple, str, bytes, Mapping))
        and hasattr(inputs, "__iter__")
        and not hasattr(inputs, "__array__")
        and not hasattr(inputs, "shape")
    )


def missing_capabilities(requires: Iterable[Any], adapter: Any) -> list[str]:
    """The capabilities of ``requires`` that ``adapter`` does not declare, sorted."""
    have = {str(c) for c in getattr(adapter, "capabilities", ())}
    return sorted(str(c) for c in requires if str(c) not in have)


def capability_message(what: str, requires: Iterable[Any], adapter: Any) -> str | None:
    """The one sentence said everywhere (explain, evaluate, report, testing) when ``adapter``
    lacks a capability that ``what`` (e.g. ``"technique 'grad_cam'"``) requires; None if none
    is missing."""
    missing = missing_capabilities(requires, adapter)
    if not missing:
        return None
    have = ", ".join(sorted(str(c) for c in getattr(adapter, "capabilities", ()))) or "nothing"
    return (
        f"{what} needs {', '.join(missing)}, which the {getattr(adapter, 'backend', '?')} "
        f"adapter for {getattr(adapter, 'name', '?')} does not provide (it provides {have}); "
        "pick one that needs only those (its `requires`), or another backend"
    )


def require_capabilities(what: str, requires: Iterable[Any], adapter: Any) -> None:
    """CapabilityError with :func:`capability_message` when a capability is missing."""
    message = capability_message(what, requires, adapter)
    if message is not None:
        raise CapabilityError(message)


def layer_gradient_adapter(
    model: ModelAdapter, what: str = "this technique"
) -> LayerGradientAdapter:
    """``model`` typed as a :class:`LayerGradientAdapter`; CapabilityError when it does not
    implement ``layer_value_and_grad`` (techniques that require ``layer_gradients`` use it)."""
    if not isinstance(model, LayerGradientAdapter):
        raise CapabilityError(
            f"{what} needs layer_gradients, which the {getattr(model, 'backend', '?')} adapter "
            f"for {getattr(model, 'name', '?')} does not provide (no layer_value_and_grad); "
            "pick a technique that needs only forward passes or input gradients"
        )
    return model


def shaped_layers(model: ModelAdapter, probe: Any) -> list[LayerInfo]:
    """``model.layers()`` with output shapes.

    Adapters that learn shapes from a pass (torch without ``input_shape``) list ``()`` shapes
    until the model has run: they get one untapped forward of ``probe`` (one input is enough)
    first. ``innersight.explain`` does this before calling a technique, so inside ``explain``
    ``model.layers()`` already has shapes; call this when running a technique directly. A layer
    may keep ``()`` after the pass (a layout the adapter cannot tell): leave it out.
    """
    infos = list(model.layers())
    if not infos or all(tuple(info.output_shape) == () for info in infos):
        model.forward(np.asarray(probe))
        infos = list(model.layers())
    return infos
