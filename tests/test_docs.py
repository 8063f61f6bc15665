"""The docs: the Sphinx site builds without warnings, every code block in README.md and docs/ is
run by a test or marked as not run, and README's links into docs/ reach files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
GENERATED = {"params.md"}  # written by `flaxvision params --write`
# The line before each code block says why it is not run, or which test runs it.
NOT_RUN = re.compile(r"<!-- not run: .+ -->")
TESTED = re.compile(r"<!-- tested: (tests/\w+\.py) runs this example -->")


def pages() -> list[Path]:
    return [PROJECT_ROOT / "README.md", *(page for page in sorted(DOCS.glob("*.md")) if page.name not in GENERATED)]


def code_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, the line before it) of each fenced code block; MyST directives ({toctree}) are not code."""
    lines = page.read_text().splitlines()
    blocks, fence = [], None
    for number, line in enumerate(lines):
        if fence is None and (opening := re.match(r"\s*(`{3,}|~{3,})(.*)", line)):
            fence = opening.group(1)
            if not opening.group(2).startswith("{"):
                blocks.append((number + 1, lines[number - 1].strip() if number else ""))
        elif fence is not None and line.strip() == fence:
            fence = None
    return blocks


@pytest.mark.slow
def test_the_docs_build_without_warnings(tmp_path):
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "index.html").is_file()


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_every_code_block_is_run_by_a_test_or_marked_not_run(page):
    assert page.is_file()
    for number, before in code_blocks(page):
        where = f"{page.relative_to(PROJECT_ROOT)}:{number}"
        tested = TESTED.fullmatch(before)
        assert tested or NOT_RUN.fullmatch(before), f"{where}: put `<!-- not run: why -->` on the line before"
        if tested:
            assert f'"{page.name}"' in (PROJECT_ROOT / tested.group(1)).read_text(), f"{where}: no test reads it"


def test_the_readme_links_into_docs_reach_files():
    links = re.findall(r"\]\((docs/[^)#\s]*)", (PROJECT_ROOT / "README.md").read_text())
    assert links and [link for link in links if not (PROJECT_ROOT / link).exists()] == []
