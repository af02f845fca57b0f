"""``make bench``: innersight against the floor and against peer libraries, in one run.

Prints a Markdown table of medians and ratios, with the machine described, and writes it to
``benchmarks/results.md`` (copy it into docs/performance.md when the numbers change).

Every row is measured twice, each in a fresh process (``--process both``, the default):

- ``plain``: the user's own Python or Jupyter process: no ``GLIBC_TUNABLES``, no ``mallopt``;
- ``tuned``: glibc's malloc thresholds raised as the Makefile does (``GLIBC_TUNABLES``).

Ratios compare rows of the same process only.

    python benchmarks/run.py [--only occlusion,saliency,...] [--process both|plain|tuned]
                             [--out benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import cases
import torch  # noqa: F401  (torch before tensorflow)
from timing import Row, machine

CASES = ("occlusion", "saliency", "activation_grid", "maximization", "embeddings")
# The Makefile's value: keep freed activation buffers in the process (docs/performance.md).
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cuda (Keras and t-SNE are left out)"
    )
    parser.add_argument(
        "--process",
        choices=("both", "plain", "tuned"),
        default="both",
        help="plain: a user's process (no malloc tunables); tuned: as under make; both (default)",
    )
    args = parser.parse_args()
    if args.device != "cpu":
        args.only = ",".join(c for c in args.only.split(",") if c != "embeddings")
    unknown = {c for c in args.only.split(",") if c} - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    return args


def run_both(args: argparse.Namespace) -> int:
    """Each process in its own interpreter (malloc settings are fixed at process start)."""
    sections = []
    for process in ("plain", "tuned"):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if process == "tuned":
            env["GLIBC_TUNABLES"] = TUNABLES
        out = args.out.with_name(f"{args.out.stem}-{process}{args.out.suffix}")
        cmd = [sys.executable, __file__, "--only", args.only, "--device", args.device]
        subprocess.run([*cmd, "--process", process, "--out", str(out)], env=env, check=True)
        sections.append(f"## {process} process\n\n{out.read_text()}")
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main() -> int:
    args = parse_args()
    if args.process == "both":
        return run_both(args)
    if (args.process == "tuned") != bool(os.environ.get("GLIBC_TUNABLES")):
        # glibc reads GLIBC_TUNABLES once, at start: re-run with the right environment.
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if args.process == "tuned":
            env["GLIBC_TUNABLES"] = TUNABLES
        return subprocess.run([sys.executable, *sys.argv], env=env).returncode
    cases.DEVICE = args.device
    chosen = [c for c in args.only.split(",") if c]
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
        f"Machine: {machine()}, {args.process} process\n\nRun: {time.perf_counter() - t0:.0f} s in all. Medians of 3-7 timed calls after a warm-up "
        "call (maximization and t-SNE: one call each).\n\n" + table(rows) + "\n"
    )
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
