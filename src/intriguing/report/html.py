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
from intriguing.report.blocks import Alert, Block, Figure, Heading, Para

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.flag { background: #ffe4b5; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption, .caption { color: #555; font-size: 0.85em; }
code { background: #f4f4f4; padding: 0 0.2em; }
div.warning { border: 2px solid #c00; background: #fff0f0; padding: 0.6em 1em; margin: 1em 0; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render Markdown-style ``code`` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def inside_run(root: Path, relative: object, what: str = "file") -> Path:
    """``root / relative`` after checking that it stays inside the run directory ``root``.

    Paths come from stored results (results.json, step records), which are not trusted: an
    absolute path, ``..`` or a symlink leading out of ``root`` is refused (issue 16).

    Raises:
        IntriguingError: ``relative`` is not a relative path string, or resolves outside ``root``.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise IntriguingError(
            f"{root}: the {what} path {relative!r} in the stored results is not a relative path; "
            "rerun reproduce"
        )
    base = root.resolve()
    path = (root / relative).resolve()
    if Path(relative).is_absolute() or (path != base and base not in path.parents):
        raise IntriguingError(
            f"{root}: the {what} path {relative!r} points outside the run directory; refused "
            "(rerun reproduce to restore the results)"
        )
    return path


def embed_png(path: Path) -> str:
    """A ``data:`` URI of the PNG at ``path`` (which must be a PNG file).

    Raises:
        IntriguingError: the figure is missing or not a PNG.
    """
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise IntriguingError(f"{path}: figure not found; rerun `intriguing report`") from None
    if not data.startswith(PNG_SIGNATURE):
        raise IntriguingError(f"{path}: not a PNG image; rerun `intriguing report`")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(blocks: Sequence[Block], root: Path) -> str:
    """The page; figure paths in ``blocks`` are relative to ``root`` and get embedded (only PNG
    files inside ``root``: :func:`inside_run`)."""
    parts: list[str] = []
    title = "intriguing reproduce report"
    for block in blocks:
        if isinstance(block, Heading):
            if block.level == 1:
                title = block.text
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Alert):
            parts.append(
                f'<div class="warning"><strong>WARNING:</strong> {_inline(block.text)}</div>'
            )
        elif isinstance(block, Figure):
            parts.append(
                f'<figure><img alt="{html.escape(block.caption)}" src="{embed_png(inside_run(root, block.path, "figure"))}">'
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
