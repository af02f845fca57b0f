"""Where one technique's time goes: ``python benchmarks/hotspots.py occlusion [--device cuda]``.

Runs the technique once to warm up, then under cProfile, on the benchmarks' reference convnet,
and prints the 30 most expensive functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cases
import torch  # noqa: F401  (torch before tensorflow)

import innersight as ins

CALLS = {
    "occlusion": lambda m, x: ins.explain("occlusion", m, x, target=0, progress=False),
    "saliency": lambda m, x: ins.explain("saliency", m, x, target=0),
    "activation_grid": lambda m, x: ins.explain("activation_grid", m, x),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("technique", choices=sorted(CALLS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "keras"))
    args = parser.parse_args()
    cases.DEVICE = args.device
    model = cases.models()[args.backend]
    x = cases.image()
    call = CALLS[args.technique]
    call(model, x)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        call(model, x)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
