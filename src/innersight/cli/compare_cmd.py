"""``innersight compare``: one technique (or all) on two models, with agreement metrics.

    innersight compare TECHNIQUE MODEL_A MODEL_B INPUT... -o DIR [--param key=value ...]
    innersight compare --all MODEL_A MODEL_B INPUT... -o DIR

One technique writes ``DIR/<technique>.png`` (A | B | |A - B|), ``.html``, ``_metrics.json``
and both explanations (``_a.npz``, ``_b.npz``). ``--all`` runs every installed technique with
its quick preset (see :func:`innersight.compare.compare_all`) and writes ``DIR/compare.html``
(a metrics table and one section per technique), ``DIR/compare.json`` and
``DIR/<technique>.png``; techniques a model cannot run are listed as skipped.

MODEL may be ``demo:torch`` (the trained digits CNN) or ``demo:keras`` (its Keras port); with a
demo model and no INPUT, eight held-out digits are used.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

import innersight as ins
from innersight.api import get_technique
from innersight.cli.common import (
    add_input_args,
    check_output_dir,
    note,
    prepare_output_dir,
    print_table,
    shape,
)
from innersight.cli.params import convert_params, parse_assignments
from innersight.core.errors import InputError, did_you_mean
from innersight.core.frameworks import is_torch
from innersight.core.technique import Technique

__all__ = ["add_parser", "run"]

DEMO_MODELS = ("demo:torch", "demo:keras")
COLUMNS = ("max_abs_diff", "rel_l2", "spearman", "top1pct", "top5pct")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="run a technique (or --all) on two models and measure how far they agree",
        usage="innersight compare (TECHNIQUE | --all) MODEL_A MODEL_B [INPUT ...] -o DIR",
        description="Run TECHNIQUE (or every technique, --all) on MODEL_A and MODEL_B, two "
        "models with the same input space (e.g. a Keras model and its torch port), and write "
        "side-by-side figures with difference maps and per-input agreement metrics. MODEL: a "
        ".keras/.h5 file, TorchScript .pt, .pt2, package.module:callable, or demo:torch / "
        "demo:keras (the digits demo CNN and its Keras port).",
    )
    parser.add_argument("words", nargs="*", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--all", action="store_true", help="compare every installed technique")
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a technique parameter for both models (repeatable); KEY_b=VALUE (e.g. "
        "layer_b=features.3) sets it for MODEL_B only",
    )  # fmt: skip
    parser.add_argument("--weights-a", metavar="FILE", help="weights for MODEL_A")
    parser.add_argument("--weights-b", metavar="FILE", help="weights for MODEL_B")
    parser.add_argument(
        "--unsafe", action="store_true", help="allow pickled torch files (trusted files only)"
    )
    parser.add_argument(
        "--input-shape", type=shape, metavar="H,W,C",
        help="input shape for torch models (they declare none); inputs are resized to it",
    )  # fmt: skip
    add_input_args(parser)
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    return parser


def _positionals(args: argparse.Namespace) -> tuple[str | None, str, str, list[str]]:
    words = list(args.words)
    need = 2 if args.all else 3
    if len(words) < need:
        what = "MODEL_A MODEL_B" if args.all else "TECHNIQUE MODEL_A MODEL_B"
        raise InputError(
            f"compare needs {what} [INPUT ...], got {len(words)} argument(s) {words}; e.g. "
            "innersight compare saliency model.keras model.pt cat.png -o out"
        )
    technique = None if args.all else words.pop(0)
    return technique, words[0], words[1], words[2:]


def _adapter(source: str, weights: str | None, args: argparse.Namespace) -> Any:
    """The wrapped model: a demo, or ``innersight.loading.load_model`` (imported lazily)."""
    if source in DEMO_MODELS:
        from innersight.compare import demo_keras, demo_torch

        if source == "demo:keras":
            return ins.wrap(demo_keras())
        return ins.wrap(demo_torch(), input_shape=(32, 32, 1))
    if source.startswith("demo:") and not Path(source).exists():
        raise InputError(f"unknown demo model {source!r}; use {' or '.join(DEMO_MODELS)}")
    from innersight.loading import load_model

    if "tensorflow" not in sys.modules:  # TensorFlow's C++ start-up chatter
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = load_model(source, weights=weights, allow_pickle=args.unsafe)
    if is_torch(model) and args.input_shape is not None:
        return ins.wrap(model, input_shape=tuple(args.input_shape))
    return ins.wrap(model)


def _inputs(args: argparse.Namespace, paths: list[str], a: Any, demo: bool) -> np.ndarray:
    if not paths:
        if not demo:
            raise InputError("compare needs inputs: pass image files, folders or .npy/.npz arrays")
        from innersight.demo import demo_inputs
        from innersight.models import digits_data

        split = digits_data()
        return split.x_test[demo_inputs(split.x_test, split.y_test, 8)]
    from innersight.loading import read_inputs

    size = channels = None
    if args.input_shape is not None and len(args.input_shape) == 3:
        size, channels = tuple(args.input_shape[:2]), args.input_shape[2]
    x, _ = read_inputs(
        paths, size=size, channels=channels, scale=args.scale, mean=args.mean, std=args.std,
        model=a,
    )  # fmt: skip
    return x


def _params(tech: Technique, raw: dict[str, str]) -> dict[str, Any]:
    """--param text converted by the technique's signature; ``KEY_b`` like ``KEY``."""
    valid = tech.parameters()
    mine = {k: v for k, v in raw.items() if not (k.endswith("_b") and k[:-2] in valid)}
    for_b = {k[:-2]: v for k, v in raw.items() if k not in mine}
    out = convert_params(tech, mine)
    out.update({f"{k}_b": v for k, v in convert_params(tech, for_b).items()})
    return out


