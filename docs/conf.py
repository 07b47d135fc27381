"""Sphinx configuration for the gradtx documentation site.

Build (from the repository root)::

    pip install -e ".[docs]" && python -m sphinx -W -b html docs docs/_build/html

Everything the pages load is served from the site itself: MathJax comes from the
``sphinx-mathjax-offline`` package and is copied into ``_static/mathjax``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# autodoc documents this checkout, whatever else is installed.
sys.path.insert(0, str(ROOT))
# docs/_ext: the guides' pictures and tables, computed from the library at build time.
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import gradtx  # noqa: E402

project = "gradtx"
author = "the gradtx authors"
copyright = "the gradtx authors"  # noqa: A001
release = version = gradtx.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",
    "myst_parser",
    "gradtx_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Docstrings are Google style (Args / Returns / Raises / Examples / References).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False

# MathJax from the site's own _static folder (sphinx-mathjax-offline copies it there).
mathjax_path = "mathjax/tex-chtml.js"

myst_heading_anchors = 3

html_theme = "furo"
html_title = f"gradtx {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
# Nothing on the site links or loads from outside: no "Made with Sphinx" footer
# links, and _templates/page.html drops the link to Furo's repository.
html_show_sphinx = False
templates_path = ["_templates"]
