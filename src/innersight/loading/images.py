"""``load_images``: image files, folders and arrays as one float32 channels-last batch.

Every source becomes float32 (H, W, C); then, in this order: channels converted (grayscale <->
RGB, alpha dropped), resized with Pillow's bilinear filter, multiplied by ``scale``, normalised
as ``(x - mean) / std`` per channel. Pixel values of image files are scaled by 1/255 unless
``scale`` is given; arrays are taken as they are.

Hostile files are refused with an InputError naming the file: an image with more pixels than
the limit (a decompression bomb: a small file that decodes to a huge image, see
:mod:`innersight.loading.limits`), a truncated or damaged image, a damaged ``.npz``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core.errors import InputError
from innersight.loading.limits import PIXELS_ENV, bomb_error, pillow_limit, pixel_limit
from innersight.loading.transforms import convert_channels, normalise, resize, to_size

__all__ = ["IMAGE_SUFFIXES", "PIXELS_ENV", "load_class_names", "load_images", "read_inputs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
_NPZ_KEYS = ("inputs", "images", "x")

PathArg = str | Path | Sequence[str | Path]


@dataclass
class _Item:
    name: str
    pixels: np.ndarray  # float32 (H, W, C)
    from_file: bool  # an image file (default scale 1/255) rather than an array
    max_value: float = 255.0


def load_images(
    paths: PathArg,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    scale: float | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    model: Any = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read images into a float32 (N, H, W, C) batch ready for :func:`innersight.explain`.

    Args:
        paths: image files (PNG, JPEG, ... through Pillow), folders (their image files, sorted
            by name), ``.npy``/``.npz`` arrays of shape (N, H, W, C) or (H, W, C).
        size: ``(H, W)`` (or one int for squares) to resize to; default: the model's input size
            when ``model`` is given, else the images' own (which must then agree).
        channels: 1 (grayscale) or 3 (RGB); default: the model's, else the images' own.
        scale: factor applied to the pixel values; default 1/255 for image files (8-bit),
            none for arrays.
        mean, std: per-channel (or one) numbers: ``(x * scale - mean) / std``.
        model: a native model or adapter whose ``input_shape`` gives size and channels.
        max_pixels: the most pixels (width x height) an image file may have, a guard against
            decompression bombs; default: the ``INNERSIGHT_MAX_IMAGE_PIXELS`` environment
            variable, else Pillow's ``Image.MAX_IMAGE_PIXELS`` (89,478,485).

    Raises:
        InputError: a missing file, a file that is neither an image nor an array, a truncated
            or damaged file, an image with more pixels than ``max_pixels``, images of
            different sizes with nothing to resize them to, or mean/std that do not fit.
    """
    return read_inputs(
        paths,
        size=size,
        channels=channels,
        scale=scale,
        mean=mean,
        std=std,
        model=model,
        max_pixels=max_pixels,
    )[0]


def read_inputs(
    paths: PathArg,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    scale: float | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    model: Any = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Like :func:`load_images`, plus one name per image (file stem, ``stem_3`` in arrays)."""
    limit = pixel_limit(max_pixels)
    model_size, model_channels = _from_model(model)
    size = to_size(size) if size is not None else model_size
    channels = channels if channels is not None else model_channels
    files = _expand(paths)
    items = [item for path in files for item in _read(path, alpha=channels == 4, limit=limit)]
    if not items:
        raise InputError(f"no images found in {_describe(paths)}")
    if channels is None:
        counts = {item.pixels.shape[-1] for item in items}
        channels = counts.pop() if len(counts) == 1 else 3  # mixed: grayscale -> RGB
    out = []
    for item in items:
        x = convert_channels(item.pixels, channels, item.name)
        if size is not None and x.shape[:2] != size:
            x = resize(x, size)
        factor = scale if scale is not None else (1 / item.max_value if item.from_file else 1.0)
        out.append(x * np.float32(factor))
    _check_sizes(out, items)
    batch = np.stack(out).astype(np.float32)
    batch = normalise(batch, mean, std)
    return batch, _unique([item.name for item in items])


def load_class_names(path: str | Path) -> list[str]:
    """Class names, one per line (surrounding blanks stripped, trailing empty lines ignored)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"class names file {str(path)!r} does not exist")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise InputError(f"class names file {file.name!r} is not UTF-8 text: {err}") from err
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(f"class names file {file.name!r} is empty; write one name per line")
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if empty:
        raise InputError(
            f"class names file {file.name!r} has empty line(s) {empty[:5]}; every line is a class "
            "name (line k is class k-1), so remove blank lines or name the class"
        )
    return lines


