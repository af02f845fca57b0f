"""The output folder of a data-set run: which files are its own, and atomic writes.

A run writes only these names under ``out``: ``manifest.json``, ``shards/``, ``features/``,
``embedding/`` (Parquet parts and ``pca.npz``) and ``projector/`` (the TensorBoard projector
files). Every file is written to a temporary name beside its target, then renamed with
:func:`os.replace`, so a reader (or a run killed mid-write) never sees half a file. A folder
holding anything else was not made by a run and is refused, never written into.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from innersight.core.errors import InputError

__all__ = [
    "MANIFEST",
    "atomic_write",
    "check_out",
    "foreign_files",
    "is_part",
    "remove_temporaries",
]

MANIFEST = "manifest.json"
PART = re.compile(r"part-[0-9a-f]{6,32}\.parquet")
_TEMP = re.compile(r"\..+\.tmp-[0-9]+-[0-9a-f]{8}")
PROJECTOR_FILES = frozenset(
    {"projector_config.pbtxt", "tensors.tsv", "map.tsv", "metadata.tsv", "sprite.png"}
)
_OWN: dict[str, frozenset[str]] = {
    "shards": frozenset(),
    "features": frozenset(),
    "embedding": frozenset({"pca.npz"}),
    "projector": PROJECTOR_FILES,
}


def is_part(name: str) -> bool:
    """True for a Parquet part's file name (``part-000012.parquet``, ``part-<digest>.parquet``)."""
    return bool(PART.fullmatch(name))


def _own(folder: str, name: str) -> bool:
    return is_part(name) or name in _OWN[folder] or bool(_TEMP.fullmatch(name))


def foreign_files(out: Path) -> list[str]:
    """Paths under ``out`` (relative) that no data-set run writes."""
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name in (MANIFEST,) or _TEMP.fullmatch(entry.name):
            continue
        if entry.name not in _OWN or not entry.is_dir():
            foreign.append(entry.name)
            continue
        foreign += [
            f"{entry.name}/{p.name}"
            for p in sorted(entry.iterdir())
            if not (p.is_file() and _own(entry.name, p.name))
        ]
    return foreign


def check_out(out: str | Path) -> Path:
    """``out`` as a Path, after refusing a file or a folder holding files a run did not make.

    Creates the folder (with its parents) when it does not exist.

    Raises:
        InputError: ``out`` is a file, cannot be created, or holds foreign files.
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"out {str(out)!r} is a file, not a folder; pass a folder for the results")
    if path.is_dir():
        foreign = foreign_files(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise InputError(
                f"out {str(out)!r} holds {len(foreign)} file(s) that no data-set run made "
                f"({shown}); a run would mix its shards with them. Pass an empty or new folder "
                "as out (nothing is ever deleted or overwritten there)"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create out folder {str(out)!r}: {err}") from err
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_temporaries(out: Path) -> int:
    """Delete the temporary files a killed run left behind (only names this module makes)."""
    removed = 0
    folders = [out, *(out / name for name in _OWN)]
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and _TEMP.fullmatch(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
    return removed
