"""The ``innersight`` command (also ``python -m innersight``).

Each subcommand is a module in this package with two functions::

    def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser: ...
    def run(args: argparse.Namespace) -> int: ...

``main`` builds the parser from :data:`COMMANDS` and maps outcomes to exit codes: 0 success,
2 a usage error (argparse), 1 an :class:`~innersight.InnersightError`, whose message is printed
without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

import innersight as ins

COMMANDS: tuple[str, ...] = ("list", "layers", "run", "report", "demo", "compare", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="innersight",
        description="Look inside trained neural networks (Keras and PyTorch).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    parser.add_argument("--version", action="version", version=f"innersight {ins.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"innersight.cli.{name}_cmd")
        command = module.add_parser(sub)
        command.set_defaults(_run=module.run)
        # Also accepted after the command; SUPPRESS keeps a global flag from being reset.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
        command.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="no progress bars or notes",
        )
    return parser


def _tune_malloc() -> None:
    """Keep freed activation buffers in the process (large torch batches on CPU run ~2.5x
    faster with glibc, see docs/performance.md). Only the CLI does this: it owns its process;
    the library never changes a host program's allocator."""
    if os.environ.get("GLIBC_TUNABLES") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    print(f"innersight: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _tune_malloc()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with warnings.catch_warnings():
            if not args.debug:
                # Framework deprecations (torch.jit, TF) are not the command user's to act on.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.showwarning = _show_warning
            return int(args._run(args))
    except ins.InnersightError as err:
        if args.debug:
            raise
        print(f"innersight: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `innersight layers m | head`: the reader left; not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silence the flush at exit)
        return 0
    except KeyboardInterrupt:
        print("innersight: interrupted", file=sys.stderr)
        return 130