# -- sources ------------------------------------------------------------------------------------
def _describe(paths: PathArg) -> str:
    return repr(str(paths)) if isinstance(paths, (str, Path)) else ", ".join(map(str, paths))


def _expand(paths: PathArg) -> list[Path]:
    sources: Iterable[str | Path] = [paths] if isinstance(paths, (str, Path)) else paths
    files: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise InputError(
                    f"folder {str(source)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input {str(source)!r} does not exist; pass image files or folders")
    return files


def _read(path: Path, *, alpha: bool, limit: int | None) -> list[_Item]:
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return _read_array(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with pillow_limit(limit), Image.open(path) as img:
            if limit is not None and img.size[0] * img.size[1] > limit:
                raise bomb_error(path, img.size[0] * img.size[1], limit)
            img.load()
            return [_pil_item(path.stem, img, alpha)]
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise bomb_error(path, err, limit) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if "truncated" in str(err).lower():
            raise InputError(
                f"image file {str(path)!r} is truncated (Pillow: {err}): the file ends before "
                "its pixel data does; copy, download or export it again, or leave it out"
            ) from err
        raise InputError(
            f"{str(path)!r} is not an image that Pillow can read ({type(err).__name__}: {err}); "
            f"pass image files ({', '.join(IMAGE_SUFFIXES)}) or .npy/.npz arrays"
        ) from err


def _pil_item(name: str, img: Any, alpha: bool) -> _Item:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _Item(name, np.asarray(img, dtype=np.float32)[..., None], True, 65535.0)
    if mode in ("1", "L", "LA", "I", "F"):
        return _Item(name, np.asarray(img.convert("F"), dtype=np.float32)[..., None], True)
    keep = "RGBA" if alpha else "RGB"
    return _Item(name, np.asarray(img.convert(keep), dtype=np.float32), True)


_ARRAY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_array(path: Path) -> list[_Item]:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arr = _pick_npz(data, path)
        else:
            arr = data
    except InputError:
        raise
    except _ARRAY_ERRORS as err:
        raise InputError(
            f"could not read array file {str(path)!r} ({type(err).__name__}: {err}); it may be "
            "truncated or damaged: save it again with numpy.save or numpy.savez"
        ) from err
    if arr.dtype.kind not in "fiub":
        raise InputError(f"array {str(path)!r} has dtype {arr.dtype}; expected numbers")
    arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3:
        return [_Item(path.stem, arr, False)]
    if arr.ndim != 4:
        raise InputError(
            f"array {str(path)!r} has shape {arr.shape}; expected (N, H, W, C) or (H, W, C)"
        )
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"array {str(path)!r} has shape {arr.shape}, which looks channels-first (N, C, H, W); "
            "save it channels-last: x.transpose(0, 2, 3, 1)"
        )
    return [_Item(f"{path.stem}_{i}", a, False) for i, a in enumerate(arr)]


def _pick_npz(data: Any, path: Path) -> np.ndarray:
    keys = list(data.files)
    if len(keys) == 1:
        return np.asarray(data[keys[0]])
    for key in _NPZ_KEYS:
        if key in keys:
            return np.asarray(data[key])
    raise InputError(
        f"{str(path)!r} holds arrays {keys}; innersight reads its only array or one named "
        f"{', '.join(_NPZ_KEYS)}: save the images under one of these names"
    )


# -- conversions --------------------------------------------------------------------------------
def _from_model(model: Any) -> tuple[tuple[int, int] | None, int | None]:
    if model is None:
        return None, None
    from innersight.api import wrap

    shape = wrap(model).input_shape
    if shape is None or len(shape) != 3:
        return None, None
    h, w, c = shape
    size = (int(h), int(w)) if h is not None and w is not None else None
    return size, (int(c) if c is not None else None)


def _check_sizes(out: list[np.ndarray], items: list[_Item]) -> None:
    shapes = {x.shape for x in out}
    if len(shapes) > 1:
        seen = ", ".join(
            f"{item.name} {x.shape[0]}x{x.shape[1]}" for item, x in zip(items, out, strict=True)
        )
        raise InputError(
            f"images have different sizes ({seen[:300]}); pass size=(H, W) (--input-shape on "
            "the command line) or a model with a fixed input size to resize them"
        )


def _unique(names: list[str]) -> list[str]:
    """Names made distinct (two folders may both hold ``cat.png``): ``cat``, ``cat-2``, ..."""
    used: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 1
        while candidate in used:
            k += 1
            candidate = f"{name}-{k}"
        used.add(candidate)
        out.append(candidate)
    return out
