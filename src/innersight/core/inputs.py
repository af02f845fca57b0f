"""What kind of input a batch is, and packing several inputs into one batch and back.

:func:`innersight.explain` uses these to explain inputs beyond one image batch (see
``docs/inputs.md``):

- :func:`input_kind` names a validated batch's kind by rank and dtype, never by guessing:
  rank 4 floats are ``"image"`` (N, H, W, C), rank 3 floats ``"sequence"`` (N, L, C), rank 2
  floats ``"tabular"`` (N, F), rank 2 integers ``"tokens"`` (N, T); a tuple is ``"several"``.
- :func:`pack_parameters` turns per-input parameters (a baseline per input, a feature mask per
  input) into one value for the packed (N, D) batch of
  :class:`~innersight.core.inputspec.InputSpec`.
- :func:`unpack_values` splits a technique's packed (N, D) map into one map per input and
  reduces each input's channels as the technique asked.

Plain numpy: no framework is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from innersight.core.baselines import resolve_baseline
from innersight.core.errors import InputError
from innersight.core.inputspec import InputSpec
from innersight.core.technique import reduce_channels

__all__ = [
    "RANK_KINDS",
    "input_kind",
    "is_baseline_name",
    "pack_parameter",
    "pack_parameters",
    "unpack_values",
]

#: Float batches by rank; integer (N, T) batches are ``"tokens"``.
RANK_KINDS: Mapping[int, str] = {4: "image", 3: "sequence", 2: "tabular"}


def input_kind(x: np.ndarray) -> str | None:
    """The kind of one validated batch: ``"image"``, ``"sequence"``, ``"tabular"`` or
    ``"tokens"``; None for ranks no technique declares (rank 5 and more), which are passed on
    unchecked as before."""
    if x.dtype.kind in "iu":
        return "tokens" if x.ndim == 2 else None
    return RANK_KINDS.get(x.ndim)


def is_baseline_name(name: str) -> bool:
    """Whether a per-input parameter is resolved as a baseline (its name contains one)."""
    return "baseline" in name


def pack_parameters(
    params: Mapping[str, Any],
    names: Sequence[str],
    parts: Sequence[np.ndarray],
    spec: InputSpec,
) -> dict[str, Any]:
    """``params`` with each per-input parameter in ``names`` resolved per input and packed.

    A tuple value gives one value per input (its length must be the number of inputs); any
    other value applies to every input. None values stay None (the technique's default, which
    then applies to the packed batch as a whole).
    """
    out = dict(params)
    for name in names:
        if name in out and out[name] is not None:
            out[name] = pack_parameter(name, out[name], parts, spec)
    return out


def pack_parameter(name: str, value: Any, parts: Sequence[np.ndarray], spec: InputSpec) -> Any:
    """One per-input parameter's value for the packed batch (see :func:`pack_parameters`)."""
    values = _per_input(name, value, spec.count)
    if all(v is None for v in values):
        return None
    if is_baseline_name(name):
        return _pack_baselines(name, values, parts, spec)
    return _pack_arrays(name, values, parts, spec)


def _per_input(name: str, value: Any, count: int) -> tuple[Any, ...]:
    if not isinstance(value, tuple):
        return (value,) * count
    if len(value) != count:
        raise InputError(
            f"{name} is a tuple of {len(value)} value(s) for {count} inputs; give one value per "
            f"input, e.g. {name}=({', '.join(['...'] * count)}), or one value for all of them"
        )
    return value


def _pack_baselines(
    name: str, values: Sequence[Any], parts: Sequence[np.ndarray], spec: InputSpec
) -> np.ndarray:
    resolved = []
    for i, (value, part) in enumerate(zip(values, parts, strict=True)):
        if value is None:
            raise InputError(
                f"{name}[{i}] is None; give every input a baseline (e.g. 0.0), or pass one "
                f"value for all inputs"
            )
        resolved.append(resolve_baseline(value, part, name=f"{name}[{i}]"))
    return spec.pack(resolved)


