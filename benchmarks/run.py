"""``make bench``: innersight against the floor and against peer libraries, in one run.

Prints a Markdown table of medians and ratios, with the machine described, and writes it to
``benchmarks/results.md`` (copy it into docs/performance.md when the numbers change).

    python benchmarks/run.py [--only occlusion,saliency,...] [--out benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import cases
import torch  # noqa: F401  (torch before tensorflow)
from timing import Row, machine

CASES = ("occlusion", "saliency", "activation_grid", "maximization", "embeddings")


def table(rows: list[Row]) -> str:
    lines = [
        "| case | backend | median s | reference | reference s | ratio | goal | notes |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ref = "" if r.reference is None else f"{r.reference:.4f}"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        goal = "" if r.goal is None else f"<= {r.goal:.2f}"
        lines.append(
            f"| {r.case} | {r.backend} | {r.seconds:.4f} | {r.reference_name} | {ref} | {ratio} "
            f"| {goal} | {r.notes} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cuda (Keras and t-SNE are left out)"
    )
    args = parser.parse_args()
    cases.DEVICE = args.device
    if args.device != "cpu":
        args.only = ",".join(c for c in args.only.split(",") if c != "embeddings")
    chosen = [c for c in args.only.split(",") if c]
    unknown = set(chosen) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    if not os.environ.get("GLIBC_TUNABLES"):
        # The Makefile sets the tunables; outside it, ask glibc directly (see performance.md).
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
    t0 = time.perf_counter()
    nets = cases.models()
    rows: list[Row] = []
    floor = cases.floors(nets)
    for backend, (ips, batch) in floor.items():
        rows.append(
            Row(
                "forward floor: best img/s over batch 1..64",
                backend,
                1 / ips,
                notes=f"{ips:.0f} img/s at batch {batch}",
            )
        )
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runner = getattr(cases, name)
        rows.extend(
            runner()
            if name == "embeddings"
            else runner(nets, floor)
            if name == "occlusion"
            else runner(nets)
        )
    text = (
        f"Machine: {machine()}\n\nRun: {time.perf_counter() - t0:.0f} s in all. Medians of 3-7 timed calls after a warm-up "
        "call (maximization and t-SNE: one call each).\n\n" + table(rows) + "\n"
    )
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
