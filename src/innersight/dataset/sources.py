"""Where the inputs of a data-set run come from, one :class:`Sample` (id, image, label) at a time.

Two kinds of source:

- :class:`IndexedSource` (a folder of images, ``.npy``/``.npz``, an array, a Parquet data set):
  its length is known and any slice can be read by position, so every worker reads its own
  shard and the driver only hands out ``(start, stop)`` ranges.
- :class:`StreamSource` (an iterable of batches, a ``ray.data.Dataset`` on the local engine):
  read once, in order, by the driver, which cuts the stream into shards.

An input that cannot be read becomes a Sample with ``error`` set (the run records it and goes
on); a mistake about the source as a whole (a missing path, integer pixels) is an InputError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InnersightError, InputError

__all__ = [
    "ArraySource",
    "IndexedSource",
    "IterableSource",
    "Sample",
    "Source",
    "StreamSource",
    "as_samples",
    "is_ray_dataset",
    "open_source",
    "reason",
]

IMAGE_KEYS = ("image", "images", "x", "inputs", "array")
LABEL_KEYS = ("label", "labels", "y", "target", "targets")


@dataclass
class Sample:
    """One input: ``x`` float32 (H, W, C), or None with ``error`` saying why it was skipped."""

    id: str
    x: np.ndarray | None
    label: Any = None
    error: str | None = None
    position: int | None = None


def reason(err: BaseException) -> str:
    """An exception as one line for the manifest (innersight's own messages as they are)."""
    text = str(err) if isinstance(err, InnersightError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())[:500]


class Source:
    """Base of every source: ``describe()`` (JSON, for the manifest) and ``labelled``."""

    kind = "source"
    labelled = False

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


class IndexedSource(Source):
    """A source with a length whose slices any worker can read by position."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int, model: Any = None) -> list[Sample]:
        """Samples ``start`` to ``stop`` (``model``: an adapter whose input size applies)."""
        raise NotImplementedError


class StreamSource(Source):
    """A source read once, in order, by the driver."""

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError


def _float_rows(arr: Any, what: str) -> None:
    dtype = np.dtype(arr.dtype)
    if dtype.kind != "f":
        raise InputError(
            f"{what} has dtype {dtype}; innersight takes floating-point images, scaled the way "
            "the model was trained: convert first, e.g. x.astype('float32') / 255"
        )
    if len(arr.shape) != 4:
        raise InputError(
            f"{what} has shape {tuple(arr.shape)}; expected a batch of channels-last images "
            "(N, H, W, C) (grayscale (N, H, W): add the channel axis with x[..., None])"
        )


class ArraySource(IndexedSource):
    """An in-memory array (N, H, W, C), with optional labels; ids are the row numbers."""

    kind = "array"

    def __init__(self, x: np.ndarray, labels: Sequence[Any] | None = None) -> None:
        _float_rows(x, "the array")
        self.x = x
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and self.labels.shape[:1] != (len(x),):
            raise InputError(
                f"labels have shape {self.labels.shape} for {len(x)} images; pass one per image"
            )
        self.labelled = self.labels is not None

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.x.shape), "dtype": str(self.x.dtype)}

    def read(self, start: int, stop: int, model: Any = None) -> list[Sample]:
        rows = np.asarray(self.x[start:stop], dtype=np.float32)
        labels = self.labels[start:stop].tolist() if self.labels is not None else None
        return [
            Sample(str(start + i), row, None if labels is None else labels[i], None, start + i)
            for i, row in enumerate(rows)
        ]


class ArrayFile(ArraySource):
    """A ``.npy`` (memory-mapped: never read whole) or ``.npz`` file of images (N, H, W, C).

    A ``.npz`` holds the images under its only key or one of ``image(s)``, ``x``, ``inputs``,
    and labels under ``label(s)``, ``y`` or ``target(s)``; its members cannot be mapped, so each
    worker reads the images array once.
    """

    kind = "array file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        x, labels = self._load()
        super().__init__(x, labels)

    def _load(self) -> tuple[Any, Any]:
        try:
            if self.path.suffix.lower() == ".npy":
                return np.load(self.path, mmap_mode="r", allow_pickle=False), None
            with np.load(self.path, allow_pickle=False) as data:
                keys = list(data.files)
                images = [k for k in keys if k in IMAGE_KEYS] or (keys if len(keys) == 1 else [])
                if not images:
                    raise InputError(
                        f"{str(self.path)!r} holds arrays {keys}; name the images one of "
                        f"{', '.join(IMAGE_KEYS)} (and labels one of {', '.join(LABEL_KEYS)})"
                    )
                found = [k for k in keys if k in LABEL_KEYS]
                return data[images[0]], (data[found[0]] if found else None)
        except (OSError, ValueError, EOFError) as err:
            raise InputError(f"could not read array file {str(self.path)!r}: {err}") from err

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # workers map/read the file themselves

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "shape": list(self.x.shape)}


def as_samples(batch: Any, first: int, index: int) -> list[Sample]:
    """One batch of an iterable source: (ids, x), (ids, x, labels) or a mapping of columns."""
    if isinstance(batch, Mapping):
        ids = batch.get("id")
        key = next((k for k in IMAGE_KEYS if k in batch), None)
        x = batch.get(key) if key else None
        lab = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        ids, x, lab = batch[0], batch[1], batch[2] if len(batch) == 3 else None
    else:
        ids = x = lab = None
    if ids is None or x is None:
        raise InputError(
            f"batch {index} of the source is a {type(batch).__name__}; yield (ids, x) or "
            "(ids, x, labels) tuples, or mappings {'id': ..., 'image': ..., 'label': ...}"
        )
    ids = [str(i) for i in np.asarray(ids).tolist()]
    rows = list(x) if isinstance(x, (list, tuple)) else list(np.asarray(x))
    labels = [None] * len(ids) if lab is None else list(np.asarray(lab).tolist())
    if not len(rows) == len(ids) == len(labels):
        raise InputError(
            f"batch {index} of the source has {len(ids)} ids, {len(rows)} images and "
            f"{len(labels)} labels; give one of each per input"
        )
    return [
        Sample(i, np.asarray(r), lab, None, first + k)
        for k, (i, r, lab) in enumerate(zip(ids, rows, labels, strict=True))
    ]


class IterableSource(StreamSource):
    """An iterable of batches ``(ids, x)``, ``(ids, x, labels)`` or column mappings."""

    kind = "iterable"

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "type": type(self.batches).__name__}

    def samples(self) -> Iterator[Sample]:
        position = 0
        for index, batch in enumerate(self.batches):
            rows = as_samples(batch, position, index)
            position += len(rows)
            yield from rows


class RayDatasetSource(StreamSource):
    """A ``ray.data.Dataset`` with an ``id`` column, an image column and optionally labels.

    The local engine reads it in order through ``iter_batches``; the Ray engine maps its
    batches on the cluster directly (see :mod:`innersight.dataset.engine_ray`).
    """

    kind = "ray dataset"

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        names = list(ds.schema().names)
        if "id" not in names or not any(k in names for k in IMAGE_KEYS):
            raise InputError(
                f"the ray.data.Dataset has columns {names}; it needs an 'id' column and an "
                f"image column named one of {', '.join(IMAGE_KEYS)}"
            )
        self.labelled = any(k in names for k in LABEL_KEYS)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": list(self.ds.schema().names)}

    def samples(self) -> Iterator[Sample]:
        from ray.data import DataContext

        DataContext.get_current().execution_options.preserve_order = True
        position = 0
        batches = self.ds.iter_batches(batch_size=1024, batch_format="numpy")
        for index, batch in enumerate(batches):
            rows = as_samples(batch, position, index)
            position += len(rows)
            yield from rows


def is_ray_dataset(obj: Any) -> bool:
    """True for a ``ray.data.Dataset`` (checked without importing Ray)."""
    return any(
        c.__module__.startswith("ray.data") and c.__name__ == "Dataset" for c in type(obj).__mro__
    )


def open_source(source: Any) -> Source:
    """The Source for a folder, a file, an array, ``(x, labels)``, an iterable or a Ray data set."""
    from innersight.dataset import files

    if isinstance(source, Source):
        return source
    if isinstance(source, (str, Path)):
        return files.open_path(source)
    if isinstance(source, np.ndarray):
        return ArraySource(source)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], np.ndarray):
        return ArraySource(source[0], source[1])
    if is_ray_dataset(source):
        return RayDatasetSource(source)
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        return IterableSource(source)
    raise InputError(
        f"source is a {type(source).__name__}; pass a folder of images, a .npy/.npz file, a "
        "Parquet data set, an array (N, H, W, C), an iterable of (ids, x) batches or a "
        "ray.data.Dataset"
    )
