"""Tests for `pipeline.report`: the same blocks as Markdown and as one self-contained page."""

import base64
import html
import re

import pytest
from markdown_it import MarkdownIt

from pipeline.report import (
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    code,
    to_html,
    to_markdown,
    visible,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
BLOCKS = [
    Heading("Verdict", 1),
    Paragraph("**keras wins** with `model.l2=0.0001` and a < b"),
    Table(("metric", "value"), (("a|b", "1.0"), ("ROC AUC", "0.9"))),
    Bullets(("first", "second `x`")),
    Code("dvc exp run -S 'model.epochs=20'\ndvc queue start -j 2"),
    Image(PNG, "Loss per epoch"),
]


def test_markdown():
    text = to_markdown(BLOCKS)

    assert text.startswith("# Verdict\n\n**keras wins** with `model.l2=0.0001` and a < b\n\n")
    assert "| metric | value |\n|---|---|\n| a\\|b | 1.0 |\n| ROC AUC | 0.9 |" in text
    assert "- first\n- second `x`" in text
    assert "```\ndvc exp run -S 'model.epochs=20'\ndvc queue start -j 2\n```" in text
    assert "*Figure, in the HTML report: Loss per epoch*" in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_html_is_escaped_and_formatted():
    page = to_html([*BLOCKS, Paragraph("<script>alert(1)</script>")], "A & B")

    assert page.startswith("<!DOCTYPE html>")
    assert "<title>A &amp; B</title>" in page
    assert "<h1>Verdict</h1>" in page
    assert "<p><strong>keras wins</strong> with <code>model.l2=0.0001</code> and a &lt; b</p>" in (
        page
    )
    assert "<td>a|b</td><td>1.0</td>" in page
    assert "<li>second <code>x</code></li>" in page
    assert "<pre><code>dvc exp run -S 'model.epochs=20'\ndvc queue start -j 2</code></pre>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_html_is_self_contained():
    page = to_html(BLOCKS, "report")

    (encoded,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(encoded) == PNG
    assert "<figcaption>Loss per epoch</figcaption>" in page
    # Nothing to fetch: no links, scripts or remote sources.
    assert not re.search(r"<link|<script|src=\"http|href=", page)


# Values a user can put in params.yaml or a data file, each trying to leave its code span.
HOSTILE = [
    "x` <img src=x onerror=alert(3)> `y",
    "`",
    "``",
    "a `` b",
    "```",
    "\\`<b>`",
    "a\\",
    "<script>alert(1)</script>",
    "a|b",
    " a ",
    "",
    "x\n# heading\n<img src=x>",
    "\x1b[31mred\u202e",
]
# A CommonMark reader with GitHub's tables, raw HTML allowed: what a malicious value
# would need to inject a tag.
READER = MarkdownIt("commonmark").enable("table")


def rendered_codes(markdown: str) -> list[str]:
    return [
        html.unescape(text) for text in re.findall(r"<code>(.*?)</code>", READER.render(markdown))
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_code_span_holds_any_value_whole(value: str):
    markdown = to_markdown(
        [
            Paragraph(f"experiment {code(value)} and **{code(value)}**"),
            Table(("name", "value"), ((code(value), "1"),)),
            Bullets((f"class {code(value)}",)),
        ]
    )

    page = READER.render(markdown)
    expected = visible(value) or " "
    assert rendered_codes(markdown) == [expected] * 4
    assert "<img" not in page and "<script" not in page and "<b>" not in page
    assert "\x1b" not in markdown and "\u202e" not in markdown


@pytest.mark.parametrize("value", HOSTILE)
def test_html_shows_the_same_code_as_markdown(value: str):
    blocks = [Paragraph(f"experiment {code(value)}"), Table(("name",), ((code(value),),))]

    page = to_html(blocks, value)

    codes = [html.unescape(text) for text in re.findall(r"<code>(.*?)</code>", page)]
    assert codes == rendered_codes(to_markdown(blocks))
    assert "<img" not in page and "<script" not in page and "<b>" not in page


def test_markup_outside_code_spans_stays_text():
    """A value pasted without code(): a backtick ends the template's span early, but
    what follows is still not HTML."""
    name = "x` <img src=x onerror=alert(3)> `y"
    markdown = to_markdown([Paragraph(f"in `{name}`, a < b &amp; \\`<i>`"), Heading(f"`{name}`")])

    page = READER.render(markdown)
    assert "<img" not in page and "<i>" not in page
    assert "&lt;img src=x onerror=alert(3)&gt;" in page
    # The pipeline's own text stays readable in the file.
    assert "a < b &amp;amp;" in markdown
    assert "a &lt; b &amp;amp; \\" in page


def test_code_blocks_keep_any_backtick_run_inside():
    text = "dvc exp run -S 'track.experiment_name=```\n<img src=x>'"

    markdown = to_markdown([Code(text)])

    assert markdown.startswith("````\n") and markdown.endswith("\n````\n")
    assert (
        READER.render(markdown) == f"<pre><code>{html.escape(text, quote=False)}\n</code></pre>\n"
    )


def test_visible_escapes_control_and_format_characters():
    assert visible("a\x1b[2Jb\rc\u202ed\u2028e") == "a\\x1b[2Jb\\rc\\u202ed\\u2028e"
    assert visible("naïve 日本 ✓") == "naïve 日本 ✓"
