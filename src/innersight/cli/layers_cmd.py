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
    _, adapter = load_model_from_args(args)
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
        note(
            args,
            f"note: output shapes of this {adapter.backend} model are known only after a forward "
            "pass; pass --input-shape H,W,C to see them",
        )
    return 0
