"""Declarative objectives: data that every adapter evaluates in its own framework.

An objective names a scalar per sample. Indices may be one int (the same for every sample) or one
int per sample, so a batch of N different targets (N classes, N filters) is one gradient call.

Semantics, identical on every backend (activations are channels-last):

* ``Logit(index)``: ``outputs[i, index[i]]`` (with ``logits="auto"`` the pre-softmax score).
* ``Channel(layer, index, crop=0)``: the mean of ``act[i, crop:H-crop, crop:W-crop, index[i]]`` for
  a spatial layer (N, H, W, C); for a vector layer (N, D) it is ``act[i, index[i]]``.
* ``Neuron(layer, index)``: one unit of the layer. ``index`` is a flat index into one sample's
  channels-last activation (``act[i].reshape(-1)[index[i]]``), or an ``(h, w, c)`` tuple.
* ``Custom(fn)``: a score of your own, ``fn(scores)`` with one value per sample, where
  ``scores`` is what ``Logit`` reads (the pre-softmax score where the adapter finds a final
  softmax/sigmoid, else the outputs), channels-last, as the backend's own tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core.errors import ObjectiveError

__all__ = [
    "Channel",
    "Custom",
    "Logit",
    "Neuron",
    "Objective",
    "channel_indices",
    "check_range",
    "evaluate",
    "neuron_flat_index",
    "per_sample",
]

IndexLike = int | Sequence[int] | np.ndarray


@dataclass(frozen=True)
class Logit:
    """The model's score for a class (pre-activation when the adapter uses ``logits="auto"``)."""

    index: IndexLike

    @property
    def layer(self) -> None:
        return None


@dataclass(frozen=True)
class Channel:
    """Mean activation of one feature map (one channel) of ``layer``, border ``crop`` excluded."""

    layer: str
    index: IndexLike
    crop: int = 0


@dataclass(frozen=True)
class Neuron:
    """One unit of ``layer``: flat channels-last index, or an ``(h, w, c)`` tuple."""

    layer: str
    index: IndexLike | tuple[int, int, int]


@dataclass(frozen=True)
class Custom:
    """A score of your own: ``fn(scores)`` -> one value per sample, shape ``(N,)``.

    ``scores`` are what :class:`Logit` reads (the pre-softmax score of a final softmax/sigmoid
    where the adapter finds one, else the model's outputs), channels-last ((N, K), or
    (N, H, W, K) for a segmentation model), as the BACKEND'S OWN TENSOR: a ``torch.Tensor`` for
    torch models, the Keras backend's tensor inside a traced function for Keras models. So
    ``fn`` must be differentiable and written with operations of that framework: indexing and
    arithmetic work everywhere (``lambda s: s[:, 3] - s[:, 5]``); for reductions use
    ``keras.ops`` on Keras models (``keras.ops.sum(s * mask, axis=(1, 2))``) and torch
    functions or methods on torch models. It must not keep the tensor or change it in place.
    Techniques that only run forward passes (occlusion, feature ablation) call ``fn`` on numpy
    scores instead: indexing and arithmetic keep one ``fn`` valid for both.

    Attributes:
        fn: the score function.
        name: how ``meta`` names it (default ``"custom"``).
    """

    fn: Callable[[Any], Any]
    name: str = "custom"

    @property
    def layer(self) -> None:
        return None


Objective = Logit | Channel | Neuron | Custom


def per_sample(index: object, n: int, *, what: str = "index") -> np.ndarray:
    """Broadcast an int or a sequence of ints to an ``(n,)`` int64 array, validating it."""
    if isinstance(index, (bool, np.bool_)):
        raise ObjectiveError(f"{what} must be an int or one int per sample, got a bool ({index!r})")
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu":
        if (
            arr.dtype.kind == "f"
            and arr.size
            and np.all(np.isfinite(arr))
            and np.all(arr == arr.round())
        ):
            arr = arr.astype(np.int64)
        else:
            raise ObjectiveError(
                f"{what} must be an int or a sequence of ints, got {index!r} (dtype {arr.dtype})"
            )
    if arr.ndim == 0:
        return np.full(n, int(arr), dtype=np.int64)
    if arr.shape != (n,):
        raise ObjectiveError(
            f"{what} has {arr.size} entries for {n} samples; pass one int, or exactly one per "
            "sample"
        )
    return arr.astype(np.int64)


def check_range(idx: np.ndarray, size: int, what: str) -> None:
    """Raise ObjectiveError naming the first index outside 0..size-1."""
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise ObjectiveError(
            f"{what} {int(bad[0])} is out of range: valid values are 0..{size - 1}"
        )


