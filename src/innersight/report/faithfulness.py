"""The report's section "How faithful is each technique on this model", built and rendered.

:func:`evaluate_models` scores each model's heatmap explanations with a few metrics
(:func:`innersight.report.scoring.faithfulness_section`); :func:`render_faithfulness` turns the
results into HTML: per model, the table (technique x metric), the failed cells' messages, the
deletion and insertion curves as embedded PNGs, and a note per metric on what its number means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from innersight.core.batching import ProgressArg
from innersight.core.errors import InputError
from innersight.report.records import OK, Figure

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.report.records import Section
    from innersight.report.scoring import FaithfulnessSection

__all__ = ["check_metrics", "evaluate_models", "render_faithfulness"]

ANCHOR = "faithfulness"


def check_metrics(metrics: Sequence[str] | str | None) -> tuple[str, ...]:
    """Metric names as a tuple (None: the section's defaults); unknown names fail before work."""
    from innersight.api import get_metric
    from innersight.report.scoring import DEFAULT_METRICS

    if metrics is None:
        return tuple(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    names = tuple(dict.fromkeys(metrics))
    if not names:
        raise InputError("metrics is empty; give names such as deletion,insertion or None")
    for name in names:
        get_metric(name)  # MetricNotFoundError with suggestions
    return names


def evaluate_models(
    adapters: Mapping[str, ModelAdapter],
    sections: Sequence[Section],
    *,
    metrics: Sequence[str],
    max_inputs: int | None,
    progress: ProgressArg,
) -> dict[str, FaithfulnessSection | str]:
    """``{model key: FaithfulnessSection}``, or the error message when evaluating it raised."""
    from innersight.report.scoring import faithfulness_section

    out: dict[str, FaithfulnessSection | str] = {}
    for key, adapter in adapters.items():
        explanations = {
            sec.technique: run.explanation
            for sec in sections
            for run in sec.runs
            if run.model == key and run.status == OK and run.explanation is not None
        }
        try:
            out[key] = faithfulness_section(
                adapter, explanations, metrics=metrics, max_inputs=max_inputs, progress=progress
            )
        except Exception as err:  # the report always completes
            out[key] = f"{type(err).__name__}: {err}"
    return out


def render_faithfulness(results: Mapping[str, FaithfulnessSection | str]) -> str:
    """The section's HTML: a card per model (everything escaped, images embedded)."""
    from innersight.report.html import esc
    from innersight.report.scoring import TITLE

    if not results:
        return ""
    cards = "".join(_card(key, sec) for key, sec in results.items())
    return (
        f'<section id="{ANCHOR}"><h2>{esc(TITLE)}</h2>'
        '<p class="meta">Each technique\'s maps of the inputs above, scored by each metric: '
        "mean ± standard deviation over the inputs.</p>"
        f'<div class="grid">{cards}</div></section>'
    )


def _card(key: str, sec: FaithfulnessSection | str) -> str:
    from innersight.report.html import esc

    head = f"<h3>{esc(key)}</h3>"
    if isinstance(sec, str):
        return f'<div class="card">{head}<pre class="error">{esc(sec)}</pre></div>'
    return f'<div class="card">{head}{_table(sec)}{_errors(sec)}{_curves(sec)}{_notes(sec)}</div>'


def _table(sec: FaithfulnessSection) -> str:
    from innersight.report.html import esc

    if not sec.techniques:
        return '<p class="note">no heatmap explanation to evaluate</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in sec.header())
    body = "".join(
        f"<tr><th>{esc(row[0])}</th>"
        + "".join(f'<td class="num">{esc(cell)}</td>' for cell in row[1:])
        + "</tr>"
        for row in sec.rows()
    )
    return f'<table class="layers"><tr>{head}</tr>{body}</table>'


def _errors(sec: FaithfulnessSection) -> str:
    from innersight.report.html import esc

    failed = [(t, m, c.error) for (t, m), c in sec.cells.items() if c.error]
    skipped = [(t, "", why) for t, why in sec.skipped.items()]
    items = "".join(
        f"<li><b>{esc(t)}{' / ' + esc(m) if m else ''}</b>: {esc(why)}</li>"
        for t, m, why in failed + skipped
    )
    return f'<ul class="note">{items}</ul>' if items else ""


def _curves(sec: FaithfulnessSection) -> str:
    from innersight.report.html import img

    return "".join(img(Figure(f"{metric} curves", png)) for metric, png in sec.curves.items())


def _notes(sec: FaithfulnessSection) -> str:
    from innersight.report.html import esc

    items = "".join(f"<li><b>{esc(m)}</b>: {esc(note)}</li>" for m, note in sec.notes.items())
    return f"<details><summary>what the numbers mean</summary><ul>{items}</ul></details>"
