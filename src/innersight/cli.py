"""The ``innersight`` command (for now: ``list``, ``layers`` of the demo models, and ``demo``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import innersight as ins


def _demo_models() -> dict[str, object]:
    """A small Keras and a small torch conv net with identical (seeded, untrained) weights."""
    import torch  # noqa: F401  (torch before tensorflow)

    from innersight.demo_models import keras_small, small_weights, torch_small

    w = small_weights(seed=0)
    return {"torch": torch_small(w), "keras": keras_small(w)}


def demo(out: Path) -> int:
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    for backend, model in _demo_models().items():
        print(f"== {backend} model")
        for info in ins.layers(model):
            print(f"  {info.name:10s} {info.kind:12s} {info.output_shape!s:16s} {info.num_params}")
        for technique in ("activation_grid", "saliency", "guided_backprop"):
            path = ins.explain(technique, model, x).save(out / f"{backend}_{technique}.png")
            print(f"  wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="innersight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="techniques and plugins")
    d = sub.add_parser("demo", help="run the techniques on the demo models")
    d.add_argument("-o", "--out", default="out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            pm = ins.get_plugin_manager()
            for name, tech in sorted(ins.techniques().items()):
                print(f"{name:20s} {tech.summary}  [{pm.provider(name)}]")
            for failure in pm.failures:
                print(f"FAILED: {failure}")
            return 0
        return demo(args.out)
    except ins.InnersightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
