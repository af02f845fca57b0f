"""``innersight demo [-o DIR]``: every technique on the digits CNN in PyTorch and Keras."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run every technique on the bundled digits CNN (PyTorch and Keras) into a report",
        description="Run every installed technique on the trained digits CNN, built in PyTorch "
        "and in Keras with the same weights, for held-out digits. Writes DIR/demo/report.html "
        "(both models side by side) and DIR/demo/<backend>_<technique>.png.",
    )
    parser.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        default="out",
        metavar="DIR",
        help="output folder (default: out)",
    )
    parser.add_argument(
        "-n",
        "--inputs",
        type=int,
        default=8,
        metavar="N",
        help="held-out digits to explain (default: 8)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into DIR/demo even when it holds files the demo did not make (never deletes)",
    )
    return parser


def _process_seconds() -> float | None:
    """Seconds since this process started, imports included (Linux /proc), else None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as up:
            uptime = float(up.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    from innersight.core.errors import InputError
    from innersight.demo import run_demo

    if args.inputs < 1:
        raise InputError(f"--inputs must be at least 1, got {args.inputs}")
    start = time.perf_counter()
    echo = (lambda _msg: None) if args.quiet else print
    result = run_demo(
        args.out,
        n_inputs=args.inputs,
        progress=False if args.quiet else None,
        echo=echo,
        force=args.force,
    )
    for key, acc in result.accuracies.items():
        print(f"{key} digits CNN: test accuracy {acc:.2%} on {result.report.dataset_size} digits")
    print(f"{len(result.images)} technique images in {result.folder}")
    print(f"report: {result.report_path}")
    for failure in result.failures:
        print(f"innersight: technique failed: {failure}", file=sys.stderr)
    whole = _process_seconds()  # imports included; the demo's own time where /proc is missing
    print(f"total time {whole if whole is not None else time.perf_counter() - start:.1f} s")
    return 1 if result.failures else 0
