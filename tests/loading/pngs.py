"""PNG files written byte by byte, so a test can make a decompression bomb without the memory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(path: Path, width: int, height: int, *, pattern: int = 0b10101010) -> Path:
    """A 1-bit grayscale PNG whose every row repeats the byte ``pattern`` (the default: pixels
    alternating white, black from the left), compressed row by row: a 20000 x 20000 image is a
    ~50 kB file written in well under a second with a few kB of memory."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, gray, no interlace
    row = b"\x00" + bytes([pattern]) * ((width + 7) // 8)  # filter byte 0, then the bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
    return path
