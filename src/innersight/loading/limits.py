"""The pixel limit for image files: a guard against decompression bombs.

A decompression bomb is a small file that decodes to a huge image (a 388 kB PNG of 20000 x
20000 pixels needs 4.8 GB as float32 RGB). Image files with more pixels than the limit are
refused before their pixels are decoded. The limit is, in this order: the ``max_pixels``
argument of :func:`innersight.load_images`, the ``INNERSIGHT_MAX_IMAGE_PIXELS`` environment
variable (which the command line reads too), or Pillow's ``Image.MAX_IMAGE_PIXELS``
(89,478,485 pixels; ``None`` there and no other setting means no limit).

Pillow only warns between its limit and twice its limit; here every image above the limit is
refused. To apply a limit other than Pillow's, Pillow's global is set to it while a file is
opened and decoded (under a lock, restored afterwards), so Pillow's own checks inside the
decoders agree with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from innersight.core.errors import InputError

__all__ = ["PIXELS_ENV", "bomb_error", "pillow_limit", "pixel_limit"]

PIXELS_ENV = "INNERSIGHT_MAX_IMAGE_PIXELS"
_LOCK = threading.Lock()


def pixel_limit(max_pixels: int | None = None) -> int | None:
    """The limit in force: ``max_pixels``, else ``$INNERSIGHT_MAX_IMAGE_PIXELS``, else Pillow's.

    Raises:
        InputError: a ``max_pixels`` or environment value that is not a positive integer.
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise InputError(
                f"max_pixels={max_pixels!r} is not valid; pass a positive int, e.g. "
                "max_pixels=200_000_000, or None for the default limit"
            )
        return max_pixels
    text = os.environ.get(PIXELS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise InputError(
                f"{PIXELS_ENV}={text!r} is not a positive integer; set it to a pixel count, "
                f"e.g. {PIXELS_ENV}=200000000, or unset it for Pillow's limit"
            )
        return value
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def pillow_limit(limit: int | None) -> Iterator[None]:
    """Pillow's bomb checks at ``limit`` while a file is opened and decoded; its warning (an
    image between the limit and twice it) raised as an error instead."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if limit == Image.MAX_IMAGE_PIXELS:
            yield
            return
        with _LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def bomb_error(path: Path, found: int | Exception, limit: int | None) -> InputError:
    """The one-line refusal of ``path``: its pixel count (``found``, or read from Pillow's
    error), the limit, and how to raise it on purpose."""
    pixels = found if isinstance(found, int) else _pixels_in(str(found))
    shown = f"{pixels:,} pixels" if pixels else "more pixels than Pillow allows"
    needed = pixels or "<its pixel count>"
    return InputError(
        f"image file {str(path)!r} has {shown}, more than the limit of {limit or 0:,} (a guard "
        "against decompression bombs: small files that decode to huge images); if you trust "
        f"the file, raise the limit: set the environment variable {PIXELS_ENV}={needed} "
        f"(in Python: load_images(..., max_pixels={needed}))"
    )


def _pixels_in(message: str) -> int | None:
    """The pixel count in Pillow's "Image size (N pixels) exceeds limit ..." message."""
    match = re.search(r"\((\d+) pixels\)", message)
    return int(match.group(1)) if match else None