def _pack_arrays(
    name: str, values: Sequence[Any], parts: Sequence[np.ndarray], spec: InputSpec
) -> np.ndarray:
    """Masks and other arrays: each fitted to its input's sample shape (or, when one of them
    has the batch axis, to the batch shape), then packed. An input without a value gets labels
    of its own (every element its own group, numbered after the others' largest label), as
    Captum does for the features it is not given a mask for."""
    n = parts[0].shape[0]
    fitted = [
        None if v is None else _fit(f"{name}[{i}]", v, p)
        for i, (v, p) in enumerate(zip(values, parts, strict=True))
    ]
    batched = any(f is not None and f.shape == p.shape for f, p in zip(fitted, parts, strict=True))
    top = max((int(np.max(f)) for f in fitted if f is not None and f.size), default=-1)
    flat = []
    for f, part in zip(fitted, parts, strict=True):
        if f is None:
            size = int(np.prod(part.shape[1:]))
            f = np.arange(top + 1, top + 1 + size).reshape(part.shape[1:])
            top += size
        if batched:
            f = np.broadcast_to(f, part.shape)
        flat.append(np.asarray(f).reshape((n, -1) if batched else (-1,)))
    return np.concatenate(flat, axis=-1)


def _fit(name: str, value: Any, part: np.ndarray) -> np.ndarray:
    """``value`` as an array of ``part``'s sample shape, or of its batch shape when it has the
    batch axis (tried second). An image's (H, W) or (N, H, W) mask covers every channel."""
    if isinstance(value, str):
        raise InputError(
            f"{name}={value!r}: named values are not packed across several inputs; give an "
            f"integer array per input (a tuple), or leave it out (None: every element its own "
            "group)"
        )
    arr = np.asarray(value)
    sample = part.shape[1:]
    for shape in (sample, part.shape):
        candidate = arr
        if len(sample) == 3 and arr.shape == shape[:-1]:  # (H, W) labels: all channels
            candidate = arr[..., None]
        try:
            return np.array(np.broadcast_to(candidate, shape))
        except ValueError:
            continue
    raise InputError(
        f"{name} has shape {arr.shape}, which fits neither its input's sample shape {sample} "
        f"nor its batch shape {part.shape}; give an array shaped like one sample (or the batch)"
    )


def unpack_values(values: np.ndarray, spec: InputSpec, how: str | None) -> tuple[np.ndarray, ...]:
    """A technique's packed ``(N, width)`` map -> one map per input in the input's shape, its
    channels reduced by ``how`` (the technique's ``reduce_channels``: the packed batch is a
    rank-2 vector batch, which :func:`~innersight.core.technique.reduce_channels` leaves alone,
    so the reduction the technique was asked for happens here, per input)."""
    parts = spec.split(np.asarray(values))
    return tuple(np.ascontiguousarray(reduce_channels(p, how)) for p in parts)


# -- framework tensors -------------------------------------------------------------------------
def is_native_tensor(x: Any) -> bool:
    """Whether ``x`` looks like a framework tensor (has a shape, is not numpy): the adapter's
    ``from_native`` is asked about it first."""
    return hasattr(x, "shape") and not isinstance(x, (np.ndarray, np.generic))


def extra_arguments(args: Any) -> tuple[Any, ...]:
    """``additional_forward_args`` as a tuple: None is none, a tuple is several, anything else
    one argument (Captum's rule)."""
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


def has_batch_axis(arg: Any, n: int) -> bool:
    """Whether an extra argument is batched: an array or tensor whose first axis has length n."""
    shape = getattr(arg, "shape", None)
    if shape is None or isinstance(arg, (str, bytes)):
        return False
    try:
        return len(shape) >= 1 and int(shape[0]) == n
    except TypeError:  # an unknown (symbolic) first dimension
        return False


# -- one sample at a time ----------------------------------------------------------------------
def concat_values(values: Sequence[Any]) -> Any:
    """Per-sample Explanation values (arrays, tuples of arrays, or mappings) joined along the
    batch axis."""
    first = values[0]
    if isinstance(first, tuple):
        return tuple(np.concatenate([v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {k: np.concatenate([v[k] for v in values]) for k in first}
    return np.concatenate([np.asarray(v) for v in values])


def merge_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-sample runs' meta (or params) as one run's: one-entry lists and arrays with one row
    (per-sample facts such as ``score`` and ``target``) joined; other entries the first
    sample's where the samples agree, else a list with one entry per sample."""
    out: dict[str, Any] = {}
    for key, first in metas[0].items():
        every: list[Any] = [m.get(key) for m in metas]
        if all(isinstance(v, list) and len(v) == 1 for v in every):
            out[key] = [v[0] for v in every]
        elif all(isinstance(v, np.ndarray) and v.ndim and len(v) == 1 for v in every):
            out[key] = np.concatenate(every)
        elif all(_same(first, v) for v in every[1:]):
            out[key] = first
        else:
            out[key] = every
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:  # values that cannot be compared are taken as different
        return False
