"""One validation vocabulary for every technique, metric and front end.

Each checker takes the parameter's ``name`` and ``value`` and returns the value normalised
(``int``, ``float``, a pair, ...), or raises :class:`~innersight.core.errors.InputError` with the
same wording for the same mistake everywhere: what was received, what is expected, and an
example that works (``pass e.g. steps=32``). Booleans are never numbers here (``True`` is not
``1`` step), numpy integer and floating scalars are.

    >>> from innersight.core import validate
    >>> validate.positive_int("steps", 32)
    32
    >>> validate.pair("window", 8)
    (8, 8)
"""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from innersight.core.errors import InputError

__all__ = [
    "boolean",
    "choice",
    "is_int",
    "is_number",
    "non_negative_int",
    "number",
    "pair",
    "positive_int",
    "probability",
    "seed",
]


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for booleans and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for finite-or-not real numbers (int, float, numpy scalars), False for booleans."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _example(name: str, example: Any) -> str:
    return f"; pass e.g. {name}={example!r}" if example is not None else ""


def positive_int(name: str, value: Any, *, example: Any = None, maximum: int | None = None) -> int:
    """``value`` as an int >= 1 (and <= ``maximum`` when given)."""
    if not is_int(value) or value < 1:
        raise InputError(
            f"{name} must be a positive int, got {value!r}{_example(name, example or 1)}"
        )
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any, *, example: Any = None) -> int:
    """``value`` as an int >= 0."""
    if not is_int(value) or value < 0:
        raise InputError(
            f"{name} must be a non-negative int, got {value!r}{_example(name, example or 0)}"
        )
    return int(value)


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    example: Any = None,
) -> float:
    """``value`` as a finite float within ``[low, high]`` (ends open when ``*_open``)."""
    ok = is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        raise InputError(
            f"{name} must be a finite number{_interval(low, high, low_open, high_open)}, "
            f"got {value!r}{_example(name, example)}"
        )
    return float(value)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return f" in {left}{low:g}, {high:g}{right}"


def probability(name: str, value: Any, *, example: Any = None) -> float:
    """``value`` as a float in [0, 1]."""
    return number(name, value, low=0.0, high=1.0, example=0.5 if example is None else example)


def boolean(name: str, value: Any) -> bool:
    """``value`` when it is a bool (numpy bools included); no truthy strings or ints."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    """``value`` when it is one of ``options``; the message lists them (None as ``None``)."""
    allowed = tuple(options)
    try:
        ok = (value is None and None in allowed) or (
            not isinstance(value, bool) and value is not None and value in allowed
        )
    except (TypeError, ValueError):  # unhashable or array-like values compare badly
        ok = False
    if not ok:
        names = ", ".join(repr(a) for a in allowed)
        raise InputError(f"{name}={value!r} is unknown; use one of {names}")
    return value


def pair(name: str, value: Any, *, example: Any = None) -> tuple[int, int]:
    """An int or a pair of ints, each >= 1, as ``(rows, cols)`` (a window, a stride)."""
    items: Sequence[Any] = (value, value) if is_int(value) else value
    if (
        not isinstance(items, (tuple, list))
        or len(items) != 2
        or not all(is_int(v) and v >= 1 for v in items)
    ):
        raise InputError(
            f"{name} must be a positive int or a pair of them (rows, cols), got {value!r}"
            f"{_example(name, example or 8)}"
        )
    return int(items[0]), int(items[1])


def seed(value: Any, *, name: str = "seed") -> int:
    """A non-negative int seed; ``None`` draws a fresh one (record it in ``meta`` so the run
    can be repeated)."""
    if value is None:
        return secrets.randbits(32)
    if not is_int(value) or value < 0:
        raise InputError(f"{name} must be a non-negative int or None, got {value!r}; pass e.g. 0")
    return int(value)
