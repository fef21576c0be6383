"""Report captions (workflow/report/*.rst) render as Snakemake renders them, Jinja then
docutils, without a single docutils message: an unescaped `*` or a name ending in `_`
otherwise shows up as an error box in the report and an ERROR line in `snakemake --report`."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from docutils.core import publish_parts
from jinja2 import Environment, StrictUndefined

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = sorted((REPO / "workflow" / "report").glob("*.rst"))
# A legal config name that reStructuredText reads as markup when pasted raw: a trailing
# underscore makes a reference to an undefined target.
NAME = "PT4_"


def docutils_messages(path: Path) -> str:
    """What docutils reports (level INFO and up) while rendering the caption at `path`."""
    wildcards = SimpleNamespace(**dict.fromkeys(("model", "scenario", "experiment", "counterfactual", "steering"), NAME))
    snakemake = SimpleNamespace(wildcards=wildcards, config={"models": {NAME: {}, "base": {}}})
    text = Environment(undefined=StrictUndefined).from_string(path.read_text()).render(
        snakemake=snakemake, categories={}, files={})
    stream = io.StringIO()
    publish_parts(text, writer="html", settings_overrides={"warning_stream": stream, "report_level": 1})
    return stream.getvalue()


def test_every_caption_is_found():
    assert len(CAPTIONS) >= 20


@pytest.mark.parametrize("path", CAPTIONS, ids=lambda p: p.name)
def test_caption_renders_without_docutils_messages(path):
    assert docutils_messages(path) == ""


def test_the_check_fires_on_unescaped_markup(tmp_path):
    bad = tmp_path / "bad.rst"
    bad.write_text("Tables per/{{ snakemake.wildcards.steering }}/*.csv for {{ snakemake.wildcards.model }}.\n")
    assert "ERROR/3" in docutils_messages(bad) and "WARNING/2" in docutils_messages(bad)
