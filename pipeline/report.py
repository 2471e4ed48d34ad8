"""A small document model rendered twice: as Markdown (for git diffs, MLflow's run
description and terminals) and as one self-contained HTML page with embedded figures."""

import base64
import html
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold **bold** and `code`


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Image:
    """A PNG figure: embedded in the HTML page, named in Markdown."""

    png: bytes
    caption: str


Block = Heading | Paragraph | Table | Bullets | Code | Image

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(map(_markdown_cell, block.headers)) + " |",
                "|" + "|".join("---" for _ in block.headers) + "|",
            ]
            lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Code):
            parts.append(f"```\n{block.text}\n```")
        elif isinstance(block, Image):
            parts.append(f"*Figure, in the HTML report: {block.caption}*")
    return "\n\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags."""
    escaped = html.escape(text, quote=False)
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<strong>\1</strong>", escaped))


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
code, pre { background: #f6f6f6; font-family: ui-monospace, monospace; }
pre { padding: 0.6rem; overflow-x: auto; }
figure { margin: 1rem 0; }
figcaption { color: #555; font-size: 0.9rem; }
img { max-width: 100%; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page that needs no other file: CSS inline, figures as base64 PNG."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{_inline_html(cell)}</th>" for cell in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_html(cell)}</td>" for cell in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_inline_html(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{html.escape(block.text, quote=False)}</code></pre>")
        elif isinstance(block, Image):
            encoded = base64.b64encode(block.png).decode("ascii")
            caption = _inline_html(block.caption)
            body.append(
                f'<figure><img src="data:image/png;base64,{encoded}" '
                f'alt="{html.escape(block.caption)}"><figcaption>{caption}</figcaption></figure>'
            )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
