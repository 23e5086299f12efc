"""A report as a list of blocks, rendered twice: Markdown (report.md, figures as files beside it) and one
self-contained HTML page (report.html, figures embedded as base64 PNG, readable offline)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Fits a 1300 px laptop window and an 800 px one (viewport meta: a phone or a narrow window lays out at its own
# width): wide tables scroll inside the page, long words wrap, figures shrink to fit.
STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
p,li,summary,figcaption,h1,h2{overflow-wrap:anywhere}.scroll{overflow-x:auto;max-width:100%}
code{font-family:ui-monospace,monospace;font-size:0.92em;background:#f2f2f2;padding:0 0.2em;border-radius:3px}
figure{margin:1.5em 0}figcaption{font-size:0.9em;color:#444;max-width:60em;margin-top:0.3em}
details{margin:0.5em 0 1em}summary{cursor:pointer;color:#175cd3}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f2f2f2;font-weight:600}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto}li{margin:0.3em 0}
.headline{border-left:5px solid #175cd3;background:#f5f8ff;padding:0.6em 1.2em;margin:1em 0}
.headline p{margin:0.45em 0}.headline p:first-child{font-size:1.15em}
td.v-better,td.v-worse,td.v-equivalent,td.v-inconclusive,td.v-undetermined,td.v-self{text-align:center}
td.v-better{background:#d3f0da}td.v-worse{background:#f9d7d3}td.v-equivalent{background:#d6e4fb}
td.v-inconclusive{background:#f4f4f4;color:#555}td.v-undetermined{background:#fff;color:#999}td.v-self{background:#ddd}
li.better{color:#1a7f37}li.worse{color:#b42318}li.equivalent{color:#175cd3}li.inconclusive{color:#666}"""


@dataclass(frozen=True)
class Column:
    """How a table column is shown: its header in words and the format of its values."""

    name: str
    header: str
    fmt: str = "{}"  # a str.format pattern, e.g. "{:.4f}", "{:,.0f}"


@dataclass(frozen=True)
class Block:
    """One piece of the report: kind is h1 | h2 | p | list | details | table | figure | headline | matrix.

    Text may mark code with `backticks` (Markdown); the HTML shows it as <code>. `details`: a list shown on demand
    under a one-line summary (`text`)."""

    kind: str
    text: str = ""  # heading or paragraph text; a table's HTML id; a figure's name
    items: tuple[str, ...] = ()  # list items; headline sentences
    table: pd.DataFrame | None = None  # table; matrix (cells are verdicts of the row vs the column)
    png: bytes = b""
    columns: tuple[Column, ...] = ()  # table: the columns shown, with headers and formats; empty: all, as they are
    caption: str = ""  # figure: what it shows and what to look at (also its alt text); empty: its name


CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escaped HTML of a text, `code` as <code>code</code> (no Markdown leaks into the page)."""
    return CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text))


def _plain(text: str) -> str:
    """Text without its code marks (for attributes: alt, title)."""
    return html.escape(CODE.sub(r"\1", text))


def _cell(v, fmt: str = "{:.4f}") -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 and "f}" in fmt and ",.0f" not in fmt else fmt.format(v)
    if isinstance(v, (int, np.integer)) and fmt != "{}":
        return fmt.format(v)
    return str(v)


def _shown(b: Block) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of cell texts) of a table block."""
    df = b.table
    cols = b.columns or tuple(Column(c, str(c), "{:.4f}") for c in df.columns)
    cols = tuple(c for c in cols if c.name in df.columns)
    rows = [[_cell(v, c.fmt) for v, c in zip(row, cols)] for row in df[[c.name for c in cols]].itertuples(index=False)]
    return [c.header for c in cols], rows


MATRIX_TEXT = {"better": "better", "worse": "worse", "better, within margin": "better (< margin)",
               "worse, within margin": "worse (< margin)", "equivalent": "equivalent", "inconclusive": "?",
               "undetermined": "n/a", "self": "—", "": ""}


def _matrix_class(verdict: str) -> str:
    return "v-" + (verdict.split(",")[0] if verdict else "none")


def to_markdown(blocks: list[Block]) -> str:
    """Markdown; a figure becomes a link to `<name>.png`, which the caller writes beside report.md."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out += [f"# {b.text}", ""]
        elif b.kind == "h2":
            out += [f"## {b.text}", ""]
        elif b.kind == "p":
            out += [b.text, ""]
        elif b.kind == "list":
            out += [f"- {item}" for item in b.items] or ["(none)"]
            out.append("")
        elif b.kind == "details":  # GitHub and most Markdown viewers render it folded, as the HTML page does
            out += ["<details>", f"<summary>{html.escape(b.text)}</summary>", ""]
            out += [f"- {item}" for item in b.items] + ["", "</details>", ""]
        elif b.kind == "headline":
            out += [f"> {item}\n>" for item in b.items] + [""]
        elif b.kind in ("table", "matrix"):
            if b.table is None or b.table.empty:
                out += ["(none)", ""]
                continue
            headers, rows = (_shown(b) if b.kind == "table" else
                             (["", *b.table.columns], [[g, *(MATRIX_TEXT.get(v, v) for v in r)]
                                                      for g, r in zip(b.table.index, b.table.to_numpy())]))
            out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        elif b.kind == "figure":
            out += [f"![{b.text}]({b.text}.png)", ""] + ([f"*{b.caption}*", ""] if b.caption else [])
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with every figure inline (data: URIs), no external resources."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "p"):
            tag = {"h1": "h1", "h2": "h2", "p": "p"}[b.kind]
            body.append(f"<{tag}>{_inline(b.text)}</{tag}>")
        elif b.kind in ("list", "details"):
            items = "".join(f'<li class="{_verdict_class(i)}">{_inline(i)}</li>' for i in b.items)
            listed = f"<ul>{items}</ul>" if items else "<p>(none)</p>"
            body.append(f"<details><summary>{_inline(b.text)}</summary>{listed}</details>" if b.kind == "details"
                        else listed)
        elif b.kind == "headline":
            body.append('<div class="headline">' + "".join(f"<p>{_inline(i)}</p>" for i in b.items) + "</div>")
        elif b.kind in ("table", "matrix"):
            if b.table is None or b.table.empty:
                body.append("<p>(none)</p>")
                continue
            ident = f' id="{html.escape(b.text)}"' if b.text else ""
            if b.kind == "table":
                headers, cells = _shown(b)
                rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells)
            else:
                headers = ["", *map(str, b.table.columns)]
                rows = "".join(f"<tr><th>{html.escape(str(g))}</th>" + "".join(
                    f'<td class="{_matrix_class(v)}" title="{html.escape(v)}">{html.escape(MATRIX_TEXT.get(v, v))}</td>'
                    for v in r) + "</tr>" for g, r in zip(b.table.index, b.table.to_numpy()))
            head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
            body.append(f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
                        "</table></div>")
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            caption = b.caption or b.text.replace("_", " ")
            body.append(f'<figure id="figure-{html.escape(b.text)}"><img alt="{_plain(caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>{_inline(caption)}</figcaption></figure>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _verdict_class(sentence: str) -> str:
    """A comparison's sentence ("a vs b: Δ = ...: a is better ...") is coloured by its verdict; other items are not."""
    if "Δ = " not in sentence:
        return ""
    for verdict in ("better", "worse", "equivalent", "inconclusive"):
        if f": {verdict}" in sentence or f" is {verdict}" in sentence:
            return verdict
    return ""
