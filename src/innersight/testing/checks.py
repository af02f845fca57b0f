"""The conformance error and the helpers every check shares.

A check raises :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a test
failure, not an error) whose message names the check, what was expected, what was received and
where; it returns None on success.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from innersight.core import missing_capabilities
from innersight.core.objectives import Channel, Custom, Logit, Neuron, Objective

__all__ = [
    "ConformanceError",
    "ConformanceWarning",
    "LayerPick",
    "assert_close",
    "capabilities",
    "check_array",
    "default_objectives",
    "describe",
    "fail",
    "native_model",
    "pick_layers",
    "require",
    "sample_inputs",
    "subset_objective",
    "tile_objective",
]


class ConformanceError(AssertionError):
    """An adapter or technique breaks the innersight contract; the message says how.

    Deliberately not an :class:`~innersight.core.errors.InnersightError`: those are user
    mistakes, this is a bug in a backend or plugin.
    """


class ConformanceWarning(UserWarning):
    """A check could not run a part of itself (e.g. no error injector for an unknown framework)."""


def fail(check: str, message: str) -> NoReturn:
    raise ConformanceError(f"{check}: {message}")


def capabilities(adapter: Any) -> set[str]:
    return {str(c) for c in getattr(adapter, "capabilities", ())}


def require(check: str, adapter: Any, *needed: str) -> None:
    """Fail when ``adapter`` lacks a capability the check needs."""
    missing = missing_capabilities(needed, adapter)
    if missing:
        fail(
            check,
            f"the {getattr(adapter, 'backend', '?')} adapter does not declare "
            f"{', '.join(missing)}, which this check needs; "
            "check_adapter skips it for such adapters",
        )


def native_model(adapter: Any) -> Any:
    """The model an adapter wraps (``.model``, ``.module`` or ``.network``), else the adapter."""
    for attr in ("model", "module", "network"):
        value = getattr(adapter, attr, None)
        if value is not None and not inspect.ismethod(value):
            return value
    return adapter


def sample_inputs(adapter: Any, n: int = 3, seed: int = 0) -> np.ndarray:
    """``n`` uniform-noise samples in [0, 1) of the adapter's ``input_shape`` (None -> 16)."""
    shape = getattr(adapter, "input_shape", None)
    if shape is None:
        raise ConformanceError(
            f"the {getattr(adapter, 'backend', '?')} adapter has no input_shape; "
            "pass a sample batch x"
        )
    dims = tuple(16 if d is None else int(d) for d in shape)
    return np.random.default_rng(seed).random((n, *dims), dtype=np.float32)


def assert_close(
    check: str,
    what: str,
    got: Any,
    expected: Any,
    *,
    rtol: float = 1e-4,
    atol: float | None = None,
) -> None:
    """Fail unless ``got`` matches ``expected`` in shape and value (``atol`` defaults to
    ``rtol`` times the largest magnitude of ``expected``)."""
    got_arr, exp_arr = np.asarray(got), np.asarray(expected)
    if got_arr.shape != exp_arr.shape:
        fail(check, f"{what} has shape {got_arr.shape}, expected {exp_arr.shape}")
    if got_arr.size == 0:
        return
    g, e = got_arr.astype(np.float64), exp_arr.astype(np.float64)
    if not np.all(np.isfinite(g)):
        fail(check, f"{what} contains {int(np.size(g) - np.isfinite(g).sum())} NaN/Inf values")
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    tol = rtol * scale + 1e-12 if atol is None else atol
    err = np.abs(g - e)
    bad = err > tol + rtol * np.abs(e)
    if np.any(bad):
        where = tuple(
            int(i)
            for i in np.unravel_index(int(np.argmax(err - tol - rtol * np.abs(e))), err.shape)
        )
        fail(
            check,
            f"{what} differs at {where}: got {g[where]:.6g}, expected {e[where]:.6g} "
            f"({int(bad.sum())} of {bad.size} entries off; max abs error {float(err.max()):.3g}, "
            f"tolerance rtol={rtol:g}, atol={tol:.3g})",
        )


