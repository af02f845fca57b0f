"""Sources on disk: a folder of images (recursive) and a Parquet data set.

Image files are read one by one through :func:`innersight.loading.read_inputs` (Pillow, with
its refusal of truncated files and decompression bombs), so a hostile or broken file costs
only its own row: its id and the reason are recorded, and the run goes on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.dataset.sources import (
    IMAGE_KEYS,
    LABEL_KEYS,
    ArrayFile,
    IndexedSource,
    Sample,
    Source,
    reason,
)

__all__ = ["ImageFolder", "ParquetSource", "open_path"]

Numbers = float | Sequence[float] | None


class _Preprocess:
    """The options of :func:`innersight.loading.read_inputs` for image files."""

    def __init__(
        self,
        size: int | tuple[int, int] | None,
        channels: int | None,
        scale: float | None,
        mean: Numbers,
        std: Numbers,
    ) -> None:
        self.options: dict[str, Any] = {
            "size": size,
            "channels": channels,
            "scale": scale,
            "mean": mean,
            "std": std,
        }

    def load(self, path: Path, model: Any) -> np.ndarray:
        from innersight.loading import read_inputs

        x, _ = read_inputs([path], model=model, **self.options)
        return x[0]


class ImageFolder(IndexedSource, _Preprocess):
    """Every image file under ``path`` (recursive, sorted); ids are paths relative to it.

    When every file lies in a subfolder, the first folder of its path is its label (the
    ``class/image.png`` layout). The other arguments are those of
    :func:`innersight.loading.load_images`; size and channels default to the model's.
    """

    kind = "folder"

    def __init__(
        self,
        path: str | Path,
        *,
        size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        scale: float | None = None,
        mean: Numbers = None,
        std: Numbers = None,
    ) -> None:
        _Preprocess.__init__(self, size, channels, scale, mean, std)
        self.path = Path(path).expanduser().resolve()
        self.files = _image_files(self.path)
        if not self.files:
            raise InputError(f"folder {str(path)!r} holds no image files (searched recursively)")
        self.labelled = all("/" in f for f in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict[str, Any]:
        options = {k: v for k, v in self.options.items() if v is not None}
        return {"kind": self.kind, "path": str(self.path), "count": len(self), **options}

    def read(self, start: int, stop: int, model: Any = None) -> list[Sample]:
        out = []
        for position in range(start, min(stop, len(self.files))):
            rel = self.files[position]
            label = rel.split("/", 1)[0] if self.labelled else None
            try:
                x = self.load(self.path / rel, model)
            except Exception as err:  # one bad file never stops the run
                out.append(Sample(rel, None, label, reason(err), position))
            else:
                out.append(Sample(rel, x, label, None, position))
        return out


def _image_files(root: Path) -> list[str]:
    from innersight.loading.images import IMAGE_SUFFIXES

    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        found += [
            (rel / n).as_posix()
            for n in names
            if Path(n).suffix.lower() in IMAGE_SUFFIXES and not n.startswith(".")
        ]
    return sorted(found)


_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


class ParquetSource(IndexedSource, _Preprocess):
    """A Parquet file or folder of files (``pyarrow.dataset``) with one image per row.

    The image column (``column``, default the first of ``image``, ``images``, ``x``,
    ``inputs``, ``array``) holds encoded image files (binary: PNG, JPEG, ...) or arrays (a
    fixed-shape tensor or nested lists, taken as they are). Ids come from ``id_column`` (row
    numbers when absent); labels from ``label_column`` (default ``label``/``y``/... if any).
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | Path,
        *,
        column: str | None = None,
        id_column: str = "id",
        label_column: str | None = None,
        size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        scale: float | None = None,
        mean: Numbers = None,
        std: Numbers = None,
    ) -> None:
        _Preprocess.__init__(self, size, channels, scale, mean, std)
        self.args = {"column": column, "id_column": id_column, "label_column": label_column}
        self.path = Path(path).expanduser().resolve()
        self._open()

    def _open(self) -> None:
        import pyarrow.dataset as pads

        try:
            self._ds = pads.dataset(str(self.path), format="parquet")
            names = list(self._ds.schema.names)
            self._n = int(self._ds.count_rows())
        except Exception as err:
            raise InputError(f"could not read Parquet data {str(self.path)!r}: {err}") from err
        column = self.args["column"] or next((k for k in IMAGE_KEYS if k in names), None)
        if column not in names:
            raise InputError(
                f"Parquet data {str(self.path)!r} has columns {names}; name the image column "
                f"with column=... (default: one of {', '.join(IMAGE_KEYS)})"
            )
        label = self.args["label_column"] or next((k for k in LABEL_KEYS if k in names), None)
        self.column, self.label_column = column, label if label in names else None
        self.id_column = self.args["id_column"] if self.args["id_column"] in names else None
        self.labelled = self.label_column is not None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "args": self.args, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.args, self.options = state["path"], state["args"], state["options"]
        self._open()

    def __len__(self) -> int:
        return self._n

    def describe(self) -> dict[str, Any]:
        options = {k: v for k, v in self.options.items() if v is not None}
        return {
            "kind": self.kind,
            "path": str(self.path),
            "count": self._n,
            "column": self.column,
            **options,
        }

    def read(self, start: int, stop: int, model: Any = None) -> list[Sample]:
        import pyarrow as pa

        stop = min(stop, self._n)
        columns = [c for c in (self.column, self.id_column, self.label_column) if c]
        table = self._ds.take(pa.array(np.arange(start, stop)), columns=columns)
        ids = _column(table, self.id_column) or [str(i) for i in range(start, stop)]
        labels = _column(table, self.label_column) or [None] * (stop - start)
        images = table.column(self.column).combine_chunks()
        arrays = images.to_numpy_ndarray() if hasattr(images, "to_numpy_ndarray") else None
        out = []
        for k in range(stop - start):
            try:
                x = arrays[k] if arrays is not None else self._row(images[k].as_py(), model)
                out.append(Sample(str(ids[k]), np.asarray(x), labels[k], None, start + k))
            except Exception as err:  # one bad row never stops the run
                out.append(Sample(str(ids[k]), None, labels[k], reason(err), start + k))
        return out

    def _row(self, value: Any, model: Any) -> np.ndarray:
        if isinstance(value, (bytes, bytearray)):
            return self._decode(bytes(value), model)
        return np.asarray(value, dtype=np.float32)

    def _decode(self, data: bytes, model: Any) -> np.ndarray:
        """An encoded image, read by the same loader as image files (a temporary file)."""
        suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), ".img")
        with tempfile.TemporaryDirectory(prefix="innersight-") as tmp:
            path = Path(tmp) / f"image{suffix}"
            path.write_bytes(data)
            return self.load(path, model)


def _column(table: Any, name: str | None) -> list[Any] | None:
    return None if name is None else table.column(name).to_pylist()


def open_path(source: str | Path) -> Source:
    """The source for a path: a folder (images, or Parquet files), ``.npy``/``.npz`` or
    ``.parquet``."""
    path = Path(source).expanduser()
    if path.is_dir():
        parquet = any(p.suffix == ".parquet" for p in path.rglob("*.parquet"))
        return ParquetSource(path) if parquet and not _image_files(path) else ImageFolder(path)
    if not path.is_file():
        raise InputError(f"source {str(source)!r} does not exist; pass a folder or a file")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return ArrayFile(path)
    if suffix == ".parquet":
        return ParquetSource(path)
    raise InputError(
        f"source {str(source)!r} is not a data set; pass a folder of images, a .npy/.npz array "
        "file or a Parquet file (for a few images, use innersight.explain or innersight run)"
    )
