"""`dvc plots show` draws every chart with no network: Vega comes from plots/vendor/."""

import configparser
import re
from pathlib import Path

import pytest
import yaml

from tests.browser import dump_dom
from tests.endtoend import copy_project, execute

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "plots" / "offline.html"


def test_the_configured_template_loads_only_vendored_scripts():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    # DVC resolves a relative template path from the .dvc/ folder.
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page
    # DVC replaces this placeholder with its CDN links.
    assert "{scripts}" not in page
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert sources == [
        "../plots/vendor/vega.min.js",
        "../plots/vendor/vega-lite.min.js",
        "../plots/vendor/vega-embed.min.js",
    ]
    page_folder = ROOT / "dvc_plots"
    for source in sources:
        script = (page_folder / source).resolve()
        assert script.stat().st_size > 50_000
        # Each library ships with its licence.
        assert script.with_name(script.name.replace(".min.js", ".LICENSE")).exists()


@pytest.mark.slow
def test_dvc_plots_show_draws_every_chart_offline(built_project, tmp_path):
    project = copy_project(built_project, tmp_path / "project")
    execute(project, "dvc", "plots", "show")
    page = project / "dvc_plots" / "index.html"
    assert "cdn.jsdelivr.net" not in page.read_text()
    dom = dump_dom(page.as_uri(), tmp_path / "profile")
    charts = len(yaml.safe_load((project / "dvc.yaml").read_text())["plots"])
    # vega-embed draws each chart on a canvas of its own and sizes it once drawn.
    drawn = re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)
    assert len(drawn) == charts == 6
    assert all(int(width) > 300 and int(height) > 300 for width, height in drawn)
