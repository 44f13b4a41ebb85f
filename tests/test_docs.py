"""The documentation: README.md is a front page (at most 150 lines) and docs/ the map; every relative link
of either resolves to a file of the repository, and docs/CONFIG.md is what scripts/dev/make_config_doc.py
writes from the config (so the option table never drifts from the code)."""

import importlib.util
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md")
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text):
    """Targets of the Markdown links and images of `text` that are not URLs or in-page anchors."""
    code_free = re.sub(r"```.*?```", "", text, flags=re.S)
    return [t for t in LINK.findall(code_free) if not re.match(r"[a-z]+:|#", t)]


def test_the_link_finder_sees_links_and_skips_urls():
    text = "see [a](docs/A.md#x) ![p](p.png) [u](https://x.org) [in](#here)\n```\n[no](nope.md)\n```"
    assert relative_links(text) == ["docs/A.md#x", "p.png"]


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        links = relative_links(f.read())
    base = os.path.dirname(os.path.join(REPO, page))
    broken = [t for t in links if not os.path.exists(os.path.join(base, t.split("#")[0]))]
    assert broken == [], f"{page}: {broken}"


def test_readme_is_a_front_page():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 150, len(lines)
    assert "bash scripts/test.sh" in "\n".join(lines)  # the test command CI runs


def test_config_page_is_generated_from_the_config():
    spec = importlib.util.spec_from_file_location(
        "make_config_doc", os.path.join(REPO, "scripts", "dev", "make_config_doc.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with open(os.path.join(REPO, "docs", "CONFIG.md"), encoding="utf-8") as f:
        assert f.read() == tool.render(), "docs/CONFIG.md is stale: run python scripts/dev/make_config_doc.py"
