"""Everything a Comparison is exported as: HTML (one section, or a page of several), the JSON
record, and the files ``Comparison.save`` and ``innersight compare --all`` write.

One owner for the export: :class:`~innersight.compare.Comparison` only delegates here, so the
single-technique files and the ``--all`` page share the same section HTML and the same record.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from innersight.core.render import png_bytes
from innersight.core.technique import to_jsonable

if TYPE_CHECKING:
    from innersight.compare.result import Comparison

__all__ = [
    "comparison_record",
    "jsonable_metrics",
    "metrics_record",
    "page_html",
    "save_all",
    "save_comparison",
    "section_html",
    "write_page",
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; }
section { margin-top: 2.5em; }
img { max-width: 100%; image-rendering: pixelated; }
.failed { color: #a00; }
.skipped { color: #666; }
"""

#: The metrics of tables, in this order (others follow in a comparison's own table).
COLUMNS = ("max_abs_diff", "rel_l2", "spearman", "top1pct", "top5pct", "cross_a", "cross_b")
_IDS = ("input", "layer", "layer_b", "unit")


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def jsonable_metrics(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with NaN/inf as None (strict JSON)."""
    return [{k: _finite_or_none(to_jsonable(v)) for k, v in row.items()} for row in rows]


def fmt(v: Any) -> str:
    """A metric as short text: 3 significant digits, ``n/a`` for NaN."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3g}"
    return str(v)


# -- one comparison ---------------------------------------------------------------------------
def metrics_table(c: Comparison) -> str:
    """An HTML table of the per-row metrics (names escaped)."""
    keys = [k for k in _IDS if any(k in r for r in c.metrics)] + c.metric_names()
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k, '')))}</td>" for k in keys) + "</tr>"
        for r in c.metrics
    )
    return f'<table class="metrics"><tr>{head}</tr>{body}</table>'


def section_html(c: Comparison, *, max_rows: int = 8) -> str:
    """A self-contained HTML fragment: title, median metrics, figure (PNG inline), table."""
    png = base64.b64encode(png_bytes(c.to_image(max_rows=max_rows))).decode("ascii")
    s = c.summary()
    medians = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(v))}</td></tr>"
        for k, v in s.items()
        if k != "n"
    )
    t, (na, nb) = html.escape(c.technique), (html.escape(n) for n in c.names)
    params = html.escape(json.dumps(jsonable_metrics([c.params_b])[0], default=str))
    return (
        f'<section class="innersight-compare" id="compare-{t}">'
        f"<h2>{t}</h2><p>A = <code>{na}</code>, B = <code>{nb}</code> "
        f"({int(s['n'])} rows; medians below)</p>"
        + "".join(f'<p class="note">{html.escape(n)}</p>' for n in c.notes)
        + f'<table class="summary">{medians}</table>'
        f'<img alt="{t}: A, B and |A - B|" src="data:image/png;base64,{png}">'
        f"<details><summary>every row</summary>{metrics_table(c)}"
        f"<p>model B ran with <code>{params}</code></p></details></section>"
    )


def comparison_record(c: Comparison) -> dict[str, Any]:
    """One comparison as strict JSON: models, medians, B's parameters, every row, notes."""
    return {
        "technique": c.technique,
        "models": list(c.names),
        "summary": jsonable_metrics([c.summary()])[0],
        "params_b": json.loads(json.dumps(jsonable_metrics([c.params_b])[0], default=str)),
        "metrics": jsonable_metrics(c.metrics),
        "notes": list(c.notes),
    }


def save_comparison(c: Comparison, directory: str | Path) -> Path:
    """Write ``<technique>.png``, ``.html`` (a page), ``_metrics.json`` and both explanations
    as ``_a.npz`` / ``_b.npz`` into ``directory``; returns the folder."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / c.technique
    (out / f"{c.technique}.png").write_bytes(png_bytes(c.to_image()))
    write_page([c], out / f"{c.technique}.html")
    Path(f"{stem}_metrics.json").write_text(json.dumps(comparison_record(c), indent=2))
    c.a.save(f"{stem}_a.npz")
    c.b.save(f"{stem}_b.npz")
    return out


# -- several comparisons ----------------------------------------------------------------------
def _cell(v: Any) -> str:
    return html.escape(fmt(v))


def _reason_rows(reasons: Mapping[str, str], what: str) -> list[str]:
    span = len(COLUMNS) + 1
    return [
        f'<tr><td>{html.escape(name)}</td><td colspan="{span}" class="{what}">'
        f"{what}: {html.escape(why)}</td></tr>"
        for name, why in reasons.items()
    ]


def overview(
    comparisons: Sequence[Comparison],
    failures: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> str:
    """The metrics table: one row per technique, the median of each metric."""
    head = "".join(f"<th>{c}</th>" for c in ("technique", "rows", *COLUMNS))
    rows = []
    for c in comparisons:
        s = c.summary()
        cells = [f'<a href="#compare-{html.escape(c.technique)}">{html.escape(c.technique)}</a>']
        cells += [str(int(s["n"]))] + [_cell(s.get(k, "")) for k in COLUMNS]
        rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    rows += _reason_rows(skipped or {}, "skipped") + _reason_rows(failures or {}, "failed")
    return f'<table class="overview"><tr>{head}</tr>{"".join(rows)}</table>'


def page_html(
    comparisons: Sequence[Comparison],
    *,
    title: str | None = None,
    failures: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> str:
    """A complete HTML page: overview table, then one section per technique."""
    names = comparisons[0].names if comparisons else ("A", "B")
    title = title or f"innersight: {names[0]} vs {names[1]}"
    sections = "".join(section_html(c) for c in comparisons)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Medians over inputs. rel_l2 = ||A - B|| / ||A||; top1pct/top5pct = share of A's "
        "top 1 % / 5 % pixels that are also B's; cross_a = A's objective on B's image over A's "
        "objective on its own image.</p>"
        f"{overview(comparisons, failures, skipped)}{sections}</body></html>"
    )


def write_page(
    comparisons: Sequence[Comparison],
    path: str | Path,
    *,
    title: str | None = None,
    failures: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> Path:
    """Write :func:`page_html` to ``path``."""
    path = Path(path)
    text = page_html(comparisons, title=title, failures=failures, skipped=skipped)
    path.write_text(text, encoding="utf-8")
    return path


def metrics_record(
    comparisons: Sequence[Comparison],
    failures: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything measured, as strict JSON: per technique the summary and every row, then the
    techniques that were skipped (why) and that failed (their error)."""
    techniques = {}
    for c in comparisons:
        record = comparison_record(c)
        del record["technique"], record["models"]
        techniques[c.technique] = record
    return {
        "models": list(comparisons[0].names) if comparisons else [],
        "techniques": techniques,
        "skipped": dict(skipped or {}),
        "failures": dict(failures or {}),
    }


def save_all(
    comparisons: Sequence[Comparison],
    directory: str | Path,
    *,
    failures: Mapping[str, str] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> Path:
    """Write ``compare.html`` (the page), ``compare.json`` (:func:`metrics_record`) and
    ``<technique>.png`` per comparison into ``directory``; returns the page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for c in comparisons:
        (out / f"{c.technique}.png").write_bytes(png_bytes(c.to_image()))
    record = metrics_record(comparisons, failures, skipped)
    (out / "compare.json").write_text(json.dumps(record, indent=2))
    return write_page(comparisons, out / "compare.html", failures=failures, skipped=skipped)
