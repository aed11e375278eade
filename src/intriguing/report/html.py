"""A self-contained HTML page of the reproduce report: one file, figures embedded as base64 PNG.

Built from the same blocks as the Markdown (:mod:`intriguing.report.blocks`); flagged cells (ours far
from the paper's) are highlighted; all text is HTML-escaped; no external CSS, script or image.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from intriguing.errors import IntriguingError
from intriguing.report.blocks import Block, Figure, Heading, Para

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.flag { background: #ffe4b5; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption, .caption { color: #555; font-size: 0.85em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render Markdown-style ``code`` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def embed_png(path: Path) -> str:
    """A ``data:`` URI of the PNG at ``path``.

    Raises:
        IntriguingError: the figure is missing.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntriguingError(f"{path}: figure not found; rerun `intriguing report`") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(blocks: Sequence[Block], root: Path) -> str:
    """The page; figure paths in ``blocks`` are relative to ``root`` and get embedded."""
    parts: list[str] = []
    title = "intriguing reproduce report"
    for block in blocks:
        if isinstance(block, Heading):
            if block.level == 1:
                title = block.text
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Figure):
            parts.append(
                f'<figure><img alt="{html.escape(block.caption)}" src="{embed_png(root / block.path)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
        else:
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>"
                + "".join(
                    f'<td class="flag">{_inline(c.text)}</td>'
                    if c.flagged
                    else f"<td>{_inline(c.text)}</td>"
                    for c in row
                )
                + "</tr>"
                for row in block.rows
            )
            caption = (
                f'<div class="caption">{_inline(block.caption)}</div>' if block.caption else ""
            )
            parts.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
