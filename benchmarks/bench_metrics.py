"""Benchmark rows of the metrics: deletion with 100 steps on the seeds' convnet (150x150x3)
against the forward floor of its masked batches.

Deletion scores ``steps + 1`` masked copies of each image; the floor is those copies forwarded at
the framework's best throughput (``cases.floors``: the best img/s over batches 1..64). The goal is
1.1x: building the masked copies and reading the logits may cost 10%, no more.

    python benchmarks/bench_metrics.py [--device cpu]   # prints the rows as a Markdown table

``benchmarks/run.py`` can run them as the case ``deletion``: ``bench_metrics.deletion(nets,
floor)`` returns its rows, as ``cases.occlusion(nets, floor)`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import cases
import torch  # noqa: F401  (torch before tensorflow)
from timing import Row, bracketed, floor_batches, machine, per_image

import innersight as ins
from innersight.api import evaluate

STEPS = 100


def deletion(nets: dict[str, object], floor: dict[str, tuple[float, int]]) -> list[Row]:
    """Deletion (100 steps, one image, its saliency map) per backend vs the forward floor.

    Two rows per backend: the first call with a fresh batch planner (its probe of chunk sizes
    runs on the real work: with 101 copies per image it spans the first two or three calls),
    and, after two more calls, three calls timed against a floor timed right around each
    (:func:`timing.bracketed`): the settled cost, which the goal is about."""
    from innersight.core import BatchPlanner

    x = cases.image()
    n = (STEPS + 1) * len(x)
    rows = []
    for backend, model in nets.items():
        ex = ins.explain("saliency", model, x, target=0)

        def run(model: object = model, ex: object = ex) -> object:
            return evaluate("deletion", model, ex, steps=STEPS)

        forward, batches = cases.forward(backend, model), floor_batches(floor[backend][1])
        BatchPlanner.clear_cache()
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        best = min(per_image(forward, b) for b in batches) * n
        rows.append(
            Row(
                f"deletion {STEPS} steps, 1 image: first call, fresh planner",
                backend,
                first,
                best,
                "floor",
                None,
                f"{n} masked forwards; the planner probes chunk sizes on this call's work",
            )
        )
        run()  # the probe's second and third calls (bracketed makes one more)
        timed = bracketed(run, forward, batches, n)
        note = f"{n} masked forwards, the planner settled (4 calls before)"
        rows.append(timed.row(f"deletion {STEPS} steps, 1 image", backend, 1.10, note))
    return rows


def main() -> int:
    from run import table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (no Keras then)")
    args = parser.parse_args()
    cases.DEVICE = args.device
    nets = cases.models()
    rows = deletion(nets, cases.floors(nets))
    print(f"Machine: {machine()}\n\n{table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
