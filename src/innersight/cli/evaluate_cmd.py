"""``innersight evaluate MODEL INPUT... -o DIR``: how faithful is each technique on this model?

    innersight evaluate MODEL INPUT... -o DIR [--techniques a,b] [--metrics deletion,insertion]
                        [--param NAME.KEY=VALUE ...]

Runs each technique on the inputs, scores its maps with each metric and writes:

* ``DIR/evaluation.md``: the table (technique x metric, mean ± std over the inputs), also printed;
* ``DIR/evaluation.json``: the table's numbers, and every input's score per technique and metric;
* ``DIR/<metric>.png``: the mean curves of the metrics that have them (deletion, insertion,
  ROAD; randomization per layer), one line per technique;
* ``DIR/<technique>_<metric>.npz``: each Evaluation, readable with ``Evaluation.load``.

``--param`` sets a technique's or a metric's parameter: ``grad_cam.layer=conv3``,
``deletion.steps=50``. MODEL may be ``demo:torch`` or ``demo:keras`` (the digits demo CNN); with
a demo model and no INPUT, eight held-out digits are used.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import innersight as ins
from innersight.api import get_metric, get_technique
from innersight.cli.common import (
    add_input_args,
    add_model_args,
    check_output_dir,
    load_model_from_args,
    note,
    prepare_output_dir,
    print_table,
)
from innersight.cli.params import convert, convert_params, parse_assignments
from innersight.core.errors import InputError
from innersight.core.metric import Metric
from innersight.core.technique import Technique
from innersight.report.presets import in_order, preset_context, preset_params, skip_for_capabilities

__all__ = ["add_parser", "run"]

DEMO_MODELS = ("demo:torch", "demo:keras")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="score techniques with faithfulness and sanity metrics (deletion, randomization...)",
        description="Run each technique on MODEL for the INPUT images and score its maps with "
        "each metric (docs/metrics.md says what each number means): a table of mean ± std "
        "over the inputs, the curves as PNG, and every score as JSON. MODEL may also be "
        "demo:torch or demo:keras.",
    )
    add_model_args(parser)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="images, folders, .npy/.npz")
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "--techniques", metavar="A,B",
        help="techniques to evaluate (default: every installed technique that explains a "
        "class score per input, i.e. takes a target, and that the model can run)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics", metavar="A,B",
        help="metrics to compute (default: deletion,insertion,randomization)",
    )  # fmt: skip
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME.KEY=VALUE",
        help="a technique or metric parameter, e.g. deletion.steps=50 or grad_cam.layer=conv3",
    )  # fmt: skip
    parser.add_argument(
        "--max-inputs", type=int, metavar="N", help="evaluate only the first N inputs"
    )
    add_input_args(parser)
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    return parser


def run(args: argparse.Namespace) -> int:
    from innersight.report.scoring import DEFAULT_METRICS, faithfulness_section

    chosen = _techniques(args.techniques)
    metrics = [get_metric(m) for m in _names(args.metrics, DEFAULT_METRICS)]
    tech_params, metric_params = _split_params(args.param, chosen, metrics)
    check_output_dir(args.output, force=args.force)
    adapter = _adapter(args)
    x = _inputs(args, adapter)
    if not args.techniques:
        chosen = _runnable(args, chosen, adapter)
    explanations = _explain_all(chosen, adapter, x, tech_params)
    section = faithfulness_section(
        adapter,
        explanations,
        metrics=[m.name for m in metrics],
        params=metric_params,
        max_inputs=args.max_inputs,
        progress=False if args.quiet else None,
    )
    out = prepare_output_dir(args.output, force=args.force)
    return _write(args, out, section)


def _names(text: str | None, default: Sequence[str]) -> list[str]:
    if text:
        return [t.strip() for t in text.split(",") if t.strip()]
    return list(default)


def _techniques(text: str | None) -> list[Technique]:
    """--techniques in that order; by default every installed technique that explains a class
    score per input (it takes a ``target``: the maps the metrics score), in section order."""
    if text:
        return [get_technique(t) for t in _names(text, ())]
    return [
        tech
        for tech in in_order(ins.techniques().values())
        if "target" in tech.parameters() and tech.needs_inputs and not tech.accepts_datasets
    ]


def _runnable(args: argparse.Namespace, chosen: list[Technique], adapter: Any) -> list[Technique]:
    """The default techniques the model can run; the others are noted as skipped."""
    keep = []
    for tech in chosen:
        why = skip_for_capabilities(tech, adapter)
        if why is None:
            keep.append(tech)
        else:
            note(args, f"innersight: {tech.name} skipped: {why}")
    return keep


def _explain_all(
    chosen: list[Technique], adapter: Any, x: np.ndarray, params: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Each technique with its ``"full"`` preset (bounded defaults), under the user's params."""
    ctx = preset_context("full", adapter, x)
    return {
        tech.name: ins.explain(
            tech.name, adapter, x, **preset_params(tech, ctx, params.get(tech.name))
        )
        for tech in chosen
    }


