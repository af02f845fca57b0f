"""Models and files for the data-set tests (importable by worker processes and Ray actors)."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np


def digits(backend: str = "torch"):
    """The trained digits CNN (a zero-argument factory through functools.partial)."""
    from innersight.models import digits_cnn

    return digits_cnn(backend)


def slow_digits(delay: float = 0.05):
    """The digits CNN, sleeping ``delay`` seconds per forward: a run that lasts long enough to
    be killed in the middle."""
    import torch

    class Slow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = digits("torch")

        def forward(self, x):
            time.sleep(delay)
            return self.net(x)

    return Slow().eval()


def png_bomb(path: Path, side: int = 100_000) -> None:
    """A tiny PNG declaring ``side`` x ``side`` grayscale pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)


def write_digit_folder(root: Path, x: np.ndarray, y: np.ndarray) -> list[str]:
    """``root/<label>/<i>.png`` 8-bit grayscale PNGs; returns their ids (relative paths)."""
    from PIL import Image

    ids = []
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        rel = f"{int(label)}/{i:04d}.png"
        (root / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[..., 0] * 255).round().astype(np.uint8), "L").save(root / rel)
        ids.append(rel)
    return sorted(ids)


def children(root: int) -> list[int]:
    """Process ids of every descendant of ``root`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False