def run(args: argparse.Namespace) -> int:
    technique, src_a, src_b, paths = _positionals(args)
    tech = get_technique(technique) if technique else None
    raw = parse_assignments(args.param)
    user = _user_params(tech, raw)
    check_output_dir(args.output, force=args.force)
    demo = src_a in DEMO_MODELS or src_b in DEMO_MODELS
    a = _adapter(src_a, args.weights_a, args)
    b = _adapter(src_b, args.weights_b, args)
    x = _inputs(args, paths, a, demo)
    if tech is not None:
        done = _compare_one(args, tech, a, b, x, user[tech.name])
        out = prepare_output_dir(args.output, force=args.force)
        page = done.save(out) / f"{done.technique}.html"
        return _report(args, [done], page, {})
    from innersight.compare import compare_all, save_all

    found = compare_all(a, b, x, params=user)
    for name, why in {**found.skipped, **found.failures}.items():
        note(args, f"innersight: {name} {'skipped' if name in found.skipped else 'failed'}: {why}")
    out = prepare_output_dir(args.output, force=args.force)
    page = save_all(found.comparisons, out, failures=found.failures, skipped=found.skipped)
    return _report(args, found.comparisons, page, found.failures)


def _user_params(tech: Technique | None, raw: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``{technique: converted --param values}``: for one technique all of them; with --all,
    each technique gets those it takes (a parameter no technique takes is an error)."""
    if tech is not None:
        return {tech.name: _params(tech, raw)}
    out: dict[str, dict[str, Any]] = {}
    for other in ins.techniques().values():
        valid = other.parameters()
        mine = {k: v for k, v in raw.items() if k in valid or k[:-2] in valid}
        if mine:
            out[other.name] = _params(other, mine)
    unused = sorted(set(raw) - {k for p in out.values() for k in p})
    if unused:
        known = {k for t in ins.techniques().values() for k in t.parameters()}
        raise InputError(
            f"--param {unused[0]}: no installed technique takes it, so with --all it would "
            f"change nothing; give a parameter of one of them{did_you_mean(unused[0], known)}"
        )
    return out


def _compare_one(
    args: argparse.Namespace, tech: Technique, a: Any, b: Any, x: Any, user: dict[str, Any]
) -> Any:
    """One technique with its ``"full"`` preset (bounded defaults) under the user's params."""
    from innersight.compare import compare
    from innersight.report.presets import preset_context, preset_params

    ctx = preset_context("full", a, x)
    params = preset_params(tech, ctx, user)
    params["progress"] = user.get("progress", False if args.quiet else None)
    return compare(tech.name, a, b, x, **params)


def _report(args: argparse.Namespace, done: list[Any], page: Path, failures: dict[str, str]) -> int:
    """The metrics table on stdout (unless -q); exit code 1 when a technique failed."""
    if not args.quiet:
        rows = [[c.technique, *(_num(c.summary().get(k)) for k in COLUMNS)] for c in done]
        print_table(rows, ["technique", *COLUMNS], right=range(1, len(COLUMNS) + 1))
        print(f"wrote {page}")
    if failures:
        print(
            f"innersight: {len(failures)} technique(s) failed: {', '.join(failures)}",
            file=sys.stderr,
        )
    return 1 if failures else 0


def _num(v: Any) -> str:
    return "n/a" if v is None or v != v else f"{v:.3g}"
