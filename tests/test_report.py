"""Tests for `pipeline.report`: the same blocks as Markdown and as one self-contained page."""

import base64
import re

from pipeline.report import Bullets, Code, Heading, Image, Paragraph, Table, to_html, to_markdown

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
