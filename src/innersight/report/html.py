"""The report as one self-contained HTML document.

Rules: every piece of text that comes from a model, a class list, a file name, a plugin or an
error message goes through :func:`esc` (``html.escape``, quotes included); images are embedded as
``data:`` URIs; the CSS is inline; there is no script, and a Content-Security-Policy forbids any
network access and script, so even a mistake in escaping could not run code or phone home.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable

from innersight.core.technique import to_jsonable
from innersight.report.faithfulness import ANCHOR, render_faithfulness
from innersight.report.records import (
    ERROR,
    OK,
    DatasetView,
    Figure,
    ModelSummary,
    Prediction,
    Report,
    Run,
    Section,
)
from innersight.report.style import CSS

__all__ = ["esc", "render_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_MAX_VALUE = 160


def esc(value: object) -> str:
    """Text -> HTML-safe text (``<``, ``>``, ``&`` and both quotes escaped)."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A parameter or fact value as short text (JSON-like), cut to a readable length."""
    try:
        text = json.dumps(_rounded(to_jsonable(value)), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _rounded(value: object) -> object:
    """Floats to 4 significant digits (timings and metrics, not 16 digits of noise)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def shape(dims: Iterable[object] | None) -> str:
    return (
        "?" if dims is None else "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
    )


def img(fig: Figure) -> str:
    size = f' width="{fig.width}" height="{fig.height}"' if fig.width else ""
    return (
        f'<figure><img src="{fig.data_uri()}" alt="{esc(fig.caption)}"{size}>'
        f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
    )


def table(rows: Iterable[tuple[object, object]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt_cell(v))}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def fmt_cell(value: object) -> str:
    return value if isinstance(value, str) else fmt(value)


def render_report(report: Report) -> str:
    parts = [
        _head(report.title),
        _header(report),
        _models(report.models) if report.models or not report.datasets else "",
        *(_dataset(view, i) for i, view in enumerate(report.datasets)),
        _inputs(report),
        *(_section(sec) for sec in report.sections),
        render_faithfulness(report.faithfulness),
        _environment(report),
        "</main></body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
    )


def _header(report: Report) -> str:
    links = ['<a href="#models">Models</a>'] if report.models or not report.datasets else []
    links += [f'<a href="#dataset-{i}">data set {i + 1}</a>' for i in range(len(report.datasets))]
    if report.inputs:
        links.append('<a href="#inputs">Inputs and predictions</a>')
    for sec in report.sections:
        states = {run.status for run in sec.runs}
        badge = (
            "" if states == {OK} else f' <span class="badge">{esc("/".join(sorted(states)))}</span>'
        )
        links.append(f'<a href="#{esc(sec.anchor)}">{esc(sec.technique)}</a>{badge}')
    if report.faithfulness:
        links.append(f'<a href="#{ANCHOR}">Faithfulness</a>')
    links.append('<a href="#environment">Environment</a>')
    return (
        f"<header><h1>{esc(report.title)}</h1>"
        f'<p class="meta">{_counts(report)}; built {esc(report.created)} '
        f"in {report.seconds:.1f} s</p>"
        f"<nav><ul>{''.join(f'<li>{link}</li>' for link in links)}</ul></nav></header>"
    )


def _counts(report: Report) -> str:
    if report.datasets and not report.models:
        return f"{len(report.datasets)} data-set run(s)"
    runs = f", {len(report.datasets)} data-set run(s)" if report.datasets else ""
    return (
        f"{len(report.models)} model(s), {len(report.inputs)} input(s), "
        f"{len(report.sections)} technique(s){runs}; seed {report.seed}"
    )


def _models(models: list[ModelSummary]) -> str:
    cards = []
    for m in models:
        facts = [
            ("backend", m.backend),
            ("model", f"{m.name} ({m.class_name})"),
            ("input shape", shape(m.input_shape)),
            ("parameters", f"{m.num_params:,}"),
            ("layers", str(len(m.layers))),
            ("capabilities", ", ".join(m.capabilities)),
        ]
        if m.accuracy is not None:
            facts.append(("accuracy", f"{m.accuracy:.2%} on {m.accuracy_on} labelled samples"))
        rows = "".join(
            f"<tr><td>{esc(r.name)}</td><td>{esc(r.kind)}</td><td>{esc(shape(r.output_shape))}"
            f'</td><td class="num">{r.num_params:,}</td></tr>'
            for r in m.layers
        )
        cards.append(
            f'<div class="card"><h3>{esc(m.key)}</h3>{table(facts)}'
            f"<details><summary>{len(m.layers)} layers</summary>"
            '<table class="layers"><tr><th>name</th><th>kind</th><th>output shape</th>'
            f"<th>parameters</th></tr>{rows}</table></details></div>"
        )
    return f'<section id="models"><h2>Models</h2><div class="grid">{"".join(cards)}</div></section>'


def _dataset(view: DatasetView, index: int) -> str:
    """A data-set run: facts, failures, classes and its figures (worst inputs, or the map)."""
    failures = "".join(f"<li>{count} &times; {esc(why)}</li>" for why, count in view.failures)
    labelled = any(c[3] is not None for c in view.classes)
    head = "<tr><th>class</th><th>predicted</th>" + (
        "<th>labelled</th><th>correct</th></tr>" if labelled else "</tr>"
    )
    rows = "".join(
        f'<tr><td>{esc(c)}</td><td class="num">{p:,}</td>'
        + (f'<td class="num">{n:,}</td><td class="num">{r:,}</td>' if labelled else "")
        + "</tr>"
        for c, p, n, r in view.classes
    )
    what = "the map" if view.metric == "map" else f"worst by {esc(view.metric)}"
    figs = "".join(img(f) for f in view.figures)
    return (
        f'<section id="dataset-{index}"><h2>{esc(view.title)}</h2>'
        f'<div class="grid"><div class="card">{table(view.facts)}'
        + (f"<h3>failed inputs</h3><ul>{failures}</ul>" if failures else "")
        + f'</div><div class="card"><table class="layers">{head}{rows}</table></div></div>'
        f'<h3>{what}</h3><div class="grid">{figs}</div></section>'
    )


def _inputs(report: Report) -> str:
    """One column per input: the image, its label, then each model's top-3 classes."""
    if not report.inputs:
        return ""
    labels = [
        report.labels[i] if i < len(report.labels) else None for i in range(len(report.inputs))
    ]
    rows = ["<tr><th>input</th>" + "".join(f"<td>{img(f)}</td>" for f in report.inputs) + "</tr>"]
    if any(label is not None for label in labels):
        cells = "".join(f"<td>{esc('' if lab is None else lab)}</td>" for lab in labels)
        rows.append(f"<tr><th>label</th>{cells}</tr>")
    for key, preds in report.predictions.items():
        cells = "".join(_prediction(pred, label) for pred, label in zip(preds, labels, strict=True))
        rows.append(f"<tr><th>{esc(key)}</th>{cells}</tr>")
    source = {p.probabilities_from for preds in report.predictions.values() for p in preds[:1]}
    return (
        '<section id="inputs"><h2>Inputs and predictions</h2>'
        '<p class="meta">Top-3 classes per model; probabilities from '
        f"{esc(', '.join(sorted(source)))}."
        "</p>"
        f'<div class="scroll"><table class="preds">{"".join(rows)}</table></div></section>'
    )


def _prediction(pred: Prediction, label: str | None) -> str:
    name, prob = pred.top[0]
    cls, mark = "", ""
    if label is not None:
        cls, mark = (' class="right"', " ✓") if name == label else (' class="wrong"', " ✗")
    alts = "".join(f"<li>{esc(n)} {p:.1%}</li>" for n, p in pred.top[1:])
    return f"<td{cls}><b>{esc(name)}</b> {prob:.1%}{mark}<ul>{alts}</ul></td>"


def _section(sec: Section) -> str:
    runs = "".join(_run(run) for run in sec.runs)
    return (
        f'<section id="{esc(sec.anchor)}" class="technique">'
        f"<h2>{esc(sec.technique)}</h2><p>{esc(sec.summary)}</p>"
        f'<p class="meta">from {esc(sec.provider)}</p><div class="grid">{runs}</div></section>'
    )


def _run(run: Run) -> str:
    head = (
        f'<h3>{esc(run.model)} <span class="status {esc(run.status)}">{esc(run.status)}</span></h3>'
    )
    if run.status not in (OK, ERROR):
        return f'<div class="card">{head}<p class="note">{esc(run.message)}</p></div>'
    timing = f'<p class="meta">{run.seconds:.2f} s</p>'
    params = f"<details><summary>parameters</summary>{table(sorted(run.params.items()))}</details>"
    if run.status == ERROR:
        error = f'<pre class="error">{esc(run.message)}</pre>'
        return f'<div class="card">{head}{timing}{error}{params}</div>'
    facts = table(run.facts.items()) if run.facts else ""
    figs = "".join(img(f) for f in run.figures)
    details = "".join(
        f"<details{' open' if i == 0 else ''}><summary>{esc(f.caption)}</summary>{img(f)}</details>"
        for i, f in enumerate(run.details)
    )
    return f'<div class="card">{head}{timing}{figs}{details}{facts}{params}</div>'


def _environment(report: Report) -> str:
    rows = [*sorted(report.versions.items()), ("seed", str(report.seed))]
    if report.dataset_size:
        rows.append(("data set", f"{report.dataset_size} samples"))
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    notes_html = f"<h3>Plugins that failed to load</h3><ul>{notes}</ul>" if notes else ""
    return f'<section id="environment"><h2>Environment</h2>{table(rows)}{notes_html}</section>'
