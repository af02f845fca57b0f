"""Pieces the commands share: model and input options, the output-folder policy, tables."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from innersight.core.errors import InputError
from innersight.core.frameworks import is_torch

__all__ = [
    "add_input_args",
    "add_model_args",
    "check_output_dir",
    "load_model_from_args",
    "note",
    "number",
    "numbers",
    "parse_number",
    "prepare_output_dir",
    "print_table",
    "shape",
]


# -- argument types (a bad value is a usage error: exit code 2) ----------------------------------
def parse_number(text: str) -> float:
    """``0.5``, ``1e-3``, ``-2`` or a fraction of two such numbers: ``1/255``, ``1/127.5``.

    Raises:
        ValueError: anything else (``1/0``, ``1/2/3``, words); the message says why.
    """
    parts = text.split("/")
    if len(parts) > 2:
        raise ValueError("write one fraction a/b")
    try:
        values = [float(part.strip()) for part in parts]
    except ValueError:
        raise ValueError("not a number") from None
    if len(values) == 2 and values[1] == 0:
        raise ValueError("division by zero")
    return values[0] / values[1] if len(values) == 2 else values[0]


def number(text: str) -> float:
    """A finite :func:`parse_number`: ``0.5``, ``1e-3`` or a fraction ``1/255``, ``1/127.5``."""
    try:
        value = parse_number(text)
    except ValueError as err:
        reason = str(err)
    else:
        if math.isfinite(value):
            return value
        reason = "not finite"
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a number ({reason}); write e.g. 0.5, 1/255 or 1/127.5"
    )


def numbers(text: str) -> list[float]:
    """One number or comma-separated numbers (one per channel): ``0.485,0.456,0.406``."""
    return [number(part) for part in text.split(",")]


def shape(text: str) -> tuple[int, ...]:
    """``32,32,1`` (channels-last, no batch axis) or ``HxWxC``."""
    parts = text.replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape; write height,width,channels, e.g. 224,224,3"
        )
    return dims


# -- options -------------------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a .keras/.h5 file, a TorchScript .pt, a torch.export .pt2, or a spec "
        "package.module:callable that builds the model",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="weights for MODEL (torch state_dict, .weights.h5)"
    )
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="allow pickled torch files (this runs code from the file: trusted files only)",
    )
    parser.add_argument(
        "--input-shape",
        type=shape,
        metavar="H,W,C",
        help="the model's input shape, channels last (torch models do not declare one); "
        "inputs are resized to it",
    )


def add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale",
        type=number,
        metavar="S",
        help="multiply pixel values by S (default: 1/255 for image files, 1 for .npy/.npz)",
    )
    parser.add_argument(
        "--mean", type=numbers, metavar="M", help="subtract per channel, e.g. 0.485,0.456,0.406"
    )
    parser.add_argument(
        "--std", type=numbers, metavar="S", help="then divide per channel, e.g. 0.229,0.224,0.225"
    )


def _quiet_tensorflow() -> None:
    if "tensorflow" not in sys.modules:  # TensorFlow's C++ start-up chatter, unless asked for
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_model_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(native model, adapter)`` from MODEL, --weights, --unsafe and --input-shape."""
    import innersight as ins
    from innersight.loading import load_model

    _quiet_tensorflow()
    model = load_model(args.model, weights=args.weights, allow_pickle=args.unsafe)
    declared = getattr(args, "input_shape", None)
    options: dict[str, Any] = {}
    if declared is not None and is_torch(model):
        options["input_shape"] = declared
    adapter = ins.wrap(model, **options)
    own = adapter.input_shape
    if declared is not None and own is not None and not _fits(declared, own):
        raise InputError(
            f"--input-shape {','.join(map(str, declared))} does not match the input shape "
            f"{_shape_text(own)} that {adapter.backend} model {adapter.name} declares; leave "
            "--input-shape out"
        )
    return model, adapter


def _fits(declared: Sequence[int], own: Sequence[int | None]) -> bool:
    return len(declared) == len(own) and all(
        o is None or d == o for d, o in zip(declared, own, strict=True)
    )


def _shape_text(dims: Sequence[int | None] | None) -> str:
    if dims is None or len(dims) == 0:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


# -- output --------------------------------------------------------------------------------------
def check_output_dir(path: str | Path, *, force: bool) -> Path:
    """Refuse a file, or an existing non-empty folder unless ``force``; creates nothing."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(path)!r} is a file, not a folder; pass a folder with -o")
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present and not force:
            shown = ", ".join(present[:5]) + (" ..." if len(present) > 5 else "")
            raise InputError(
                f"output folder {str(path)!r} already holds {len(present)} file(s) ({shown}); "
                "pass another -o folder, or --force to write into it (files with the same names "
                "are overwritten, nothing is deleted)"
            )
    return out


def prepare_output_dir(path: str | Path, *, force: bool) -> Path:
    """:func:`check_output_dir`, then create the folder (with its parents)."""
    out = check_output_dir(path, force=force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output folder {str(path)!r}: {err}") from err
    return out


def print_table(
    rows: Sequence[Sequence[Any]],
    headers: Sequence[str],
    *,
    file: TextIO | None = None,
    right: Sequence[int] = (),
) -> None:
    """A plain-text table; columns in ``right`` are right-aligned (numbers)."""
    file = file or sys.stdout
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(cells[0]), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells[1:]:
        print(line(row), file=file)


def note(args: argparse.Namespace, message: str) -> None:
    """A remark on stderr, silenced by -q."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def shape_text(dims: Sequence[int | None] | None) -> str:
    """``(32, 32, 1)``, ``(?, ?, 3)``, or ``?`` when unknown."""
    return _shape_text(dims)