def check_array(
    check: str, what: str, arr: Any, shape: Sequence[int | None] | None = None
) -> np.ndarray:
    """Fail unless ``arr`` is a finite float32 ndarray of ``shape`` (None entries: any size)."""
    if not isinstance(arr, np.ndarray):
        fail(check, f"{what} is a {type(arr).__name__}, expected a numpy array")
    if arr.dtype != np.float32:
        fail(check, f"{what} has dtype {arr.dtype}, expected float32")
    if shape is not None:
        ok = len(arr.shape) == len(shape) and all(
            s is None or s == a for s, a in zip(shape, arr.shape, strict=True)
        )
        if not ok:
            fail(check, f"{what} has shape {arr.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        fail(check, f"{what} contains {int(arr.size - np.isfinite(arr).sum())} NaN/Inf values")
    return arr


@dataclass(frozen=True)
class LayerPick:
    """Layers chosen for layer objectives, with their per-sample activation shapes."""

    spatial: str | None
    spatial_shape: tuple[int, ...] | None
    vector: str | None
    vector_shape: tuple[int, ...] | None


def pick_layers(adapter: Any, x: np.ndarray) -> LayerPick:
    """The deepest spatial (H, W, C) and vector (D,) layers before the output, shapes measured
    by one tapped forward (so unknown LayerInfo shapes do not matter)."""
    if "layer_taps" not in capabilities(adapter):
        return LayerPick(None, None, None, None)
    names = [info.name for info in adapter.layers()]
    acts = adapter.forward(x[:1], taps=names).activations
    spatial = vector = None
    for name in names[:-1]:  # the last layer is the output: Logit covers it
        shape = tuple(np.shape(acts[name])[1:])
        if len(shape) == 3 and min(shape[:2]) >= 1:
            spatial = (name, shape)
        elif len(shape) == 1 and shape[0] >= 1:
            vector = (name, shape)
    return LayerPick(
        spatial[0] if spatial else None,
        spatial[1] if spatial else None,
        vector[0] if vector else None,
        vector[1] if vector else None,
    )


def default_objectives(
    adapter: Any, x: np.ndarray, pick: LayerPick, num_outputs: int
) -> list[Objective]:
    """Logit with per-sample targets, and Channel/Neuron objectives on the picked layers.

    Units are chosen where ``x`` activates them most (per sample where the objective allows),
    so that no objective reads a dead unit, whose zero gradient would check nothing.
    """
    n = len(x)
    objs: list[Objective] = [Logit(np.arange(n) % num_outputs)]
    taps = [name for name in (pick.spatial, pick.vector) if name]
    acts = adapter.forward(x, taps=taps).activations if taps else {}
    if pick.spatial:
        a = np.abs(np.asarray(acts[pick.spatial], np.float64))
        h, w = a.shape[1:3]
        crop = 1 if min(h, w) >= 3 else 0
        region = a[:, crop : h - crop, crop : w - crop, :].mean(axis=(1, 2))
        objs.append(Channel(pick.spatial, region.argmax(axis=1), crop=crop))
        unit = np.unravel_index(int(a.mean(axis=0).argmax()), a.shape[1:])
        objs.append(Neuron(pick.spatial, tuple(int(i) for i in unit)))
    if pick.vector:
        a = np.abs(np.asarray(acts[pick.vector], np.float64))
        order = np.argsort(-a, axis=1, kind="stable")
        objs.append(Neuron(pick.vector, order[:, 0]))
        objs.append(Channel(pick.vector, order[:, min(1, a.shape[1] - 1)]))
    return objs


def _map_index(objective: Objective, fn: Callable[[np.ndarray], Any]) -> Objective:
    if isinstance(objective, Custom):  # no per-sample indices: the same function for any rows
        return objective
    index = objective.index
    if isinstance(objective, Neuron) and isinstance(index, tuple):
        return objective
    arr = np.asarray(index)
    if arr.ndim == 0:
        return objective
    new = fn(arr)
    if isinstance(objective, Logit):
        return Logit(new)
    if isinstance(objective, Channel):
        return Channel(objective.layer, new, crop=objective.crop)
    return Neuron(objective.layer, new)  # the remaining case: a Neuron with flat indices


def subset_objective(objective: Objective, rows: Iterable[int] | slice) -> Objective:
    """The objective restricted to some samples (per-sample indices sliced, scalars kept)."""
    sel = rows if isinstance(rows, slice) else list(rows)
    return _map_index(objective, lambda a: a[sel])


def tile_objective(objective: Objective, reps: int) -> Objective:
    """The objective for ``reps`` stacked copies of the batch."""
    return _map_index(objective, lambda a: np.tile(a, reps))


def describe(objective: Objective) -> str:
    """Short readable form of an objective for messages."""
    if isinstance(objective, Custom):
        return f"Custom({objective.name!r})"
    index = objective.index
    idx = index if isinstance(index, tuple) else np.asarray(index).tolist()
    if isinstance(objective, Logit):
        return f"Logit({idx})"
    crop = f", crop={objective.crop}" if isinstance(objective, Channel) and objective.crop else ""
    return f"{type(objective).__name__}({objective.layer!r}, {idx}{crop})"
