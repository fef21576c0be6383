"""The README and docs/ pages link only to files that exist and to headings those files have.

Relative Markdown links `[text](path)`, `[text](path#anchor)` and `[text](#anchor)` in
README.md and docs/*.md: the path (relative to the linking file) must exist, and an anchor
must be a heading of the target Markdown file under GitHub's rules (lowercase; punctuation
other than hyphens, underscores and spaces dropped; spaces to hyphens; a repeated heading
gets -1, -2, ...). External links (`https:` etc.) are not checked. Fast: no imports beyond
the standard library.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and underscores
    return text.replace(" ", "-")


def _outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in _outside_fences(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            slug = github_anchor(m.group(2))
            n = seen.get(slug, 0)
            found.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return found


def links(path: Path) -> list[str]:
    """Relative link targets of a page, code blocks and inline code excluded."""
    text = "\n".join(_outside_fences(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "``", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_the_anchor_rules():
    assert github_anchor("Bigger models on one GPU: `--size 2b|9b|27b`") == "bigger-models-on-one-gpu---size-2b9b27b"
    assert github_anchor("A real pretrained model (SmolLM2-135M-Instruct)") == (
        "a-real-pretrained-model-smollm2-135m-instruct")
    assert github_anchor("Four LoRA adapters trained on SmolLM2 (rule `rl_adapter`)") == (
        "four-lora-adapters-trained-on-smollm2-rule-rl_adapter")


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A\n\n## Notes\n\n```\n# Notes\n```\n\n## Notes\n\n### Notes\n")
    assert anchors(page) == {"a", "notes", "notes-1", "notes-2"}


def test_there_are_docs_pages_and_the_readme_links_them_all():
    docs = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert "index.md" in docs and len(docs) > 5
    readme = {Path(t.partition("#")[0]).name for t in links(REPO / "README.md") if t.startswith("docs/")}
    index = {Path(t.partition("#")[0]).name for t in links(REPO / "docs" / "index.md")}
    assert "index.md" in readme
    assert set(docs) - {"index.md"} <= index, "docs/index.md lists every page"
    assert set(docs) <= readme, "the README links every docs page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, f"{page.relative_to(REPO)}:\n" + "\n".join(bad)
