"""What explain_dataset and embed_dataset settle before the first shard: the model (built once
here, for its identity and the shape probe), the source, the input shape every input must have,
and the shard size."""

from __future__ import annotations

import datetime
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter
from innersight.core.errors import InputError
from innersight.dataset.modelref import ModelRef, model_identity, model_ref
from innersight.dataset.sources import (
    IndexedSource,
    RayDatasetSource,
    Sample,
    Source,
    StreamSource,
    open_source,
)
from innersight.dataset.stage import ENGINES
from innersight.dataset.work import Job

__all__ = ["Prepared", "prepare"]

SHARD_BYTES = 1 << 26  # inputs per shard: 64 MiB of float32 images, 64 to 4096 of them
CHUNK_BYTES = 1 << 24  # inputs per explain/forward call: 16 MiB, at most 256
PROBE = 64  # inputs tried for the shape when the model does not declare one


@dataclass
class Prepared:
    ref: ModelRef
    model: Any
    adapter: ModelAdapter
    source: Source
    expected: tuple[int, ...]
    size: int
    chunk: int
    identity: dict[str, Any]
    stream: Iterator[Sample] | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What a rerun must share with this run to reuse its shards."""
        return {
            "model": self.identity,
            "source": self.source.describe(),
            "input_shape": list(self.expected),
            "batch_size": self.size,
            "labelled": self.source.labelled,
        }

    def job(self, kind: str, out: Path, subdir: str, **fields: Any) -> Job:
        """The Job of a sharded pass writing to ``out/subdir`` (created here)."""
        (out / subdir).mkdir(exist_ok=True)
        return Job(
            kind=kind,
            model=self.ref,
            folder=str((out / subdir).resolve()),
            subdir=subdir,
            expected=self.expected,
            chunk=self.chunk,
            source=self.source if isinstance(self.source, IndexedSource) else None,
            labelled=self.source.labelled,
            **fields,
        )

    def info(self, engine: str, workers: int | None) -> dict[str, Any]:
        from innersight.api import versions

        return {
            "engine": engine,
            "workers": workers,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "versions": versions(self.adapter.backend),
        }


def _need_pyarrow() -> None:
    from innersight.core import MissingDependencyError

    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"data-set runs write Parquet through pyarrow, which could not be imported ({err}); "
            "install it with pip install 'innersight[dataset]'"
        ) from err


def _check_engine(engine: Any, workers: Any) -> None:
    if engine not in ENGINES:
        raise InputError(
            f"engine={engine!r} is unknown; use one of {', '.join(map(repr, ENGINES))}"
        )
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0
    ):
        raise InputError(f"workers must be None or a count >= 0, got {workers!r}")


def _size(batch_size: Any, expected: tuple[int, ...]) -> tuple[int, int]:
    per = 4 * int(np.prod(expected))
    chunk = int(max(1, min(256, CHUNK_BYTES // per)))
    if batch_size == "auto":
        return int(max(64, min(4096, SHARD_BYTES // per))), chunk
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise InputError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
    return int(batch_size), min(chunk, int(batch_size))


def _probe(
    source: Source, adapter: ModelAdapter
) -> tuple[tuple[int, ...], Iterator[Sample] | None]:
    """The input shape: the model's when it declares one, else the most common shape among the
    first :data:`PROBE` readable inputs (so one odd input first in line does not set it)."""
    declared = adapter.input_shape
    if declared is not None and all(d is not None for d in declared):
        return tuple(int(d) for d in declared if d is not None), None
    if isinstance(source, IndexedSource):
        samples: Any = source.read(0, min(len(source), PROBE), adapter)
        stream = None
    elif isinstance(source, RayDatasetSource):
        from innersight.dataset.sources import as_samples

        samples = as_samples(source.ds.take_batch(PROBE, batch_format="numpy"), 0, 0)
        stream = None
    else:
        assert isinstance(source, StreamSource)
        it = source.samples()
        samples = list(itertools.islice(it, PROBE))
        stream = itertools.chain(samples, it)
    shapes = Counter(
        tuple(int(d) for d in np.shape(s.x))
        for s in samples
        if s.x is not None and s.error is None and np.ndim(s.x) >= 1
    )
    if shapes:
        return shapes.most_common(1)[0][0], stream
    raise InputError(
        f"none of the first {len(samples)} inputs of the source could be read; the first "
        f"failed with: {samples[0].error if samples else 'the source is empty'}"
    )


def prepare(
    model: Any,
    source: Any,
    *,
    engine: str,
    workers: int | None,
    batch_size: Any,
) -> Prepared:
    """Check the arguments, build the model once, open the source and probe the input shape."""
    _check_engine(engine, workers)
    _need_pyarrow()
    ref = model_ref(model)
    built = ref.load()
    adapter = ref.adapter(built)
    src = open_source(source)
    expected, stream = _probe(src, adapter)
    size, chunk = _size(batch_size, expected)
    identity = model_identity(ref, built, adapter)
    return Prepared(ref, built, adapter, src, expected, size, chunk, identity, stream)


def resolve_out(out: Any) -> Path:
    if out is None:
        raise InputError("out is required: a folder for the Parquet shards and the manifest")
    return Path(out)
