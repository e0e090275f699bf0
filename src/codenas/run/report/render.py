"""Rendering the report's blocks twice, as Markdown and as self-contained HTML (images as data URIs, styles
inline), so that both say the same."""

from __future__ import annotations

import base64
import html
import re

from codenas.names import PLOTS_DIR
from codenas.run.report.text import Block


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "p":
            parts.append(block[1])
        elif kind == "code":
            fence = "````" if "```" in block[1] else "```"
            parts.append(f"{fence}{block[2]}\n{block[1].rstrip()}\n{fence}")
        elif kind == "table":
            parts.append(_markdown_table(block[1], block[2]))
        elif kind == "img":
            parts.append(f"![{block[2]}]({PLOTS_DIR}/{block[1].name})")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], *, title: str) -> str:
    """HTML with the same content; images are embedded as base64 data URIs, styles inline (no external files)."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
    style = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222;"
             "line-height:1.45}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
             "table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;"
             "padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}"
             "td:not(:first-child){font-variant-numeric:tabular-nums}"
             "pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.88em;line-height:1.3}"
             "code{font-family:ui-monospace,Menlo,Consolas,monospace}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then render the inline Markdown forms the report uses: **bold**, *italic* and `code`."""
    text = html.escape(text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
