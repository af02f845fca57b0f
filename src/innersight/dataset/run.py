"""``DatasetRun``: the results of a data-set run, read lazily from its ``out`` folder.

Nothing is loaded until asked for: ``ids()`` reads one column, ``to_numpy(ids)`` only the parts
holding those ids, ``iter_batches()`` one Parquet batch at a time. The folder is plain Parquet
plus ``manifest.json``, so pandas, pyarrow, DuckDB or Spark read it as well::

    run = innersight.DatasetRun("out")
    df = run.to_table(["id", "prediction", "score"]).to_pandas()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.dataset.manifest import Manifest, file_sha256
from innersight.dataset.shards import column_numpy, read_table

__all__ = ["DatasetRun"]

TABLES = ("main", "features")


class DatasetRun:
    """The results in ``out`` of :func:`innersight.explain_dataset` or
    :func:`innersight.embed_dataset`.

    The main table of an explanation run has the columns ``id``, ``position`` (in the source),
    ``label`` (when the source has labels), ``target``, ``prediction``, ``score`` and
    ``values`` (a tensor per input); that of an embedding ``id``, ``label``, ``prediction``,
    ``x``, ``y`` and ``pca``. An embedding also keeps its layer's ``features`` (table
    ``"features"``).
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out).expanduser()
        manifest = Manifest.load(self.out)
        if manifest is None:
            raise InputError(
                f"{str(out)!r} holds no manifest.json; pass the out folder of explain_dataset or "
                "embed_dataset"
            )
        self.manifest = manifest
        self._indexes: dict[str, dict[str, tuple[int, int]]] = {}

    # -- what the run is -----------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"explain"`` or ``"embed"``."""
        return self.manifest.kind

    @property
    def technique(self) -> str:
        return str(self.manifest.fingerprint.get("technique", "embeddings"))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest.fingerprint.get("params", {}))

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def failures(self) -> list[tuple[str, str]]:
        """``(id, reason)`` of every input that was skipped, in source order."""
        return self.manifest.failures()

    def parts(self, table: str = "main") -> list[Path]:
        """The Parquet files of ``table`` (``"main"`` or ``"features"``), in source order."""
        if table not in TABLES:
            raise InputError(f"table={table!r} is unknown; use one of {', '.join(TABLES)}")
        if self.kind == "embed" and table == "main":
            return [
                self.out / p["file"] for p in self.manifest.stages.get("map", {}).get("parts", [])
            ]
        if self.kind == "explain" and table == "features":
            raise InputError("an explanation run has no features table; use table='main'")
        return [self.out / r.file for r in self.manifest.ordered() if r.file]

    def __len__(self) -> int:
        return sum(r.rows for r in self.manifest.shards.values())

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (
            f"<DatasetRun {self.kind} {self.technique} at {str(self.out)!r}: {len(self)} rows, "
            f"{len(self.failures())} failed, {state}>"
        )

    # -- reading -------------------------------------------------------------------------------
    def to_table(self, columns: Sequence[str] | None = None, *, table: str = "main") -> Any:
        """The whole table as one ``pyarrow.Table`` (``.to_pandas()`` for a DataFrame)."""
        import pyarrow as pa

        tables = [read_table(p, columns) for p in self.parts(table)]
        if not tables:
            raise InputError(
                f"{str(self.out)!r} holds no rows yet (every input failed, or none ran)"
            )
        return pa.concat_tables(tables)

    def iter_batches(
        self, columns: Sequence[str] | None = None, *, batch_size: int = 1024, table: str = "main"
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of at most ``batch_size`` rows as ``{column: numpy array}``, one part at a
        time."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in self.parts(table):
            with pq.ParquetFile(str(path)) as file:
                for batch in file.iter_batches(batch_size=batch_size, columns=columns):
                    t = pa.Table.from_batches([batch])
                    yield {name: column_numpy(t, name) for name in t.column_names}

    def ids(self, table: str = "main") -> list[str]:
        """The ids of the rows, in source order."""
        return [
            str(i)
            for p in self.parts(table)
            for i in read_table(p, ["id"]).column("id").to_pylist()
        ]

    def _locate(self, ids: Sequence[str], table: str) -> list[tuple[int, int]]:
        if table not in self._indexes:
            index = {}
            for k, p in enumerate(self.parts(table)):
                for row, i in enumerate(read_table(p, ["id"]).column("id").to_pylist()):
                    index[str(i)] = (k, row)
            self._indexes[table] = index
        return [self._where(self._indexes[table], i) for i in ids]

    def _where(self, index: dict[str, tuple[int, int]], item: str) -> tuple[int, int]:
        if item in index:
            return index[item]
        failed = dict(self.failures())
        why = f"it failed: {failed[item]}" if item in failed else "no input has this id"
        raise InputError(f"id {item!r} has no row in {str(self.out)!r}: {why}")

    def to_numpy(
        self, ids: Sequence[str] | None = None, column: str = "values", *, table: str = "main"
    ) -> np.ndarray:
        """``column`` for ``ids`` (in that order; None: every row in source order) as numpy."""
        if ids is None:
            parts = [column_numpy(read_table(p, [column]), column) for p in self.parts(table)]
            if not parts:
                raise InputError(f"{str(self.out)!r} holds no rows yet")
            return np.concatenate(parts)
        ids = [str(i) for i in ids]
        where = self._locate(ids, table)
        paths = self.parts(table)
        cache: dict[int, np.ndarray] = {}
        rows: list[np.ndarray] = []
        for k, row in where:
            if k not in cache:
                cache[k] = column_numpy(read_table(paths[k], [column]), column)
            rows.append(cache[k][row])
        return np.stack(rows) if rows else np.empty((0,))

    def inputs(self, ids: Sequence[str]) -> np.ndarray:
        """The inputs of ``ids``, read again from the source (folders, array and Parquet files)."""
        from innersight.dataset.reopen import reopen

        source = reopen(self.manifest.fingerprint)
        positions = self.to_numpy(ids, "position")
        images: list[Any] = [source.read(int(p), int(p) + 1)[0].x for p in positions]
        return np.stack(images)

    def verify(self) -> list[str]:
        """Problems found: parts missing or whose SHA-256 differs from the manifest's."""
        problems = []
        entries = [(r.file, r.sha256) for r in self.manifest.shards.values() if r.file]
        entries += [
            (p["file"], p["sha256"]) for p in self.manifest.stages.get("map", {}).get("parts", [])
        ]
        for file, sha in entries:
            path = self.out / file
            if not path.is_file():
                problems.append(f"{file}: missing")
            elif file_sha256(path) != sha:
                problems.append(f"{file}: checksum differs from the manifest")
        return problems

    def summary(self) -> dict[str, Any]:
        """Counts, failures by reason, classes, accuracy and timings (and the map's quality)."""
        from innersight.dataset.summary import summarize

        return summarize(self)
