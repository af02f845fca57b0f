"""A TensorBoard projector folder: ``tensorboard --logdir OUT/projector`` opens it.

Files (the projector plugin's own format, read from the log directory's root):

- ``projector_config.pbtxt``: two embeddings, ``pca`` (the PCA components) and ``map`` (the
  2-D map), sharing metadata and sprite;
- ``tensors.tsv`` / ``map.tsv``: one tab-separated row of numbers per point;
- ``metadata.tsv``: a header ``id  label  prediction``, then one row per point;
- ``sprite.png``: the points' thumbnails in a square grid, row by row (omitted when the inputs
  cannot be read again, e.g. from a one-shot iterable).

The browser holds every point, so a seeded sample of the run goes there (``projector=``
points); the Parquet parts hold all of them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.dataset.outdir import atomic_write

__all__ = ["sprite", "thumbnails", "write_projector"]

MAX_SPRITE = 8192  # the projector's limit on the sprite's side, in pixels


def _cell(value: Any) -> str:
    return " ".join(str("" if value is None else value).split()) or "-"


def _tsv(rows: np.ndarray) -> bytes:
    return "".join("\t".join(f"{v:.7g}" for v in row) + "\n" for row in rows).encode()


def thumbnails(images: Sequence[np.ndarray], side: int) -> np.ndarray:
    """(N, side, side, 3) uint8: each image scaled to its own min..max, resized (bilinear)."""
    from PIL import Image

    from innersight.core.render import as_rgb, normalise, to_uint8

    out = np.empty((len(images), side, side, 3), np.uint8)
    for i, img in enumerate(images):
        rgb = as_rgb(to_uint8(normalise(np.asarray(img)[None], "per_map")))[0]
        out[i] = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR))
    return out


def sprite(thumbs: np.ndarray) -> bytes:
    """The thumbnails in a square grid (row-major, as the projector reads it), as PNG."""
    from PIL import Image

    n, side = len(thumbs), thumbs.shape[1]
    cols = max(1, math.ceil(math.sqrt(n)))
    grid = np.zeros((cols * side, cols * side, 3), np.uint8)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = t
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def sprite_side(n: int, image_side: int) -> int:
    """Thumbnail side: the input's, shrunk so the grid fits the projector's 8192 px."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return int(max(1, min(image_side, 64, MAX_SPRITE // cols)))


def _config(thumb: int | None) -> str:
    blocks = []
    for name, path in (("pca", "tensors.tsv"), ("map", "map.tsv")):
        lines = [
            f'  tensor_name: "{name}"',
            f'  tensor_path: "{path}"',
            '  metadata_path: "metadata.tsv"',
        ]
        if thumb:
            lines.append(
                f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {thumb}\n'
                f"    single_image_dim: {thumb}\n  }}"
            )
        blocks.append("embeddings {\n" + "\n".join(lines) + "\n}\n")
    return "".join(blocks)


def write_projector(
    folder: Path,
    *,
    ids: Sequence[str],
    labels: Sequence[Any] | None,
    predictions: Sequence[int],
    components: np.ndarray,
    coords: np.ndarray,
    images: Sequence[np.ndarray] | None,
) -> dict[str, Any]:
    """Write the projector files for these points; returns what was written (for the manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = list(labels) if labels is not None else [None] * len(ids)
    meta = "id\tlabel\tprediction\n" + "".join(
        f"{_cell(i)}\t{_cell(lab)}\t{int(p)}\n"
        for i, lab, p in zip(ids, labels, predictions, strict=True)
    )
    atomic_write(folder / "metadata.tsv", meta.encode("utf-8"))
    atomic_write(folder / "tensors.tsv", _tsv(np.asarray(components)))
    atomic_write(folder / "map.tsv", _tsv(np.asarray(coords)))
    thumb = None
    if images is not None and len(images):
        thumb = sprite_side(len(images), max(np.shape(images[0])[:2]))
        atomic_write(folder / "sprite.png", sprite(thumbnails(images, thumb)))
    atomic_write(folder / "projector_config.pbtxt", _config(thumb).encode())
    return {"points": len(ids), "sprite": thumb is not None, "thumbnail": thumb}
