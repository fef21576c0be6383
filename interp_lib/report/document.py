"""A small document model (headings, paragraphs, notes, tables) rendered to Markdown and
HTML: the RQ summary's output format, kept apart from the analyses that fill it."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..io import atomic_path


@dataclass
class Table:
    df: pd.DataFrame
    signed: tuple = ()  # columns shown with an explicit sign


@dataclass
class Document:
    """Blocks: ("h", level, text), ("p", text), ("note", text), ("table", Table)."""

    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def note(self, text: str):
        self.blocks.append(("note", text))

    def table(self, df: pd.DataFrame, signed=()):
        self.blocks.append(("table", Table(df.reset_index(drop=True), tuple(signed))))


def fmt(value, signed: bool = False) -> str:
    """4 significant digits for floats; integers, booleans and text as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = f"{value:+.4g}" if signed else f"{value:.4g}"
        return text.replace("e+0", "e+").replace("e-0", "e-")
    return str(value)


def _cells(table: Table) -> tuple[list[str], list[list[str]], list[bool]]:
    df = table.df
    header = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    rows = [[fmt(v, c in table.signed) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False)]
    return header, rows, numeric


def to_markdown(doc: Document) -> str:
    out = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "note":
            out.append(f"> **Missing:** {block[1]}")
        else:
            header, rows, numeric = _cells(block[1])
            esc = lambda s: s.replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(esc(h) for h in header) + " |",
                     "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
            lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;max-width:75em;
color:#222;line-height:1.4}table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.2em .6em}th{background:#f2f2f2}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafafa}
.note{border-left:4px solid #d55e00;padding:.3em .8em;background:#fff4ec}code{font-size:.95em}"""


def _inline_html(text: str) -> str:
    """Escapes text; `code` spans become <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(doc: Document, title: str = "Research-question summary") -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "note":
            out.append(f'<p class="note"><strong>Missing:</strong> {_inline_html(block[1])}</p>')
        else:
            header, rows, numeric = _cells(block[1])
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                       + "</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' if n else
                                            f"<td>{html.escape(c)}</td>" for c, n in zip(row, numeric)) + "</tr>")
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_summary(doc: Document, md_path, html_path) -> None:
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(doc))
    with atomic_path(html_path) as tmp:
        tmp.write_text(to_html(doc))
