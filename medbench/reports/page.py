"""Rendering a report: the Markdown leaderboard and the self-contained HTML page (a Jinja2
template), both from the same :class:`~medbench.reports.build.Section` objects, answers first:
the verdicts in words, the ranking across datasets, then the tables.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment
from markupsafe import Markup

from medbench.reports.section import Section
from medbench.reports.tables import Table

CSS = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#e3e7ee;--accent:#2f6fdf;--bg:#f6f8fb}
*{box-sizing:border-box}
body{font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header{background:#1d2a44;color:#fff;padding:22px 40px}
header h1{margin:0 0 4px;font-size:24px;font-weight:600}
header p{margin:0;color:#c6d0e3}
nav{padding:8px 40px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
nav a{margin-right:18px;color:var(--accent);text-decoration:none;font-weight:500}
main{max-width:1480px;margin:0 auto;padding:10px 40px 60px}
section.protocol{background:#fff;border:1px solid var(--line);border-radius:10px;padding:6px 26px 22px;
margin:22px 0;box-shadow:0 1px 3px rgba(20,30,60,.05)}
.scroll{overflow-x:auto;max-width:100%}
h2{font-size:20px;margin:18px 0 6px}
h2 code{font-size:13px;color:var(--muted);font-weight:400}
h3{font-size:16px;margin:26px 0 6px;padding-top:8px;border-top:1px solid var(--line)}
h4{font-size:14px;margin:18px 0 4px}
.protocol-line{background:#eef3fc;border-left:4px solid var(--accent);padding:8px 12px;border-radius:4px;
font-size:13px}
.verdicts{background:#f3faf5;border-left:4px solid #2e8b57;padding:8px 12px 8px 28px;border-radius:4px;margin:8px 0}
.verdicts li{margin:2px 0}
.caption{color:var(--muted);font-size:12px;margin:2px 0 6px}
.note{color:var(--muted);font-size:12.5px;margin:4px 0 8px;max-width:1100px}
.warning{background:#fff6e0;border-left:4px solid #e0a100;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right}
td{white-space:nowrap}
th{background:#f1f4f9;font-weight:600;color:#374151;white-space:normal;max-width:150px;vertical-align:bottom}
td.name,th.name{text-align:left;white-space:normal;max-width:260px}
td.wrap{white-space:normal;max-width:180px;text-align:left}
tr:hover td{background:#fafbfd}
td.best{color:#0b5d1e;background:#e9f7ee}
tr.group td{border-top:2px solid #c9d1de}
tr.full td{color:var(--muted);font-style:italic;border-top:2px solid var(--line)}
img.figure{max-width:100%;display:block;margin:8px 0}
.tiles{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;margin:6px 0}
.tile{margin:0;max-width:360px;background:#fff;border:1px solid var(--line);border-radius:6px;padding:4px}
.tile img{display:block;image-rendering:pixelated;max-width:100%}
.tile figcaption{font-size:11.5px;color:var(--muted);padding:3px 2px 0}
.tile.missing{color:var(--muted);font-size:12px;padding:10px}
ul.failed{color:#a12a2a;font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""

WRAP = {"beats", "chosen (val)", "note"}  # columns of words: they wrap, so tables fit the page

def _bold_md(text: str) -> Markup:
    """``**x**`` as <b>x</b> in escaped text (the verdict lines' only markup)."""
    parts = html.escape(text).split("**")
    return Markup("".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)))


