"""``innersight layers MODEL``: the model's layers, their output shapes and parameter counts."""

from __future__ import annotations

import argparse
from typing import Any

from innersight.cli.common import (
    add_model_args,
    load_model_from_args,
    note,
    print_table,
    shape_text,
)
from innersight.core.frameworks import is_torchscript

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "layers",
        help="a model's layers (names to pass to techniques)",
        description="Print a model's layers: the names techniques take, their kinds, "
        "channels-last output shapes and parameter counts.",
    )
    add_model_args(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    model, adapter = load_model_from_args(args)
    infos = list(adapter.layers())
    rows = [
        (info.name, info.kind, shape_text(info.output_shape), f"{info.num_params:,}")
        for info in infos
    ]
    total = sum(info.num_params for info in infos)
    print(
        f"{adapter.backend} model {adapter.name}, input {shape_text(adapter.input_shape)}, "
        f"{len(infos)} layers"
    )
    print_table(rows, ("layer", "kind", "output shape", "params"), right=(3,))
    print(f"total parameters: {total:,}")
    if infos and all(len(info.output_shape) == 0 for info in infos):
        note(args, _unknown_shapes_note(model, adapter, args.input_shape))
    return 0


def _unknown_shapes_note(model: Any, adapter: Any, declared: Any) -> str:
    """Why the output shapes show as ``?``, and what shows them (never advice already taken)."""
    if is_torchscript(model):
        return (
            f"note: output shapes of TorchScript model {adapter.name} cannot be recorded: "
            "TorchScript modules take no hooks, so --input-shape does not show them either; "
            "load the eager model from a 'package.module:callable' spec (with --weights and "
            "--input-shape) to see them"
        )
    if declared is None:
        return (
            f"note: output shapes of this {adapter.backend} model are known only after a forward "
            "pass; pass --input-shape H,W,C to see them"
        )
    return (
        f"note: output shapes of this {adapter.backend} model are unknown: the pass on zeros of "
        f"--input-shape {','.join(map(str, declared))} did not complete; run a technique on "
        "these inputs (with --debug) to see why"
    )
