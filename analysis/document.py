"""A report as a list of blocks, rendered twice: Markdown (report.md, figures as files beside it) and one
self-contained HTML page (report.html, figures embedded as base64 PNG, readable offline)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import numpy as np
import pandas as pd

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%}
li{margin:0.3em 0}.better{color:#1a7f37}.worse{color:#b42318}.equivalent{color:#175cd3}.inconclusive{color:#666}"""


@dataclass(frozen=True)
class Block:
    """One piece of the report: kind is h1 | h2 | p | list | table | figure."""

    kind: str
    text: str = ""  # heading or paragraph text; a table's HTML id; a figure's name
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = None
    png: bytes = b""


def _cell(v, floats: str) -> str:
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 else floats.format(v)
    if v is None or v is pd.NA:
        return ""
    return str(v)


def to_markdown(blocks: list[Block], floats: str = "{:.4f}") -> str:
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
        elif b.kind == "table":
            df = b.table
            if df is None or df.empty:
                out += ["(none)", ""]
                continue
            out += ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
            out += ["| " + " | ".join(_cell(v, floats) for v in row) + " |" for row in df.itertuples(index=False)]
            out.append("")
        elif b.kind == "figure":
            out += [f"![{b.text}]({b.text}.png)", ""]
    return "\n".join(out)


def to_html(blocks: list[Block], title: str, floats: str = "{:.4f}") -> str:
    """One HTML page with every figure inline (data: URIs), no external resources."""
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "p"):
            tag = {"h1": "h1", "h2": "h2", "p": "p"}[b.kind]
            body.append(f"<{tag}>{html.escape(b.text)}</{tag}>")
        elif b.kind == "list":
            items = "".join(f'<li class="{_verdict_class(i)}">{html.escape(i)}</li>' for i in b.items)
            body.append(f"<ul>{items}</ul>" if items else "<p>(none)</p>")
        elif b.kind == "table":
            df = b.table
            if df is None or df.empty:
                body.append("<p>(none)</p>")
                continue
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v, floats))}</td>" for v in row) + "</tr>"
                           for row in df.itertuples(index=False))
            ident = f' id="{html.escape(b.text)}"' if b.text else ""
            body.append(f'<table{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b.text)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _verdict_class(sentence: str) -> str:
    for verdict in ("better", "worse", "equivalent", "inconclusive"):
        if f": {verdict}" in sentence or f" is {verdict}" in sentence:
            return verdict
    return ""
