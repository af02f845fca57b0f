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

from innersight.core.errors import InputError, LayerNotFoundError, did_you_mean, summarize_names
from innersight.core.objectives import Objective

__all__ = [
    "BaseAdapter",
    "Capability",
    "ForwardResult",
    "LayerInfo",
    "ModelAdapter",
    "ReluMode",
    "check_input_array",
]

ReluMode = Literal["plain", "guided", "deconv"]
RELU_MODES: tuple[str, ...] = ("plain", "guided", "deconv")


class Capability(str, enum.Enum):
    """What an adapter can do. A ``str`` enum: plain strings work wherever one is expected."""

    FORWARD = "forward"
    LAYER_TAPS = "layer_taps"
    INPUT_GRADIENTS = "input_gradients"
    LAYER_GRADIENTS = "layer_gradients"
    WEIGHTS = "weights"
    RELU_OVERRIDE = "relu_override"

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
    """

    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    num_params: int = 0

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
        """Every tappable layer, in execution order."""
        ...

    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """Outputs and the activations of ``taps`` from ONE forward pass (inference mode)."""
        ...

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` int64: the argmax of the outputs per sample."""
        ...

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: ReluMode = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample objective values ``(N,)`` and d(sum of values)/d(x), shaped like ``x``."""
        ...

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: ReluMode = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values ``(N,)``, the activations of ``layer`` and d(sum of values)/d(activations).

        Only adapters that declare the ``layer_gradients`` capability implement this; the core
        checks a technique's ``requires`` before calling it. Activations and gradients are
        channels-last, ``(N, H, W, C)`` or ``(N, D)`` (Grad-CAM uses them).
        """
        ...


def check_input_array(x: Any, *, expected: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Validate a batch and return it as a fresh float32 array (never the caller's object).

    Raises:
        InputError: for non-arrays, empty batches, bool/integer/complex dtypes, NaN/Inf, or a
            shape that does not match ``expected`` (channels-last, without the batch axis).
    """
    if not isinstance(x, np.ndarray):
        if hasattr(x, "detach") or hasattr(x, "numpy"):
            raise InputError(
                f"inputs must be a numpy array, got {type(x).__name__}; "
                "convert with .detach().cpu().numpy() (torch) or .numpy() (TensorFlow), "
                "in channels-last (N, H, W, C) layout"
            )
        try:
            x = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise InputError(f"inputs must be an array, got {type(x).__name__}: {err}") from err
    if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
        raise InputError(
            f"inputs must be floating point, got dtype {x.dtype}; convert with .astype(np.float32)"
        )
    if x.dtype.kind in "iu":
        raise InputError(
            f"inputs have integer dtype {x.dtype}; convert to float32 and scale as the model "
            "expects (e.g. x.astype(np.float32) / 255)"
        )
    if x.ndim < 2:
        raise InputError(
            f"inputs must be a batch (N, ...) with at least 2 axes, got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise InputError(f"inputs are an empty batch (shape {x.shape}); pass at least one sample")
    if expected is not None:
        _check_shape(x.shape, expected)
    out = np.array(x, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise InputError(f"inputs contain {bad} NaN or Inf values; clean or clip them first")
    return out


def _check_shape(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    got = shape[1:]
    exp = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
    if len(got) != len(expected):
        hint = ""
        if len(expected) == 3 and len(got) == 3 and got[0] == expected[-1]:
            hint = "; this looks channels-first: transpose with x.transpose(0, 2, 3, 1)"
        raise InputError(f"inputs have shape {shape}, expected {exp}{hint}")
    for axis, (g, e) in enumerate(zip(got, expected)):
        if e is not None and g != e:
            hint = ""
            if len(expected) == 3 and axis == 2:
                hint = " (wrong channel count"
                hint += (
                    "; channels-first data? transpose with x.transpose(0, 2, 3, 1))"
                    if got[0] == e
                    else ")"
                )
            raise InputError(f"inputs have shape {shape}, expected {exp}{hint}")


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
    def check_input(self, x: Any) -> np.ndarray:
        """Validated float32 copy of ``x`` (see :func:`check_input_array`)."""
        return check_input_array(x, expected=self.input_shape)

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
