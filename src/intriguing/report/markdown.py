"""The Markdown writer of the report's blocks (the HTML one is :mod:`intriguing.report.html`).

Text is escaped so that it renders as written, as the HTML report's escaped text does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from intriguing.report.blocks import Alert, Block, Figure, Heading, Para, markdown_table

_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what Markdown would take for raw HTML or an autolink
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")  # what Markdown would take for an HTML entity


def _md_escape(text: str) -> str:
    """Text that renders as written, like the HTML report's escaped text: an HTML tag, autolink or
    entity is escaped (``<b>`` -> ``&lt;b>``, ``&amp;`` -> ``&amp;amp;``), a plain ``< 1.2%`` or
    ``a & b`` stays readable; ``|`` is escaped for table cells."""
    return _MD_TAG.sub("&lt;", _MD_ENTITY.sub("&amp;", text)).replace("|", "\\|")


def _md_link(path: str) -> str:
    """A relative link target that cannot end the Markdown link early."""
    from urllib.parse import quote

    return quote(path, safe="/._-")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Markdown of the report (flagged cells in bold)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + _md_escape(block.text), ""]
        elif isinstance(block, Para):
            out += [_md_escape(block.text), ""]
        elif isinstance(block, Figure):
            caption, target = _md_escape(block.caption), _md_link(block.path)
            out += [f"![{caption.replace(']', '')}]({target})", "", f"*{caption}*", ""]
        elif isinstance(block, Alert):
            out += [f"> **WARNING:** {_md_escape(block.text)}", ""]
        else:
            rows = [[f"**{c.text}**" if c.flagged else c.text for c in row] for row in block.rows]
            out += markdown_table(block.header, rows, escape=_md_escape)
            if block.caption:
                out += ["", f"*{_md_escape(block.caption)}*"]
            out.append("")
    return "\n".join(out)
