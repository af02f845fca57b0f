"""``innersight run TECHNIQUE MODEL --dataset DIR -o OUT``: a whole data set, into Parquet shards.

The options of ``innersight run`` apply (model, --weights, --input-shape, --scale/--mean/--std
for image files, --target, --param); the output folder holds ``manifest.json`` and the shards
(see :func:`innersight.explain_dataset`). ``embeddings`` runs
:func:`innersight.embed_dataset` instead (with its options as ``--param``, e.g.
``--param method=pca``). A rerun resumes where the last one stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from innersight.core.errors import InputError
from innersight.core.frameworks import is_torch

__all__ = ["add_dataset_arguments", "run_dataset"]

EMBED_PARAMS: dict[str, type] = {
    "layer": str,
    "method": str,
    "sample": int,
    "components": int,
    "perplexity": float,
    "seed": int,
    "projector": int,
    "quality_samples": int,
}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset``, ``--engine``, ``--workers``, ``--batch-size``, ``--no-resume``."""
    group = parser.add_argument_group(
        "data sets", "explain a whole data set into Parquet shards (see docs/dataset.md)"
    )
    group.add_argument(
        "--dataset",
        type=Path,
        metavar="DIR",
        help="a folder of images (recursive), a .npy/.npz file or a Parquet data set; -o gets "
        "manifest.json and Parquet shards instead of files per input",
    )
    group.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="local (default) or ray"
    )
    group.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (local) or actors (ray)"
    )
    group.add_argument(
        "--batch-size", type=_count, metavar="N", help="inputs per shard (default: auto)"
    )
    group.add_argument(
        "--no-resume",
        action="store_true",
        help="start over instead of keeping the complete shards of an earlier run in -o",
    )


def _source(args: argparse.Namespace) -> Any:
    from innersight.dataset.files import ImageFolder, ParquetSource, open_path

    path = Path(args.dataset)
    shape = (
        args.input_shape if args.input_shape is not None and len(args.input_shape) == 3 else None
    )
    options = {
        "size": tuple(shape[:2]) if shape else None,
        "channels": shape[2] if shape else None,
        "scale": args.scale,
        "mean": args.mean,
        "std": args.std,
    }
    source = open_path(path)
    if isinstance(source, ImageFolder):
        return ImageFolder(path, **options)
    if isinstance(source, ParquetSource):
        return ParquetSource(path, **options)
    if any(args.__dict__.get(k) is not None for k in ("scale", "mean", "std")):
        raise InputError(
            f"--scale/--mean/--std apply to image files; {str(path)!r} holds arrays, which are "
            "taken as they are: scale them before saving"
        )
    return source


def _model(args: argparse.Namespace) -> Any:
    """The model as a spec the workers load (built here once, for the checks of ``run``)."""
    from innersight.cli.common import load_model_from_args
    from innersight.dataset.modelref import ModelRef

    model, _ = load_model_from_args(args)
    options = {"input_shape": args.input_shape} if args.input_shape and is_torch(model) else {}
    return ModelRef("spec", str(args.model), args.weights, bool(args.unsafe), options, built=model)


def _embed_params(args: argparse.Namespace) -> dict[str, Any]:
    from innersight.cli.params import parse_assignments

    raw = parse_assignments(args.param)
    unknown = sorted(set(raw) - set(EMBED_PARAMS))
    if unknown or args.target is not None:
        raise InputError(
            f"embeddings of a data set take --param {', '.join(EMBED_PARAMS)}; got "
            f"{', '.join(unknown) or '--target'}"
        )
    try:
        return {k: EMBED_PARAMS[k](v) for k, v in raw.items()}
    except ValueError as err:
        raise InputError(f"--param value: {err}") from err


def _explain_params(args: argparse.Namespace) -> dict[str, Any]:
    from innersight.api import get_technique
    from innersight.cli.params import convert_params, parse_assignments

    raw = parse_assignments(args.param)
    label = args.target is not None and args.target.strip() == "label"
    if args.target is not None and not label:
        raw["target"] = args.target
    params = convert_params(get_technique(args.technique), raw)
    return {**params, "target": "label"} if label else params


def run_dataset(args: argparse.Namespace) -> int:
    """The body of ``innersight run ... --dataset DIR``; returns the exit code."""
    import innersight.dataset as ds

    if args.inputs:
        raise InputError("give the inputs either as INPUT arguments or with --dataset, not both")
    if getattr(args, "force", False):
        raise InputError(
            "--force does not apply to --dataset: a data-set run resumes its own files in -o "
            "and refuses folders holding anything else; pass --no-resume to start over"
        )
    from innersight.api import get_technique

    # a technique that describes a whole data set (accepts_datasets) is run by embed_dataset,
    # as innersight.explain_dataset advises for it
    embed = get_technique(args.technique).accepts_datasets
    params = _embed_params(args) if embed else _explain_params(args)
    common = {
        "out": args.output,
        "engine": args.engine,
        "batch_size": args.batch_size or "auto",
        "workers": args.workers,
        "resume": not args.no_resume,
        "progress": False if getattr(args, "quiet", False) else None,
    }
    source, model = _source(args), _model(args)
    if embed:
        run = ds.embed_dataset(model, source, **common, **params)
    else:
        run = ds.explain_dataset(args.technique, model, source, **common, **params)
    if not getattr(args, "quiet", False):
        _print_summary(run.summary(), args.output)
    return 0


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    seconds = summary.get("seconds") or 0.0
    print(
        f"{summary['technique']}: {summary['done']} of {summary['inputs']} inputs in "
        f"{summary['shards']} shard(s), {summary['failed']} failed, {seconds:.1f} s -> {out}"
    )
    for kind, count in summary["failure_kinds"].items():
        print(f"  failed ({count}): {kind}")
    if "accuracy" in summary:
        print(f"  accuracy on the labels: {summary['accuracy']:.2%}")
    quality = summary.get("embedding", {}).get("trustworthiness")
    if quality is not None:
        print(f"  map trustworthiness: {quality:.3f}")
