"""A small document model rendered twice: as Markdown (for git diffs, MLflow's run
description and terminals) and as one self-contained HTML page with embedded figures."""

import base64
import html
import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold **bold** and `code`; put user strings in code(value)


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
_BACKTICKS = re.compile(r"`+")
# Outside code spans, what CommonMark would read as raw HTML (a tag, comment or
# processing instruction), an autolink or an entity: never meant by the pipeline's own text.
_MARKUP_START = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)")
# Control and format characters (escape sequences, bidirectional overrides) and line
# breaks: shown as escapes, so that no value can restyle a terminal or start a new block.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def visible(text: str) -> str:
    """`text` with control and format characters written as Python escapes (`\\x1b`)."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _INVISIBLE
        else char
        for char in text
    )


def code(value: object) -> str:
    """`value` as one Markdown code span that nothing inside it can end early.

    Per CommonMark, a span opened by n backticks ends only at a run of exactly n, so
    the fence is one longer than the longest run inside; a space pads a value that
    starts or ends with a backtick (or with spaces at both ends), and the reader strips
    it again.
    """
    text = visible(str(value)) or " "  # no span is empty: the nearest is one space
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    if "`" in (text[0], text[-1]) or (text[0] == text[-1] == " " and text.strip(" ")):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def _split_code(text: str) -> list[tuple[bool, str]]:
    """(is code, text) pieces of inline text, code spans found as CommonMark finds them."""
    pieces: list[tuple[bool, str]] = []
    done = 0
    for opening in _BACKTICKS.finditer(text):
        if opening.start() < done:
            continue  # inside a span already taken
        closing = next(
            (
                run
                for run in _BACKTICKS.finditer(text, opening.end())
                if len(run.group()) == len(opening.group())
            ),
            None,
        )
        if closing is None:
            continue  # an unmatched run is literal backticks
        content = text[opening.end() : closing.start()]
        if len(content) > 1 and content[0] == content[-1] == " " and content.strip(" "):
            content = content[1:-1]
        pieces += [(False, text[done : opening.start()]), (True, content)]
        done = closing.end()
    pieces.append((False, text[done:]))
    return pieces


def _escape_markup(text: str) -> str:
    """Text between code spans, escaped so that a reader finds the same spans: a
    backslash or backtick here could otherwise open, close or disable one."""
    escaped = text.replace("\\", "\\\\").replace("`", "\\`")
    return _MARKUP_START.sub(lambda match: "&lt;" if match.group() == "<" else "&amp;", escaped)


def _markdown_inline(text: str) -> str:
    """Inline text for Markdown: code spans with a fence nothing inside can close; around
    them, nothing that a renderer would take for HTML, and no line break that could
    start a new block."""
    return "".join(
        code(piece) if is_code else _escape_markup(piece)
        for is_code, piece in _split_code(visible(text.replace("\n", " ")))
    )


def _markdown_cell(text: str) -> str:
    return _markdown_inline(text).replace("|", "\\|")


def to_markdown(blocks: list[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_markdown_inline(block.text)}")
        elif isinstance(block, Paragraph):
            parts.append(_markdown_inline(block.text))
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(map(_markdown_cell, block.headers)) + " |",
                "|" + "|".join("---" for _ in block.headers) + "|",
            ]
            lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_markdown_inline(item)}" for item in block.items))
        elif isinstance(block, Code):
            text = "\n".join(map(visible, block.text.split("\n")))
            longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
            fence = "`" * max(3, longest + 1)
            parts.append(f"{fence}\n{text}\n{fence}")
        elif isinstance(block, Image):
            parts.append(f"*Figure, in the HTML report: {_markdown_inline(block.caption)}*")
    return "\n\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags; nothing inside a code span is
    markup."""
    spans: list[str] = []
    parts = []
    for is_code, piece in _split_code(visible(text.replace("\n", " "))):
        if is_code:
            # A placeholder that escaping and **bold** leave alone.
            parts.append(f"\0{len(spans)}\0")
            spans.append(f"<code>{html.escape(piece, quote=False)}</code>")
        else:
            parts.append(html.escape(piece, quote=False))
    formatted = _BOLD.sub(r"<strong>\1</strong>", "".join(parts))
    return re.sub("\0([0-9]+)\0", lambda match: spans[int(match.group(1))], formatted)


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
            text = "\n".join(map(visible, block.text.split("\n")))
            body.append(f"<pre><code>{html.escape(text, quote=False)}</code></pre>")
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
