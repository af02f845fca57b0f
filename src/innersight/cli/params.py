"""``--param key=value`` text to the Python values a technique's signature asks for.

The annotation of each keyword-only parameter of ``Technique.explain`` decides the conversion:

===========================  ============================  =================================
annotation                   text                          value
===========================  ============================  =================================
``int``, ``float``           ``3``, ``0.5``, ``1/127.5``   ``3``, ``0.5``, ``0.00784...``
``bool``                     ``true``/``false``/yes/no     ``True``/``False``
``str``                      ``max``                       ``"max"``
``None`` in a union          ``none`` / ``null``           ``None``
``list[int]``, Sequence      ``1,2,3`` (or ``[1,2,3]``)    ``[1, 2, 3]``
``tuple[int, int]``          ``5,7``                       ``(5, 7)``
``int | str``                ``auto`` / ``8``              ``"auto"`` / ``8``
``np.ndarray``               ``baseline.npy``              the array in the file
no annotation / ``Any``      inferred from the default, else a number, bool, none or text
===========================  ============================  =================================

Union members are tried in that order: none, bool, literals, int, float, comma-separated
sequences, arrays from ``.npy`` files, text; a sequence takes a single item last.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np

from innersight.api import check_params
from innersight.cli.common import parse_number
from innersight.core.errors import InputError
from innersight.core.technique import Technique

__all__ = ["convert", "convert_params", "parse_assignments", "resolve_annotation"]

_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")
_NONE = ("none", "null")
_SEQUENCES = (list, tuple, Sequence, typing.Sequence, set, frozenset)


class _NoMatch(Exception):
    """The text does not convert to this member of the annotation."""


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``["steps=32", "target=3"]`` -> ``{"steps": "32", "target": "3"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"--param {item!r} is not key=value; write e.g. --param steps=32")
        if key in out:
            raise InputError(f"--param {key} is given twice ({out[key]!r} and {value!r})")
        out[key] = value.strip()
    return out


def convert_params(technique: Technique, raw: Mapping[str, str]) -> dict[str, Any]:
    """Convert text values for ``technique``; unknown keys raise InputError listing valid ones."""
    check_params(technique, raw)
    params = technique.parameters()
    out = {}
    for key, text in raw.items():
        param = params[key]
        ann = param.annotation
        spelled = None if ann is inspect.Parameter.empty else str(getattr(ann, "__name__", ann))
        out[key] = convert(
            text,
            resolve_annotation(technique, param),
            param.default,
            name=key,
            spelled=spelled if isinstance(ann, str) else None,
        )
    return out


def resolve_annotation(technique: Technique, param: inspect.Parameter) -> Any:
    """The parameter's annotation as an object (postponed string annotations evaluated in the
    technique's module); ``Any`` when it cannot be evaluated."""
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return Any
    if not isinstance(ann, str):
        return ann
    module = sys.modules.get(type(technique).explain.__module__)
    namespace = {**vars(typing), "np": np, "numpy": np, **(vars(module) if module else {})}
    try:
        return eval(ann, namespace)  # the module's own annotation text, as typing does
    except Exception:
        return Any


def convert(
    text: str,
    annotation: Any,
    default: Any = inspect.Parameter.empty,
    *,
    name: str = "value",
    spelled: str | None = None,
) -> Any:
    """Convert one text value to ``annotation``; InputError saying what was expected.

    ``spelled`` is the annotation as written in the source, for the error message.
    """
    members = _members(annotation)
    if members == [Any]:
        members = _members(_infer(default))
    special = (str, np.ndarray, Any)
    scalars = [m for m in members if not _is_sequence(m) and m not in special]
    sequences = [m for m in members if _is_sequence(m)]
    order = [*scalars]
    if "," in text:
        order += sequences
    order += [m for m in members if m is np.ndarray] + [m for m in members if m is str]
    order += [m for m in sequences if m not in order] + [m for m in members if m is Any]
    for member in order:
        try:
            return _convert_member(text, member)
        except _NoMatch:
            continue
    possible = [_describe(m) for m in members if _writable(m)]
    if not possible:
        raise InputError(
            f"--param {name}: this parameter cannot be set on the command line"
            f"{_signature_note(spelled or annotation, default)}; use the Python API"
        )
    raise InputError(
        f"--param {name}={text!r}: expected {' or '.join(possible)}"
        f"{_signature_note(spelled or annotation, default)}"
    )


