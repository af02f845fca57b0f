"""One self-contained HTML page for several Comparisons (``innersight compare --all``)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from innersight.compare.result import jsonable_metrics

if TYPE_CHECKING:
    from innersight.compare.result import Comparison

__all__ = ["metrics_record", "page_html", "write_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; }
section { margin-top: 2.5em; }
img { max-width: 100%; image-rendering: pixelated; }
.failed { color: #a00; }
"""

COLUMNS = ("max_abs_diff", "rel_l2", "spearman", "top1pct", "top5pct", "cross_a", "cross_b")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.3g}"
    return html.escape(str(v))


def overview(comparisons: Sequence[Comparison], failures: dict[str, str] | None = None) -> str:
    """The metrics table: one row per technique, the median of each metric."""
    head = "".join(f"<th>{c}</th>" for c in ("technique", "rows", *COLUMNS))
    rows = []
    for c in comparisons:
        s = c.summary()
        cells = [f'<a href="#compare-{html.escape(c.technique)}">{html.escape(c.technique)}</a>']
        cells += [str(int(s["n"]))] + [_cell(s.get(k, "")) for k in COLUMNS]
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    for name, why in (failures or {}).items():
        span = len(COLUMNS) + 1
        rows.append(
            f'<tr><td>{html.escape(name)}</td><td colspan="{span}" class="failed">'
            f"failed: {html.escape(why)}</td></tr>"
        )
    return f'<table class="overview"><tr>{head}</tr>{"".join(rows)}</table>'


def page_html(
    comparisons: Sequence[Comparison],
    *,
    title: str | None = None,
    failures: dict[str, str] | None = None,
) -> str:
    """A complete HTML page: overview table, then one section per technique."""
    names = comparisons[0].names if comparisons else ("A", "B")
    title = title or f"innersight: {names[0]} vs {names[1]}"
    sections = "".join(c.to_html() for c in comparisons)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Medians over inputs. rel_l2 = ||A - B|| / ||A||; top1pct/top5pct = share of A's "
        "top 1 % / 5 % pixels that are also B's; cross_a = A's objective on B's image over A's "
        "objective on its own image.</p>"
        f"{overview(comparisons, failures)}{sections}</body></html>"
    )


def write_page(
    comparisons: Sequence[Comparison],
    path: str | Path,
    *,
    title: str | None = None,
    failures: dict[str, str] | None = None,
) -> Path:
    """Write :func:`page_html` to ``path``."""
    path = Path(path)
    path.write_text(page_html(comparisons, title=title, failures=failures), encoding="utf-8")
    return path


def metrics_record(
    comparisons: Sequence[Comparison], failures: dict[str, str] | None = None
) -> dict[str, Any]:
    """Everything measured, as strict JSON: per technique the summary and every row."""
    return {
        "models": list(comparisons[0].names) if comparisons else [],
        "techniques": {
            c.technique: {
                "summary": jsonable_metrics([c.summary()])[0],
                "params_b": json.loads(json.dumps(jsonable_metrics([c.params_b])[0], default=str)),
                "metrics": jsonable_metrics(c.metrics),
                "notes": list(c.notes),
            }
            for c in comparisons
        },
        "failures": dict(failures or {}),
    }
