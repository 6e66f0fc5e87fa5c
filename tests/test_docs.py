"""The README stays a short start for a newcomer, and the reference in docs/ builds as an MkDocs
site in strict mode (a broken link or anchor, or a page missing from the nav, fails the build).

Imports nothing from the project: it runs with only pytest, pyyaml and mkdocs installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MKDOCS_YML = ROOT / "mkdocs.yml"
MAX_README_LINES = 250

# A markdown link or image: [text](target) or ![alt](target), target up to a space or ")".
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def readme_links() -> list[str]:
    text = README.read_text(encoding="utf-8")
    # Links inside fenced code blocks are code, not links.
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return LINK.findall(text)


def nav_pages(nav: list) -> list[str]:
    """Every .md file named in mkdocs.yml's nav, nested sections included."""
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += nav_pages(value)
        elif isinstance(value, str) and value.endswith(".md"):
            pages.append(value)
    return pages


def built_page(site: Path, page: str, directory_urls: bool) -> Path:
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html" if directory_urls else site / f"{stem}.html"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--clean",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_readme_fits_a_few_screens():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move reference to docs/"
    )


def test_every_relative_link_in_the_readme_exists():
    links = [
        link
        for link in readme_links()
        if not link.startswith(("http://", "https://", "mailto:", "#"))
    ]
    assert links, "the README should link into docs/"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_readme_names_the_two_commands_and_a_first_request():
    text = README.read_text(encoding="utf-8")
    for needed in ("make serve", "make test", "/v1/chat/completions"):
        assert needed in text, f"README.md should mention {needed!r}"


@pytest.fixture(scope="module")
def mkdocs_config() -> dict:
    pytest.importorskip("mkdocs")
    return yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))


def test_the_site_builds_strict_with_every_nav_page(mkdocs_config, tmp_path):
    assert mkdocs_config.get("strict") is True
    site = tmp_path / "site"
    result = mkdocs_build(MKDOCS_YML, site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    assert (site / "index.html").is_file()
    pages = nav_pages(mkdocs_config["nav"])
    assert "index.md" in pages
    directory_urls = mkdocs_config.get("use_directory_urls", True)
    missing = [p for p in pages if not built_page(site, p, directory_urls).is_file()]
    assert not missing, f"nav pages not built: {missing}"


def break_link(docs: Path, page: Path) -> str:
    target = "no-such-page-anywhere.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\n[nowhere]({target})\n", encoding="utf-8")
    return target


def break_anchor(docs: Path, page: Path) -> str:
    anchor = "no-such-heading-anywhere"
    page.write_text(
        page.read_text(encoding="utf-8") + f"\n[nowhere](index.md#{anchor})\n", encoding="utf-8"
    )
    return anchor


def leave_a_page_out_of_the_nav(docs: Path, page: Path) -> str:
    (docs / "orphan-page.md").write_text("# Not in the nav\n", encoding="utf-8")
    return "orphan-page.md"


@pytest.mark.parametrize("breakage", [break_link, break_anchor, leave_a_page_out_of_the_nav])
def test_strict_mode_fails_on_a_broken_site(mkdocs_config, tmp_path, breakage):
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    docs = tmp_path / mkdocs_config.get("docs_dir", "docs")
    shutil.copytree(ROOT / mkdocs_config.get("docs_dir", "docs"), docs)
    named = breakage(docs, docs / nav_pages(mkdocs_config["nav"])[-1])
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, f"{breakage.__name__}: the strict build should fail"
    assert named in result.stdout + result.stderr