def _writable(member: Any) -> bool:
    return (
        member in (int, float, bool, str, type(None), np.ndarray, Any)
        or get_origin(member) is Literal
        or _is_sequence(member)
    )


def _members(annotation: Any) -> list[Any]:
    if annotation is None or annotation is type(None):
        return [type(None)]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _infer(default: Any) -> Any:
    """For unannotated parameters: the default's type, or any plain value."""
    if default is inspect.Parameter.empty or default is None:
        # a type object built at runtime for the parser, not an annotation
        return Union[None, bool, int, float, list[Any], str]  # noqa: UP007
    if isinstance(default, (list, tuple)):
        return list[Any]
    if isinstance(default, (bool, int, float, str)):
        return Union[type(default), None]  # noqa: UP007
    return Any


def _is_sequence(member: Any) -> bool:
    return get_origin(member) in _SEQUENCES or member in _SEQUENCES


def _convert_member(text: str, member: Any) -> Any:
    low = text.strip().lower()
    if member is type(None):
        if low in _NONE:
            return None
        raise _NoMatch
    if member is bool:
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise _NoMatch
    if get_origin(member) is Literal:
        for choice in get_args(member):
            if str(choice) == text.strip():
                return choice
        raise _NoMatch
    if member is int:
        return _int(text)
    if member is float:
        return _float(text)
    if member is str or member is Any:
        return text if member is str else _any(text)
    if _is_sequence(member):
        return _sequence(text, member)
    if member is np.ndarray:
        return _array(text)
    raise _NoMatch  # Callable and other types cannot be written on a command line


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _NoMatch from None


def _float(text: str) -> float:
    try:
        return parse_number(text)
    except ValueError:
        raise _NoMatch from None


def _any(text: str) -> Any:
    for member in (type(None), bool, int, float):
        try:
            return _convert_member(text, member)
        except _NoMatch:
            pass
    if "," in text:
        return _sequence(text, list[Any])
    return text


def _sequence(text: str, member: Any) -> Any:
    body = text.strip()
    if body[:1] + body[-1:] in ("[]", "()"):
        body = body[1:-1]
    parts = [p.strip() for p in body.split(",")] if body.strip() else []
    args = get_args(member)
    origin = get_origin(member) or member
    try:
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise _NoMatch
            return tuple(convert(p, a) for p, a in zip(parts, args, strict=True))
        values = [convert(p, args[0] if args else Any) for p in parts]
    except InputError:
        raise _NoMatch from None
    return tuple(values) if origin is tuple else values


def _array(text: str) -> np.ndarray:
    path = Path(text.strip()).expanduser()
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise _NoMatch
    return np.load(path, allow_pickle=False)


def _describe(member: Any) -> str:
    names = {
        int: "an integer",
        float: "a number (or a fraction such as 1/127.5)",
        bool: "true or false",
        str: "text",
        type(None): "none",
        np.ndarray: "a .npy file",
        Any: "a value",
    }
    if member in names:
        return names[member]
    if get_origin(member) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(member))
    if _is_sequence(member):
        args = get_args(member)
        if get_origin(member) is tuple and args and args[-1] is not Ellipsis:
            return f"{len(args)} comma-separated values ({', '.join(_describe(a) for a in args)})"
        return f"comma-separated values ({_describe(args[0] if args else Any)} each)"
    return str(getattr(member, "__name__", member))


def _signature_note(annotation: Any, default: Any) -> str:
    shown = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    note = f" (annotation: {shown}"
    if default is not inspect.Parameter.empty:
        note += f", default: {default!r}"
    return note + ")"
