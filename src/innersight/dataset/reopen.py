"""The source of a finished run, opened again from its manifest (to show inputs in reports)."""

from __future__ import annotations

from typing import Any

from innersight.core.errors import InputError
from innersight.dataset.sources import ArrayFile, IndexedSource

__all__ = ["reopen"]


def reopen(fingerprint: dict[str, Any]) -> IndexedSource:
    """The indexed source described in ``fingerprint["source"]``, read at the run's input shape.

    Raises:
        InputError: the source was not a file or folder (its inputs were not kept).
    """
    from innersight.dataset.files import ImageFolder, ParquetSource

    desc = dict(fingerprint.get("source", {}))
    shape = fingerprint.get("input_shape") or [None, None, None]
    size = tuple(shape[:2]) if None not in shape[:2] else None
    channels = shape[2] if len(shape) == 3 else None
    options: dict[str, Any] = {k: desc.get(k) for k in ("scale", "mean", "std")}
    kind = desc.get("kind")
    if kind == "folder":
        return ImageFolder(desc["path"], size=size, channels=channels, **options)
    if kind == "parquet":
        return ParquetSource(
            desc["path"], column=desc.get("column"), size=size, channels=channels, **options
        )
    if kind == "array file":
        return ArrayFile(desc["path"])
    raise InputError(
        f"the inputs of a {kind or 'unknown'} source are not kept by the run; read them from "
        "your source by id (the 'position' column gives each row's place in it)"
    )
