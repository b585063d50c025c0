"""The README and docs/: every relative link and #anchor points to a file, and a heading, that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (GitHub numbers repeated ones -1, -2...)."""
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            base, n = anchor(line.lstrip("#")), 0
            while (a := base if n == 0 else f"{base}-{n}") in found:
                n += 1
            found.add(a)
    return found


def links(page: Path) -> list[str]:
    """The relative link targets of a page, outside code blocks."""
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_anchor_follows_github() -> None:
    assert anchor("Every MNIST model at its defaults (measured)") == "every-mnist-model-at-its-defaults-measured"
    assert anchor("The conditional MLP GAN: why it ignored the label, and the fix") == (
        "the-conditional-mlp-gan-why-it-ignored-the-label-and-the-fix"
    )
    assert anchor("Sampling a trained model: `generate.py`") == "sampling-a-trained-model-generatepy"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md)\n")
    assert broken(page) == ["#nothing: no such heading", "missing.md: no such file"]


def broken(page: Path) -> list[str]:
    """What is wrong with a page's relative links, one line each."""
    problems = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{target}: no such heading")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    assert broken(page) == []


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first_picture = next(i for i, line in enumerate(lines) if "![" in line)
    first_command = next(i for i, line in enumerate(lines) if line.startswith("python"))
    assert first_picture < 30 and first_command < 30
