"""``innersight run TECHNIQUE MODEL INPUT... -o DIR``: one technique, files for every input.

For each input ``NAME`` (file stem; ``stem_3`` for the 4th image of an array) it writes
``NAME_TECHNIQUE.png`` (the rendering), ``.npz`` (raw values, inputs and metadata, readable with
``Explanation.load``) and ``.json`` (parameters, meta, versions, timings).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import innersight as ins
from innersight.api import get_technique
from innersight.cli.common import (
    add_input_args,
    add_model_args,
    check_output_dir,
    load_model_from_args,
    prepare_output_dir,
)
from innersight.cli.dataset_cmd import add_dataset_arguments, run_dataset
from innersight.cli.params import convert_params, parse_assignments
from innersight.core.batching import Progress
from innersight.core.errors import InputError, did_you_mean, summarize_names
from innersight.core.technique import Explanation, Technique
from innersight.report.presets import preset_context, preset_params

T = TypeVar("T")
Inputs = np.ndarray | tuple[np.ndarray, ...]

#: The .npz names the image reader picks among several arrays (loading.images).
IMAGE_KEYS = ("inputs", "images", "x")

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run a technique on a model and inputs, write PNG/NPZ/JSON per input",
        description="Run TECHNIQUE on MODEL for each INPUT (image files, folders, .npy/.npz "
        "arrays) and write, per input, a PNG, the raw values (.npz) and a JSON record. "
        "See `innersight list` for techniques.",
    )
    parser.add_argument("technique", metavar="TECHNIQUE")
    add_model_args(parser)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="images, folders, .npy/.npz")
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "--target",
        metavar="T",
        help="class index (or name, with --classes), or one per input: 3,5,1; default: predicted",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a technique parameter, e.g. --param steps=32 (repeatable)",
    )
    add_input_args(parser)
    parser.add_argument("--classes", type=Path, metavar="FILE", help="class names, one a line")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    add_dataset_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        return run_dataset(args)
    tech = get_technique(args.technique)
    classes = ins.load_class_names(args.classes) if args.classes else None
    requested = _requested_params(args, tech, classes)
    if tech.needs_inputs and not args.inputs:
        raise InputError(f"technique {tech.name!r} needs inputs: pass image files or folders")
    check_output_dir(args.output, force=args.force)  # before the slow part, creating nothing

    t0 = time.perf_counter()
    _, adapter = load_model_from_args(args)
    t1 = time.perf_counter()
    x, names = _inputs(args, adapter)
    timings = {"load_model": t1 - t0, "load_inputs": time.perf_counter() - t1}

    params = _with_remedy(adapter, x, lambda: _full_params(tech, adapter, x, requested))
    if "progress" not in requested:
        params["progress"] = False if args.quiet else None
    jobs = _jobs(tech, x, names, params)
    out = prepare_output_dir(args.output, force=args.force)
    with Progress(len(jobs), tech.name, False if args.quiet or len(jobs) < 2 else None) as bar:
        for name, xi, pi in jobs:
            ex = _explain(tech, adapter, xi, pi)
            ex.meta["timings"] = {**timings, "explain": ex.meta.get("seconds")}
            ex.meta["cli"] = {**_record(args, requested), "input": name}
            _name_targets(ex, classes)
            written = _save(ex, out / (name if name == tech.name else f"{name}_{tech.name}"))
            bar.update(1)
            if not args.quiet:
                print(f"{name}: {_summary(ex)} -> {written}")
    return 0


def _record(args: argparse.Namespace, requested: dict[str, Any]) -> dict[str, Any]:
    """How the command was asked to run (kept in each result's ``meta["cli"]``)."""
    return {
        "model": str(args.model),
        "weights": args.weights,
        "input_shape": args.input_shape,
        "scale": args.scale,
        "mean": args.mean,
        "std": args.std,
        "params": requested,
    }


def _requested_params(
    args: argparse.Namespace, tech: Technique, classes: list[str] | None
) -> dict[str, Any]:
    """--param and --target, converted to the types of the technique's signature."""
    raw = parse_assignments(args.param)
    if args.target is not None:
        if "target" in raw:
            raise InputError("give the target once: --target or --param target=..., not both")
        raw["target"] = _target_text(args.target, classes)
    return convert_params(tech, raw)


def _full_params(
    tech: Technique, adapter: Any, x: Inputs | None, requested: dict[str, Any]
) -> dict[str, Any]:
    """The technique's ``"full"`` preset (its defaults, bounded for the size of the model and
    the inputs) under the parameters asked for on the command line."""
    # several inputs: no probe of the model with one of them (presets then see no sample)
    ctx = preset_context("full", adapter, x if isinstance(x, np.ndarray) else None)
    return preset_params(tech, ctx, requested)


def _explain(
    tech: Technique, adapter: Any, x: Inputs | None, params: dict[str, Any]
) -> Explanation:
    """``innersight.explain``; a torch shape error gets the command-line remedy added."""
    return _with_remedy(adapter, x, lambda: ins.explain(tech.name, adapter, x, **params))


def _with_remedy(adapter: Any, x: Inputs | None, action: Callable[[], T]) -> T:
    """``action()``; an InputError from running a model that declares no input size on inputs
    it does not take gets the command-line remedy (--input-shape) added."""
    try:
        return action()
    except InputError as err:
        if adapter.input_shape is not None or x is None or "failed on inputs" not in str(err):
            raise
        raise InputError(
            f"{err}. On the command line: {adapter.backend} model {adapter.name} declares no "
            f"input size, and the inputs were read as {_first(x).shape[1:]}; pass "
            "--input-shape H,W,C and they are resized and converted to it"
        ) from err


def _inputs(args: argparse.Namespace, adapter: Any) -> tuple[Inputs | None, list[str]]:
    if not args.inputs:
        return None, []
    raw = _raw_arrays([Path(p) for p in args.inputs], adapter)
    if raw is not None:
        return raw
    from innersight.loading import read_inputs

    size = channels = None
    if args.input_shape is not None and len(args.input_shape) == 3:
        size, channels = tuple(args.input_shape[:2]), args.input_shape[2]
    return read_inputs(
        args.inputs,
        size=size,
        channels=channels,
        scale=args.scale,
        mean=args.mean,
        std=args.std,
        model=adapter,
    )


def _raw_arrays(files: list[Path], adapter: Any) -> tuple[Inputs, list[str]] | None:
    """``.npy``/``.npz`` inputs that are not images, as they are (no resizing or scaling):
    arrays of any rank when the model declares an input shape that is not (H, W, C) or the
    arrays are not of rank 2..4, and ``.npz`` files with several arrays (several inputs, in the
    file's key order). None when the image reader applies (image files, image arrays)."""
    if not files or any(f.suffix.lower() not in (".npy", ".npz") or not f.is_file() for f in files):
        return None
    loaded = [_load_arrays(f) for f in files]
    declared = adapter.input_shape
    other_rank = declared is not None and len(declared) != 3
    if not (other_rank or any(len(t) > 1 or t[0].ndim not in (2, 3, 4) for t in loaded)):
        return None
    counts = sorted({len(t) for t in loaded})
    if len(counts) > 1:
        raise InputError(
            f"the array files hold {' and '.join(map(str, counts))} arrays; give every file the "
            "same inputs (one array per model input, in the same order)"
        )
    parts = tuple(np.concatenate([t[i] for t in loaded]) for i in range(counts[0]))
    names = [f"{f.stem}_{i}" for f, t in zip(files, loaded, strict=True) for i in range(len(t[0]))]
    return (parts if len(parts) > 1 else parts[0]), names


def _load_arrays(path: Path) -> tuple[np.ndarray, ...]:
    """The arrays of a .npy (one) or .npz (all, in key order; only the image key when one of
    the image reader's names is there)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                keys = [k for k in data.files if k in IMAGE_KEYS][:1] or list(data.files)
                arrays = tuple(np.asarray(data[k]) for k in keys)
        else:
            arrays = (np.asarray(data),)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"could not read array file {str(path)!r} ({err})") from err
    if not arrays or any(a.ndim < 2 or a.dtype.kind not in "fiu" for a in arrays):
        raise InputError(
            f"{str(path)!r} holds {[(a.shape, str(a.dtype)) for a in arrays]}; expected batches "
            "of numbers with the batch axis first, (N, ...)"
        )
    return arrays


def _jobs(
    tech: Technique, x: Inputs | None, names: list[str], params: dict[str, Any]
) -> list[tuple[str, Inputs | None, dict[str, Any]]]:
    """One run per input (a per-input ``target`` list is split among them), except for
    techniques without inputs or that describe the whole set (embeddings): one run, named after
    the technique."""
    if x is None:
        return [(tech.name, None, params)]
    if tech.accepts_datasets:
        return [(tech.name, x, params)]
    target = params.get("target")
    n = len(_first(x))
    if isinstance(target, (list, tuple)) and len(target) not in (1, n):
        raise InputError(
            f"--target has {len(target)} classes for {n} inputs; give one class, or one per "
            "input in order"
        )
    jobs: list[tuple[str, Inputs | None, dict[str, Any]]] = []
    for i, name in enumerate(names):
        pi = dict(params)
        if isinstance(target, (list, tuple)):
            pi["target"] = target[i if len(target) > 1 else 0]
        xi = tuple(p[i : i + 1] for p in x) if isinstance(x, tuple) else x[i : i + 1]
        jobs.append((name, xi, pi))
    return jobs


def _first(x: Inputs) -> np.ndarray:
    """The first input of several (what presets and messages describe), or the one."""
    return x[0] if isinstance(x, tuple) else x


def _target_text(text: str, classes: list[str] | None) -> str:
    """Class names (with --classes) to indices; anything else is left for the converter."""
    parts = [p.strip() for p in text.split(",")]
    if classes is None or all(p.lstrip("-").isdigit() for p in parts):
        return text
    index = {name: i for i, name in enumerate(classes)}
    unknown = [p for p in parts if p not in index and not p.isdigit()]
    if unknown:
        raise InputError(
            f"--target {', '.join(map(repr, unknown))} is not a class index nor a name in "
            f"--classes ({summarize_names(classes, 'classes')})"
            f"{did_you_mean(unknown[0], classes)}"
        )
    return ",".join(str(index.get(p, p)) for p in parts)


def _name_targets(ex: Explanation, classes: list[str] | None) -> None:
    targets = ex.meta.get("target")
    if classes is None or not isinstance(targets, list):
        return
    bad = [t for t in targets if not isinstance(t, int) or not 0 <= t < len(classes)]
    if bad:
        raise InputError(
            f"target {bad[0]} has no name: --classes lists {len(classes)} classes; the class file "
            "must have one line per model output"
        )
    ex.meta["target_names"] = [classes[t] for t in targets]


def _save(ex: Explanation, stem: Path) -> str:
    for suffix in (".png", ".npz", ".json"):
        ex.save(stem.with_name(stem.name + suffix))
    return f"{stem}.{{png,npz,json}}"


def _summary(ex: Explanation) -> str:
    meta = ex.meta
    if "target" not in meta:
        return ex.technique
    names = meta.get("target_names")
    shown = ", ".join(
        f"{t} ({names[i]!r})" if names else str(t) for i, t in enumerate(meta["target"])
    )
    return f"target {shown}"
