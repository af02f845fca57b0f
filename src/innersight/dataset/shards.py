"""Parquet parts: columns in, bytes out (atomically written, checksummed), and back to numpy.

Arrays of more than one axis per row are stored as Arrow's canonical fixed-shape tensor
extension type (``arrow.fixed_shape_tensor``), which pyarrow reads back with
``to_numpy_ndarray()`` and pandas as one array per row. The run's facts (technique,
parameters) are stored in the schema metadata under ``innersight``. A part holds nothing
that changes from one run to the next (no timings), so the same inputs give byte-identical
files on every engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.technique import to_jsonable
from innersight.dataset.outdir import atomic_write

__all__ = ["column_numpy", "encode", "read_meta", "read_table", "write_part"]

META_KEY = b"innersight"


def _arrow(values: Any) -> Any:
    import pyarrow as pa

    if isinstance(values, np.ndarray) and values.ndim > 1:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
    if isinstance(values, np.ndarray):
        return pa.array(values)
    return pa.array(list(values))


def encode(columns: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """One Parquet file (zstd) holding ``columns`` and ``meta`` (JSON) as schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: _arrow(values) for name, values in columns.items()})
    table = table.replace_schema_metadata({META_KEY: json.dumps(to_jsonable(meta)).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def write_part(path: Path, columns: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Write a part atomically; returns the SHA-256 of its bytes."""
    data = encode(columns, meta)
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def read_table(path: Path, columns: Sequence[str] | None = None) -> Any:
    """The part as a ``pyarrow.Table`` (only ``columns`` when given)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path), columns=list(columns) if columns is not None else None)


def read_meta(path: Path) -> dict[str, Any]:
    """The ``innersight`` schema metadata of a part."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(str(path)).metadata or {}
    return dict(json.loads(meta[META_KEY])) if META_KEY in meta else {}


def column_numpy(table: Any, name: str) -> np.ndarray:
    """A column as numpy: tensor columns as (N, ...) arrays, others as 1-D arrays."""
    col = table.column(name).combine_chunks()
    if hasattr(col, "to_numpy_ndarray"):
        return np.asarray(col.to_numpy_ndarray())
    return np.asarray(col.to_numpy(zero_copy_only=False))
