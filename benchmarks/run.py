"""``make bench``: innersight against the floor and against peer libraries, in one run.

Prints a Markdown table of medians and ratios, with the machine described, and writes it to
``benchmarks/results.md`` (copy it into docs/performance.md when the numbers change).

Every row is measured twice, each in a fresh process (``--process both``, the default):

- ``plain``: the user's own Python or Jupyter process: no ``GLIBC_TUNABLES``, no ``mallopt``;
- ``tuned``: glibc's malloc thresholds raised as the Makefile does (``GLIBC_TUNABLES``).

Ratios compare rows of the same process only.

    python benchmarks/run.py [--only occlusion,saliency,...] [--process both|plain|tuned]
                             [--quick] [--all] [--out benchmarks/results.md]

Cases: the :data:`DEFAULT` ones, and ``keras_backends`` (saliency and occlusion on Keras 3 over
TensorFlow, torch and JAX, each backend in its own process: several minutes, mostly JAX's
compiles) with ``--all`` or ``--only``. ``incremental`` (:mod:`bench_incremental`) times naive
and incremental occlusion against the floor on the seeds' convnet (torch and Keras) and a
ResNet-18 layout; ``deletion`` (:mod:`bench_metrics`) the deletion metric against its floor.
``--quick`` runs one round of ``incremental`` and two repeats of ``keras_backends`` instead of
three and five: the whole default set then takes about as long as before these cases.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import bench_incremental
import bench_keras_backends
import bench_metrics
import cases
import torch  # noqa: F401  (torch before tensorflow)
from timing import Row, machine

DEFAULT = (
    "occlusion",
    "saliency",
    "activation_grid",
    "maximization",
    "embeddings",
    "incremental",
    "deletion",
)
CASES = (*DEFAULT, "keras_backends")
#: Cases that need the forward floors (measured once per process).
WITH_FLOOR = ("occlusion", "deletion")
# The Makefile's value: keep freed activation buffers in the process (docs/performance.md).
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


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
    parser.add_argument("--only", default=None, help=f"comma-separated cases of {CASES}")
    parser.add_argument("--all", action="store_true", help="every case, keras_backends too")
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds of incremental and keras_backends"
    )
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
    if args.only is None:
        args.only = ",".join(CASES if args.all else DEFAULT)
    if args.device != "cpu":
        gpu_less = ("embeddings", "keras_backends")
        args.only = ",".join(c for c in args.only.split(",") if c not in gpu_less)
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
        cmd += ["--quick"] if args.quick else []
        subprocess.run([*cmd, "--process", process, "--out", str(out)], env=env, check=True)
        sections.append(f"## {process} process\n\n{out.read_text()}")
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_case(
    name: str, nets: dict[str, object], floor: dict[str, tuple[float, int]], args: Any
) -> list[Row]:
    """The rows of one case."""
    if name == "incremental":
        return bench_incremental.case(rounds=1 if args.quick else 3, device=args.device)
    if name == "deletion":
        return bench_metrics.deletion(nets, floor)
    if name == "keras_backends":
        return keras_backend_rows(repeats=2 if args.quick else 5)
    if name == "embeddings":
        return cases.embeddings()
    runner = getattr(cases, name)
    return runner(nets, floor) if name in WITH_FLOOR else runner(nets)


def keras_backend_rows(repeats: int) -> list[Row]:
    """:mod:`bench_keras_backends` (one process per Keras backend) as table rows."""
    out = []
    for r in bench_keras_backends.measure(list(bench_keras_backends.BACKENDS), repeats):
        out.append(
            Row(
                f"{r['case']} (Keras on {r['backend']})",
                "keras",
                r["seconds"],
                r["floor"],
                r["floor_name"],
                r["goal"],
            )
        )
    return out


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
        rows.extend(run_case(name, nets, floor, args))
    text = (
        f"Machine: {machine()}, {args.process} process\n\nRun: {time.perf_counter() - t0:.0f} s "
        f"in all, load average {load()} at the end. Medians of 3-7 timed calls after a warm-up "
        "call (maximization and t-SNE: one call each); rows with 'ratio per round' time the "
        "floor right around each call.\n\n" + table(rows) + "\n"
    )
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
