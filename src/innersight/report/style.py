"""The report's inline stylesheet (no external fonts, no network)."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bg: #f6f7f9; --ok: #1a7f37;
        --bad: #b42318; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1400px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.3rem; margin: 0 0 .4rem; border-bottom: 1px solid var(--line);
     padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
section, header { background: #fff; border: 1px solid var(--line); border-radius: 8px;
                  padding: 1rem 1.2rem; margin: 0 0 1rem; }
nav ul { list-style: none; padding: 0; margin: .5rem 0 0; display: flex; flex-wrap: wrap;
         gap: .3rem .9rem; }
a { color: #0b57d0; text-decoration: none; }
a:hover { text-decoration: underline; }
.meta { color: var(--muted); font-size: .9rem; margin: .2rem 0 .6rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 1rem;
        align-items: start; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .8rem; overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--line); padding: .2rem .6rem .2rem 0; text-align: left;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { color: var(--muted); font-weight: 500; }
table.preds td { min-width: 5.5rem; }
.scroll { overflow-x: auto; }
table.preds td ul { margin: 0; padding-left: 1rem; color: var(--muted); font-size: .85rem; }
td.right b { color: var(--ok); }
td.wrong b { color: var(--bad); }
figure { margin: .3rem 0; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated;
             border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .8rem; }
details { margin: .3rem 0; }
summary { cursor: pointer; color: #0b57d0; }
pre.error { white-space: pre-wrap; color: var(--bad); background: #fff4f2;
            border: 1px solid #f3c7c1; border-radius: 4px; padding: .5rem; }
.note { color: var(--warn); }
.status { font-size: .75rem; font-weight: 600; padding: .05rem .4rem; border-radius: 4px;
          background: #e7f5ec; color: var(--ok); vertical-align: middle; }
.status.error { background: #fdecea; color: var(--bad); }
.status.skipped { background: #fff6dc; color: var(--warn); }
.badge { font-size: .75rem; color: var(--warn); }
"""
