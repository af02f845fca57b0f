"""``innersight report MODEL INPUT... -o report.html``: every technique in one HTML file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from innersight.cli.common import add_input_args, add_model_args, load_model_from_args, note
from innersight.core.errors import InputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="run every technique on a model and write one self-contained HTML report",
        description="Run techniques on MODEL for the INPUT images and write one HTML file with "
        "the model summary, predictions and one section per technique. Images are embedded; "
        "the file needs no network and no script.",
    )
    add_model_args(parser)
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders, or .npy/.npz arrays"
    )
    parser.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="the HTML file to write"
    )
    _add_technique_args(parser)
    _add_evaluate_args(parser)
    parser.add_argument("--title", help="the report's title")
    parser.add_argument("--seed", type=int, default=0, help="seed for randomised techniques")
    parser.add_argument(
        "--force", action="store_true", help="overwrite the output file if it exists"
    )
    add_input_args(parser)
    return parser


def _add_technique_args(parser: argparse.ArgumentParser) -> None:
    """Which techniques, with which parameters, classes, labels and data set."""
    parser.add_argument(
        "--techniques",
        metavar="A,B",
        help="comma-separated technique names (default: every installed technique)",
    )
    parser.add_argument(
        "--classes", metavar="FILE", help="class names, one per line (line k is class k-1)"
    )
    parser.add_argument(
        "--labels",
        metavar="L1,L2",
        help="the true class of each input, comma-separated indices or class names",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="TECHNIQUE.KEY=VALUE",
        help="a technique parameter, e.g. occlusion.window=4 (repeatable)",
    )
    parser.add_argument(
        "--dataset",
        metavar="FILE.npz",
        help="a labelled data set for the techniques that explain one (embeddings): an .npz "
        "with arrays 'x' (N, H, W, C) and 'y' (N,), e.g. np.savez('set.npz', x=x, y=y)",
    )


def _add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """The section 'How faithful is each technique on this model'."""
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="add the section 'How faithful is each technique on this model': each heatmap "
        "scored by --metrics (slower: each metric runs the model again)",
    )
    parser.add_argument(
        "--metrics",
        metavar="A,B",
        help="with --evaluate: comma-separated metric names (default: deletion,insertion,"
        "randomization)",
    )
    parser.add_argument(
        "--evaluate-inputs",
        type=int,
        default=8,
        metavar="N",
        help="with --evaluate: score at most N inputs per technique (default: 8)",
    )


def run(args: argparse.Namespace) -> int:
    output = Path(args.output).expanduser()
    _check_output(output, force=args.force)
    if args.metrics is not None and not args.evaluate:
        raise InputError("--metrics only applies with --evaluate; add --evaluate")
    from innersight.loading import load_class_names, read_inputs
    from innersight.report import build_report

    class_names = load_class_names(args.classes) if args.classes else None
    _, adapter = load_model_from_args(args)
    x, names = read_inputs(
        args.inputs, model=adapter, scale=args.scale, mean=args.mean, std=args.std
    )
    labels = _labels(args.labels, len(x), class_names)
    techniques = _names(args.techniques)
    params = _params(args.param, techniques)
    report = build_report(
        {_model_key(args.model): adapter},
        x,
        techniques=techniques,
        labels=labels,
        input_names=names,
        class_names=class_names,
        dataset=_dataset(args.dataset),
        params=params,
        seed=args.seed,
        progress=False if args.quiet else None,
        title=args.title,
        evaluate=args.evaluate,
        metrics=args.metrics,
        evaluate_inputs=args.evaluate_inputs,
    )
    return _written(args, report, report.write(output))


def _written(args: argparse.Namespace, report: Any, path: Path) -> int:
    """Say what was written and what did not run; exit code 1 when a technique failed."""
    for section in report.sections:
        for r in section.runs:
            if r.status != "ok":
                note(args, f"{section.technique}: {r.message}")
    print(f"wrote {path} ({len(report.sections)} techniques, {report.seconds:.1f} s)")
    failed = sorted({s.technique for s in report.sections for r in s.runs if r.status == "error"})
    if failed:  # the report is written either way; the exit code tells scripts (as demo does)
        print(f"innersight: error: {', '.join(failed)} failed (see the report)", file=sys.stderr)
        return 1
    return 0


def _check_output(output: Path, *, force: bool) -> None:
    if output.is_dir():
        raise InputError(f"-o {str(output)!r} is a folder; give a file name such as report.html")
    if output.exists() and not force:
        raise InputError(
            f"{str(output)!r} already exists; pass --force to overwrite it, or -o another file"
        )


def _dataset(path: str | None) -> tuple[Any, Any] | None:
    """``(x, y)`` from an .npz holding arrays ``x`` and ``y`` (nothing is unpickled)."""
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise InputError(
            f"--dataset {path!r} could not be read as an .npz of arrays ({err}); write it with "
            "np.savez('set.npz', x=images, y=labels)"
        ) from err
    if "x" not in arrays or "y" not in arrays:
        raise InputError(
            f"--dataset {path!r} holds arrays {sorted(arrays)}; it needs 'x' (N, H, W, C) and "
            "'y' (N,): np.savez('set.npz', x=images, y=labels)"
        )
    x, y = arrays["x"], arrays["y"]
    if len(x) != len(y):
        raise InputError(f"--dataset {path!r}: x has {len(x)} samples but y has {len(y)} labels")
    return x, y


def _model_key(source: str) -> str:
    return Path(source).name if ":" not in source else source.rsplit(":", 1)[-1]


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InputError("--techniques is empty; give names such as saliency,occlusion")
    from innersight.api import get_technique

    for name in names:
        get_technique(name)  # TechniqueNotFoundError with suggestions, before any work
    return names


def _labels(text: str | None, n: int, class_names: Sequence[str] | None) -> list[Any] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != n:
        raise InputError(f"--labels has {len(parts)} entries for {n} inputs; give one per input")
    out: list[Any] = []
    for part in parts:
        if class_names is not None and part in class_names:
            out.append(part)
        elif part.lstrip("-").isdigit():
            out.append(int(part))
        elif class_names is None:
            out.append(part)
        else:
            raise InputError(
                f"--labels entry {part!r} is neither a class index nor one of the class names "
                f"in --classes ({', '.join(class_names[:10])}"
                f"{' ...' if len(class_names) > 10 else ''})"
            )
    return out


def _params(items: Sequence[str], techniques: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["occlusion.window=4"]`` -> ``{"occlusion": {"window": 4}}``, converted per signature."""
    from innersight.api import get_technique
    from innersight.cli.params import convert_params, parse_assignments

    grouped: dict[str, list[str]] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            raise InputError(
                f"--param {item!r} is not TECHNIQUE.KEY=VALUE; write e.g. "
                "--param occlusion.window=4"
            )
        grouped.setdefault(name.strip(), []).append(rest)
    out = {}
    for name, assignments in grouped.items():
        if techniques is not None and name not in techniques:
            raise InputError(
                f"--param for {name!r}, which is not among --techniques {','.join(techniques)}"
            )
        out[name] = convert_params(get_technique(name), parse_assignments(assignments))
    return out
