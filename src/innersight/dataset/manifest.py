"""``manifest.json``: what a data-set run is (technique, parameters, model, source, versions)
and which of its shards are complete (row counts, failures, SHA-256 checksums).

The manifest is rewritten atomically after every shard, so it only ever lists shards whose
file was completely written. It is what makes a rerun resumable: a shard listed with a file
whose checksum still matches is skipped; everything else is redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from innersight.core.errors import InputError
from innersight.core.technique import to_jsonable
from innersight.dataset.outdir import MANIFEST, atomic_write

__all__ = ["FORMAT", "Manifest", "ShardRecord", "file_sha256", "ids_sha256"]

FORMAT = "innersight-dataset/1"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ids_sha256(ids: list[str]) -> str:
    """A digest of the ids of a shard, in order (detects a source that changed between runs)."""
    digest = hashlib.sha256()
    for item in ids:
        digest.update(item.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


@dataclass
class ShardRecord:
    """One complete shard: its file (relative to ``out``), rows, failures and checksums.

    ``start``/``stop`` are the positions in the source it covers (None for a shard of a
    ``ray.data.Dataset``, named after the digest of its ids); ``failed`` lists
    ``[id, reason]`` of the inputs that were skipped.
    """

    name: str
    file: str
    rows: int
    sha256: str
    ids_sha256: str
    failed: list[list[str]] = field(default_factory=list)
    start: int | None = None
    stop: int | None = None
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Manifest:
    """The record of one run in an ``out`` folder.

    Attributes:
        kind: ``"explain"`` (explain_dataset) or ``"embed"`` (embed_dataset).
        fingerprint: everything that must be equal for a rerun to reuse the shards.
        info: facts about the run (versions, engine, timings, source description).
        shards: complete shards by name.
        stages: results of the later stages of an embedding (PCA, map, projector).
        complete: every input was processed (explained or recorded as failed).
    """

    kind: str
    fingerprint: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    shards: dict[str, ShardRecord] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    def ordered(self) -> list[ShardRecord]:
        """Shards in source order (by start position, then name)."""
        return sorted(
            self.shards.values(), key=lambda r: (r.start if r.start is not None else -1, r.name)
        )

    def failures(self) -> list[tuple[str, str]]:
        """``(id, reason)`` of every skipped input, in source order."""
        return [(str(i), str(r)) for rec in self.ordered() for i, r in rec.failed]

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "kind": self.kind,
            "complete": self.complete,
            "fingerprint": to_jsonable(self.fingerprint),
            "info": to_jsonable(self.info),
            "stages": to_jsonable(self.stages),
            "shards": [asdict(r) for r in self.ordered()],
        }
        return json.dumps(data, indent=1)

    def save(self, out: Path) -> None:
        """Write ``out/manifest.json`` atomically."""
        atomic_write(out / MANIFEST, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, out: Path) -> Manifest | None:
        """The manifest in ``out``, or None when there is none.

        Raises:
            InputError: the file is not a manifest of this format.
        """
        path = Path(out) / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            shards = [ShardRecord.from_dict(s) for s in data["shards"]]
            return cls(
                kind=str(data["kind"]),
                fingerprint=dict(data["fingerprint"]),
                info=dict(data.get("info", {})),
                shards={s.name: s for s in shards},
                stages=dict(data.get("stages", {})),
                complete=bool(data.get("complete", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(
                f"{str(path)!r} is not a manifest of an innersight data-set run ({err}); pass "
                "another out folder"
            ) from err


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every fingerprint entry that differs (JSON-equal compare)."""
    old_j, new_j = to_jsonable(old), to_jsonable(new)
    keys = sorted(set(old_j) | set(new_j))
    return [
        f"{k}: {json.dumps(old_j.get(k))[:80]} -> {json.dumps(new_j.get(k))[:80]}"
        for k in keys
        if old_j.get(k) != new_j.get(k)
    ]