def neuron_flat_index(objective: Neuron, sample_shape: tuple[int, ...], n: int) -> np.ndarray:
    """Flat channels-last indices (n,) of a Neuron objective for activations of ``sample_shape``."""
    index = objective.index
    if isinstance(index, tuple) and len(index) == len(sample_shape) and len(index) > 1:
        try:
            flat = int(np.ravel_multi_index(tuple(int(i) for i in index), sample_shape))
        except ValueError as err:
            raise ObjectiveError(
                f"neuron {index} is outside layer '{objective.layer}' of shape {sample_shape}"
            ) from err
        return np.full(n, flat, dtype=np.int64)
    flat_idx = per_sample(index, n, what=f"neuron index of layer '{objective.layer}'")
    check_range(flat_idx, int(np.prod(sample_shape)), f"neuron index of layer '{objective.layer}'")
    return flat_idx


def channel_indices(objective: Channel, act_shape: tuple[int, ...]) -> np.ndarray:
    """Validated per-sample channel indices for a Channel objective on activations ``act_shape``."""
    n, channels = act_shape[0], act_shape[-1]
    idx = per_sample(objective.index, n, what=f"channel of layer '{objective.layer}'")
    check_range(idx, channels, f"channel of layer '{objective.layer}'")
    if len(act_shape) == 4:
        crop = int(objective.crop)
        if crop < 0 or 2 * crop >= min(act_shape[1], act_shape[2]):
            raise ObjectiveError(
                f"crop={objective.crop} leaves nothing of layer '{objective.layer}' "
                f"({act_shape[1]}x{act_shape[2]}); use 0 <= crop <= "
                f"{(min(act_shape[1:3]) - 1) // 2}"
            )
    elif len(act_shape) != 2:
        raise ObjectiveError(
            f"Channel needs a (N, H, W, C) or (N, D) layer; '{objective.layer}' gives {act_shape}"
        )
    return idx


def evaluate(
    objective: Objective, outputs: np.ndarray, activations: dict[str, np.ndarray]
) -> np.ndarray:
    """Reference numpy evaluation of ``objective`` on channels-last arrays; returns ``(N,)``.

    Adapters compute the same numbers in their own framework; this function is the
    specification they are tested against.
    """
    if isinstance(objective, Logit):
        n = outputs.shape[0]
        idx = per_sample(objective.index, n, what="target")
        flat = outputs.reshape(n, -1)
        check_range(idx, flat.shape[1], "target")
        return flat[np.arange(n), idx]
    if isinstance(objective, Custom):
        return custom_values(objective, outputs)
    act = activations[objective.layer]
    n = act.shape[0]
    if isinstance(objective, Channel):
        idx = channel_indices(objective, act.shape)
        if act.ndim == 2:
            return act[np.arange(n), idx]
        c = int(objective.crop)
        region = act[:, c : act.shape[1] - c, c : act.shape[2] - c, :]
        return region.mean(axis=(1, 2))[np.arange(n), idx]
    if isinstance(objective, Neuron):
        flat_idx = neuron_flat_index(objective, act.shape[1:], n)
        return act.reshape(n, -1)[np.arange(n), flat_idx]
    raise ObjectiveError(f"unknown objective {objective!r}; use Logit, Channel, Neuron or Custom")


def layer_of(objective: Objective) -> str | None:
    """The layer an objective reads, or None for output objectives."""
    return objective.layer


def custom_values(objective: Custom, scores: np.ndarray) -> np.ndarray:
    """``objective.fn(scores)`` on numpy scores, checked to be one finite value per sample."""
    try:
        values = objective.fn(scores)
    except Exception as err:
        raise ObjectiveError(
            f"the score function {objective.name!r} failed on numpy scores of shape "
            f"{scores.shape}: {type(err).__name__}: {err}. Forward-only techniques call it on "
            "numpy arrays: write it with indexing and arithmetic (lambda s: s[:, 3] - s[:, 5])"
        ) from err
    return check_custom_values(objective, np.asarray(values, dtype=np.float64), scores.shape[0])


def check_custom_values(objective: Custom, values: Any, n: int) -> Any:
    """``values`` when shaped ``(n,)``; ObjectiveError saying what ``fn`` must return else."""
    shape = tuple(getattr(values, "shape", ()))
    if shape != (n,):
        raise ObjectiveError(
            f"the score function {objective.name!r} returned shape {shape} for {n} samples; "
            "it must return one value per sample, shape (N,): reduce over the other axes, e.g. "
            "lambda s: s[:, 3] - s[:, 5]"
        )
    return values