ENVIRONMENT = Environment(autoescape=True)
ENVIRONMENT.filters["md"] = _bold_md
ENVIRONMENT.filters["table"] = lambda table, note="", heading="h4": Markup(html_table(table, note, heading))
PAGE = ENVIRONMENT.from_string("""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>medbench report</title><meta name="viewport" content="width=device-width, initial-scale=1">
<style>{{ css }}</style></head><body>
<header><h1>medbench report</h1><p>{{ db }} · generated {{ when }} · {{ sections|length }} protocol(s) ·
report metric {{ metric }}</p></header>
<nav>Protocols: {% for s in sections %}<a href="#p{{ loop.index }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% if sections|length > 1 %}<p class="warning">These results were made under several evaluation protocols. Each has
its own section; numbers are never compared across sections, except in the table of the same cells under different
protocols, which shows what the protocol changes.</p>{% endif %}
{% if across %}<section class="protocol">{{ across|safe }}</section>{% endif %}
{% for s in sections %}
<section class="protocol" id="p{{ loop.index }}">
<h2>{{ s.title }} <code>protocol {{ s.protocol_id }}</code></h2>
<div class="protocol-line">{{ s.description }}</div>
<h3>Verdicts</h3><p class="note">{{ s.headline }}</p>
<ul class="verdicts">{% for line in s.verdicts %}<li>{{ line|md }}</li>{% endfor %}</ul>
{% if s.ranking %}{{ s.ranking|table("", "h4") }}{% endif %}
{% if s.cd_figure %}<img class="figure" alt="critical-difference diagram" src="data:image/png;base64,{{ s.cd_figure }}">
{% endif %}
<h3>Leaderboard</h3>
{% for t in s.datasets %}{{ t|table }}{% endfor %}
{% if s.published %}<h3>Published numbers</h3>{% for t in s.published %}{{ t|table }}{% endfor %}{% endif %}
{% if s.ipc_figure %}<img class="figure" alt="score vs IPC" src="data:image/png;base64,{{ s.ipc_figure }}">{% endif %}
{{ s.correlation|table(s.correlation_note, "h3") }}
{% if s.scatter_figure %}<img class="figure" alt="distilled vs random"
src="data:image/png;base64,{{ s.scatter_figure }}">{% endif %}
{{ s.gains|table(s.gains_note, "h3") }}
{% if s.tuned %}{{ s.tuned|table("", "h3") }}{% endif %}
{% if s.equal_budget %}{{ s.equal_budget|table("", "h3") }}{% endif %}
{% if s.anytime_figure %}<img class="figure" alt="score against distillation seconds"
src="data:image/png;base64,{{ s.anytime_figure }}">{% endif %}
{% if s.grids %}<h3>Condensed sets</h3><p class="note">One row (below 3 images per class: one column) per class, at
most {{ per_class }} images each, first seed. The random method's images are real training images.</p>
{% for g in s.grids %}{{ g|safe }}{% endfor %}{% endif %}
{% if s.notes %}<ul class="failed">{% for n in s.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</section>
{% endfor %}
</main><footer>medbench · dataset distillation on medical images</footer></body></html>
""")


def html_table(table: Table, note: str = "", heading: str = "h4") -> str:
    """A table with its title, caption (first note), an optional note and the other notes; wrapped so
    that a wide table scrolls inside its box instead of being cut off."""
    caption = f'<p class="caption">{html.escape(table.notes[0])}</p>' if table.notes else ""
    extra = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table.notes[1:])
    body = f'<div class="scroll">{table.html(WRAP)}</div>' if table.rows else '<p class="note">no rows</p>'
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<{heading}>{html.escape(table.title)}</{heading}>{caption}{note_html}{body}{extra}"


def md_table(table: Table, note: str = "", heading: str = "###") -> str:
    parts = [f"{heading} {table.title}", "", f"_{table.notes[0]}_" if table.notes else "", ""]
    if note:
        parts += [note, ""]
    parts.append(table.markdown() if table.rows else "_no rows_")
    parts += ["", *(f"- {n}" for n in table.notes[1:])]
    return "\n".join(parts).rstrip() + "\n"


def leaderboard_markdown(sections: list[Section], db: Path, metric: str, across: Table | None = None) -> str:
    lines = ["# medbench leaderboard", "", f"Results database: `{db}` · generated "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {len(sections)} evaluation protocol(s) · report metric "
             f"{metric}.", ""]
    if len(sections) > 1:
        lines += ["> These results were made under several evaluation protocols. Each protocol has its own "
                  "section; numbers are never compared across sections (except in the protocol table below, "
                  "which shows what the protocol changes).", ""]
    for s in sections:
        lines += [f"## {s.title} (protocol `{s.protocol_id}`)", "", s.description, "", "### Verdicts", "",
                  s.headline, "", *(f"- {line}" for line in s.verdicts), ""]
        if s.ranking is not None:
            lines.append(md_table(s.ranking, heading="###"))
        for t in s.datasets:
            lines.append(md_table(t, heading="###"))
        for t in s.published:
            lines.append(md_table(t, heading="###"))
        lines += [md_table(s.correlation, s.correlation_note, "###"), md_table(s.gains, s.gains_note, "###")]
        lines += [md_table(t, heading="###") for t in (s.equal_budget, s.tuned) if t is not None]
        lines += [f"- {n}" for n in s.notes]
        lines.append("")
    if across is not None:
        lines.append(md_table(across, heading="##"))
    return "\n".join(lines).rstrip() + "\n"


def report_html(sections: list[Section], db: Path, metric: str, per_class: int, across: Table | None = None) -> str:
    return PAGE.render(css=CSS, db=str(db), when=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", sections=sections,
                       metric=metric, per_class=per_class,
                       across=html_table(across, heading="h2") if across is not None else "")