def _split_params(
    items: list[str], techniques: list[Any], metrics: list[Metric]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``NAME.KEY=VALUE`` text -> converted parameters of techniques and of metrics."""
    grouped: dict[str, list[str]] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        if not dot or "=" not in rest:
            raise InputError(
                f"--param {item!r} is not NAME.KEY=VALUE; name the technique or metric it is "
                "for, e.g. --param deletion.steps=50 or --param grad_cam.layer=conv3"
            )
        grouped.setdefault(name.strip(), []).append(rest)
    by_name = {name: parse_assignments(rest) for name, rest in grouped.items()}
    techs = {t.name: t for t in techniques}
    mets = {m.name: m for m in metrics}
    unknown = sorted(set(by_name) - set(techs) - set(mets))
    if unknown:
        raise InputError(
            f"--param names {unknown[0]!r}, which is not among the techniques "
            f"({', '.join(techs)}) or metrics ({', '.join(mets)}) being run"
        )
    tech_params = {n: convert_params(techs[n], p) for n, p in by_name.items() if n in techs}
    metric_params = {n: _convert_metric(mets[n], p) for n, p in by_name.items() if n in mets}
    return tech_params, metric_params


def _convert_metric(metric: Metric, raw: dict[str, str]) -> dict[str, Any]:
    valid = metric.parameters()
    out = {}
    for key, text in raw.items():
        if key not in valid:
            raise InputError(
                f"metric {metric.name!r} has no parameter {key!r}; valid parameters: "
                f"{', '.join(valid)}"
            )
        param = valid[key]
        out[key] = convert(
            text, _annotation(metric, param), param.default, name=f"{metric.name}.{key}"
        )
    return out


def _annotation(metric: Metric, param: inspect.Parameter) -> Any:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return Any
    if not isinstance(ann, str):
        return ann
    module = sys.modules.get(type(metric).__module__)
    namespace = {**vars(typing), "np": np, **(vars(module) if module else {})}
    try:
        return eval(ann, namespace)  # the module's own annotation text, as typing does
    except Exception:
        return Any


def _adapter(args: argparse.Namespace) -> Any:
    if args.model in DEMO_MODELS:
        from innersight.compare import demo_keras, demo_torch

        if args.model == "demo:keras":
            return ins.wrap(demo_keras())
        return ins.wrap(demo_torch(), input_shape=(32, 32, 1))
    return load_model_from_args(args)[1]


def _inputs(args: argparse.Namespace, adapter: Any) -> np.ndarray:
    if not args.inputs:
        if args.model not in DEMO_MODELS:
            raise InputError("evaluate needs inputs: pass image files, folders or .npy/.npz arrays")
        from innersight.demo import demo_inputs
        from innersight.models import digits_data

        split = digits_data()
        return split.x_test[demo_inputs(split.x_test, split.y_test, 8)]
    from innersight.loading import read_inputs

    size = channels = None
    if args.input_shape is not None and len(args.input_shape) == 3:
        size, channels = tuple(args.input_shape[:2]), args.input_shape[2]
    x, _ = read_inputs(
        args.inputs, size=size, channels=channels, scale=args.scale, mean=args.mean,
        std=args.std, model=adapter,
    )  # fmt: skip
    return x


def _write(args: argparse.Namespace, out: Path, section: Any) -> int:
    from innersight.core.evaluation_render import overlay
    from innersight.core.render import png_bytes

    header, rows = section.header(), section.rows()
    (out / "evaluation.md").write_text(_markdown(header, rows, section))
    record = section.to_dict()
    record["scores"] = {
        f"{t}/{m}": [None if v != v else v for v in ev.scores.tolist()]
        for (t, m), ev in section.evaluations.items()
    }
    (out / "evaluation.json").write_text(json.dumps(record, indent=2))
    for (t, m), ev in section.evaluations.items():
        ev.save(out / f"{t}_{m}.npz")
    for m in section.metrics:
        found = {t: ev for (t, mm), ev in section.evaluations.items() if mm == m}
        first = next(iter(found.values()), None)
        if first is not None and first.curves:
            image = overlay(found, next(iter(first.curves)))
            if image is not None:
                (out / f"{m}.png").write_bytes(png_bytes(image))
    if not args.quiet:
        print_table(rows, header, right=range(1, len(header)))
        print(f"wrote {out / 'evaluation.md'}")
    errors = {k: c.error for k, c in section.cells.items() if c.error}
    for (t, m), message in errors.items():
        note(args, f"innersight: {m} failed on {t}: {message}")
    for t, why in section.skipped.items():
        note(args, f"innersight: {t} skipped: {why}")
    return 1 if errors else 0


def _markdown(header: list[str], rows: list[list[str]], section: Any) -> str:
    lines = [f"# {section.title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Mean ± standard deviation over the inputs. ↓: lower is better; ↑: higher.", ""]
    lines += [f"- **{m}**: {text}" for m, text in section.notes.items()]
    return "\n".join(lines) + "\n"
