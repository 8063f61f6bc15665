"""Sphinx settings of the docs site: Markdown pages (MyST), the book theme, no network at build time.

Build: uv run --locked sphinx-build -W --keep-going -b html docs docs/_build/html
"""

project = "flaxvision"
copyright = "flaxvision's authors; Apache-2.0"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links such as [x](reproducibility.md#portable-numerics) reach headings
html_theme = "sphinx_book_theme"
html_title = "flaxvision"
html_theme_options = {"show_toc_level": 2}
