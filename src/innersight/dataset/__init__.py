"""Data-set scale: explain or embed every input of a data set, on this machine or on Ray.

    >>> run = innersight.explain_dataset("saliency", model, "images/", out="out/saliency")
    >>> run.summary()["failed"], run.to_numpy(["cat/1.png"]).shape

Results are Parquet shards plus ``manifest.json`` in ``out`` (see :mod:`.manifest`); reruns
resume. Importing this package imports neither Ray nor pyarrow; they are loaded when a run
starts (pyarrow) or when ``engine="ray"`` is asked for.
"""

from __future__ import annotations

from innersight.dataset.embed import embed_dataset
from innersight.dataset.explain import explain_dataset
from innersight.dataset.files import ImageFolder, ParquetSource
from innersight.dataset.run import DatasetRun
from innersight.dataset.sources import ArraySource, IterableSource

__all__ = [
    "ArraySource",
    "DatasetRun",
    "ImageFolder",
    "IterableSource",
    "ParquetSource",
    "embed_dataset",
    "explain_dataset",
]
