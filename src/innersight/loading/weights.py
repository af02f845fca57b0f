"""Weights into a built model: a torch ``state_dict`` (``weights_only``) or Keras weights."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from innersight.core.errors import InputError
from innersight.core.frameworks import is_torch

__all__ = ["apply_weights", "first_line"]

_SIZE_MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): .*?torch\.Size\(\[([\d, ]*)\]\).*?torch\.Size\(\[([\d, ]*)\]\)"
)


def first_line(err: BaseException) -> str:
    """``"ValueError: <first line>"``, short enough for an error message."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines and lines[0].endswith(":") else "".join(lines[:1])
    text = text.split(" Target variable:")[0]  # Keras appends the whole tensor
    return f"{type(err).__name__}: {text[:300]}{' ...' if len(text) > 300 else ''}"


def apply_weights(model: Any, weights: str | Path, *, allow_pickle: bool = False) -> None:
    """Load a torch ``state_dict`` file or Keras weights file into ``model`` (in place)."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(f"weights file {str(weights)!r} does not exist")
    if is_torch(model):  # Keras-on-torch models are nn.Modules too: they load Keras weights
        _torch_weights(sys.modules["torch"], model, path, allow_pickle)
        return
    try:
        model.load_weights(str(path))
    except Exception as err:
        raise InputError(
            f"could not load Keras weights {path.name!r} into model {model.name!r}: "
            f"{first_line(err)}; pass a .weights.h5 file saved from the same architecture"
        ) from err


def _torch_weights(torch: Any, model: Any, path: Path, allow_pickle: bool) -> None:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:
        hint = "; save model.state_dict() with torch.save, or pass --unsafe for a trusted pickle"
        raise InputError(f"could not read weights {path.name!r}: {first_line(err)}{hint}") from err
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise InputError(
            f"weights {path.name!r} hold a {type(state).__name__}, expected a state_dict "
            "(torch.save(model.state_dict(), path))"
        )
    result = _load_state(model, state, path)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(_mismatch(path, model, result.missing_keys, result.unexpected_keys))


def _load_state(model: Any, state: Mapping[str, Any], path: Path) -> Any:
    try:
        return model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches
        found = _SIZE_MISMATCH.findall(str(err))
        shown = [
            f"{k}: file {list(map(int, a.split(', ')))}, model {list(map(int, b.split(', ')))}"
            for k, a, b in found[:5]
        ]
        more = f"; ... ({len(found) - 5} more)" if len(found) > 5 else ""
        raise InputError(
            f"weights {path.name!r} do not fit {type(model).__name__}, shapes differ: "
            f"{'; '.join(shown) + more if shown else first_line(err)}; were they saved from "
            "the same architecture?"
        ) from err


def _mismatch(path: Path, model: Any, missing: list[str], unexpected: list[str]) -> str:
    def names(keys: list[str]) -> str:
        return ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {names(unexpected)}")
    return (
        f"weights {path.name!r} do not match {type(model).__name__} ({'; '.join(parts)}); "
        "were they saved from the same architecture (a 'module.' prefix from DataParallel?)"
    )
