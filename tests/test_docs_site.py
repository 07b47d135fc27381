"""The documentation site's API reference covers the public API exactly once.

Parses the pages under ``docs/api/`` (no Sphinx build): every name in
``gradtx.__all__`` has exactly one ``auto...`` or ``py:...`` directive, so does
every public function of the helper modules :mod:`gradtx.tree`,
:mod:`gradtx.projections`, :mod:`gradtx.sharding`, :mod:`gradtx.checkpoint`; no page documents a
name that is not public. tests/test_docs.py checks the docstrings themselves.
The full build, ``python -m sphinx -W -b html docs docs/_build/html``, runs with
the ``docs`` extra installed.
"""

from __future__ import annotations

import collections
import inspect
import re
from pathlib import Path

import pytest

import gradtx

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "api"
HELPER_MODULES = ("tree", "projections", "sharding", "checkpoint", "assignment")

_DIRECTIVE = re.compile(
    r"^\s*\.\.\s+(?:auto(?:function|class|data|exception|module)|py:(?:function|class|data))"
    r"::\s*(\S+)",
    re.MULTILINE,
)
_CURRENT = re.compile(r"^\s*\.\.\s+(?:currentmodule|py:currentmodule)::\s*(\S+)", re.MULTILINE)
_TOCTREE = re.compile(r"^\.\. toctree::\n((?:   .*\n|\n)*)", re.MULTILINE)


def _qualified(page: Path) -> list[str]:
    """The dotted names a page documents, ``gradtx.`` prefixed where a directive
    relies on ``.. currentmodule:: gradtx``."""
    text = page.read_text()
    names = []
    for match in _DIRECTIVE.finditer(text):
        name = match.group(1)
        if not name.startswith("gradtx"):
            before = list(_CURRENT.finditer(text, 0, match.start()))
            module = before[-1].group(1) if before else "gradtx"
            name = f"{module}.{name}"
        names.append(name)
    return names


def _helper_functions(module: str) -> set[str]:
    """The functions and classes a helper module defines, or publishes from a private one."""
    mod = getattr(gradtx, module)
    return {
        name
        for name, obj in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and (obj.__module__ == mod.__name__ or obj.__module__.startswith("gradtx._"))
    }


PUBLIC = {f"gradtx.{name}" for name in gradtx.__all__} | {
    f"gradtx.{module}.{name}" for module in HELPER_MODULES for name in _helper_functions(module)
}


@pytest.fixture(scope="module")
def documented() -> collections.Counter:
    pages = sorted(API.glob("*.rst")) + sorted(API.glob("*.md"))
    assert pages, f"no API pages under {API}"
    return collections.Counter(name for page in pages for name in _qualified(page))


def test_every_public_name_is_documented_exactly_once(documented):
    missing = sorted(PUBLIC - set(documented))
    repeated = sorted(name for name, count in documented.items() if count > 1)
    assert not missing, f"public names with no API entry: {missing}"
    assert not repeated, f"public names documented more than once: {repeated}"


def test_no_page_documents_a_private_or_unknown_name(documented):
    extra = sorted(set(documented) - PUBLIC)
    assert not extra, f"API pages document names that are not public: {extra}"


def test_every_api_page_is_in_the_api_toctree():
    index = (API / "index.rst").read_text()
    listed = {
        line.strip()
        for block in _TOCTREE.findall(index)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith(":")
    }
    pages = {page.stem for page in API.glob("*.rst")} - {"index"}
    assert pages == listed, f"pages not in docs/api/index.rst's toctrees: {sorted(pages - listed)}"


def test_the_docs_extra_and_the_build_command_are_declared():
    pyproject = (DOCS.parent / "pyproject.toml").read_text()
    assert re.search(r"^docs = \[", pyproject, re.MULTILINE)
    for package in ("sphinx", "sphinx-mathjax-offline"):
        assert f'"{package}>=' in pyproject
    assert (
        "python -m sphinx -W -b html docs docs/_build/html"
        in (DOCS.parent / "README.md").read_text()
    )


GUIDES = sorted((DOCS / "guides").glob("*.md"))


@pytest.mark.parametrize("guide", GUIDES, ids=[guide.stem for guide in GUIDES])
def test_guide_code_parses_and_the_guide_is_in_the_toctree(guide):
    code = re.findall(r"```python\n(.*?)```", guide.read_text(), re.DOTALL)
    assert code, f"{guide.name} has no Python code"
    compile("\n".join(code), str(guide), "exec")  # a SyntaxError fails the test
    assert f"guides/{guide.stem}" in (DOCS / "index.rst").read_text()


def test_every_schedule_has_a_picture_and_a_section():
    # docs/_ext/gradtx_docs.py draws each schedule at build time from its SCHEDULES
    # table, and docs/guides/schedules.md places each picture once.
    pytest.importorskip("docutils")
    import importlib.util

    spec = importlib.util.spec_from_file_location("gradtx_docs", DOCS / "_ext" / "gradtx_docs.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    assert set(ext.SCHEDULES) == set(ext.schedule_names())
    assert set(ext.schedule_names()) >= {"linear_schedule", "cosine_decay_schedule"}
    for name in ext.schedule_names():
        schedule, steps = ext.build_schedule(name)
        assert float(schedule(steps - 1)) == float(schedule(steps - 1))  # not NaN
    guide = (DOCS / "guides" / "schedules.md").read_text()
    placed = re.findall(r"^```\{schedule-curve\} (\S+)$", guide, re.MULTILINE)
    assert sorted(placed) == sorted(ext.schedule_names())
