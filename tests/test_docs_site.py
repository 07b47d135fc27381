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
    ext = _ext_module("gradtx_docs")  # imports its neighbours gradtx_paths and gradtx_jobs
    assert set(ext.SCHEDULES) == set(ext.schedule_names())
    assert set(ext.schedule_names()) >= {"linear_schedule", "cosine_decay_schedule"}
    for name in ext.schedule_names():
        schedule, steps = ext.build_schedule(name)
        assert float(schedule(steps - 1)) == float(schedule(steps - 1))  # not NaN
    guide = (DOCS / "guides" / "schedules.md").read_text()
    placed = re.findall(r"^```\{schedule-curve\} (\S+)$", guide, re.MULTILINE)
    assert sorted(placed) == sorted(ext.schedule_names())


def _ext_module(name: str):
    """A module of docs/_ext, loaded as Sphinx loads it (docs/_ext on ``sys.path``)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return module


def test_every_first_order_named_optimizer_has_a_path_on_its_api_page():
    # docs/_ext/gradtx_paths.py keeps its own table (the docs do not import tests/);
    # it must list exactly the first-order named optimizers of the registry.
    from tests.registry import NAMED_OPTIMIZERS

    paths = _ext_module("gradtx_paths")
    first_order = {
        e.public
        for e in NAMED_OPTIMIZERS
        if not getattr(e.factory, "__module__", "").startswith("gradtx.second_order")
    }
    assert first_order >= {"adam", "sgd", "lion"}
    assert not first_order & {"lbfgs", "bfgs", "newton", "hessian_free", "nonlinear_cg"}
    assert set(paths.OPTIMIZERS) == first_order, (
        f"missing from OPTIMIZERS: {sorted(first_order - set(paths.OPTIMIZERS))}; "
        f"not first-order named optimizers: {sorted(set(paths.OPTIMIZERS) - first_order)}"
    )
    for name, (call, lr_rosenbrock, lr_quadratic) in paths.OPTIMIZERS.items():
        takes_rate = "LR" in call
        assert takes_rate == (lr_rosenbrock is not None) == (lr_quadratic is not None), name
    # One picture per method, on the page that documents it.
    placed = collections.Counter()
    for page in API.glob("*.rst"):
        text = page.read_text()
        for name in re.findall(r"^\.\. optimizer-path:: (\S+)$", text, re.MULTILINE):
            placed[name] += 1
            assert re.search(rf"^\.\. autofunction:: (gradtx\.)?{name}$", text, re.MULTILINE), (
                f"{page.name} draws {name}'s path but does not document it"
            )
    assert dict(placed) == {name: 1 for name in paths.OPTIMIZERS}
    gallery = (DOCS / "guides" / "gallery.md").read_text()
    placed = re.findall(r"^```\{optimizer-gallery\} (\S+)$", gallery, re.MULTILINE)
    assert sorted(placed) == sorted(paths.PROBLEMS)


def test_the_second_order_gallery_draws_every_second_order_named_optimizer():
    # docs/_ext/gradtx_second_order_paths.py draws its METHODS at build time; each
    # second-order named optimizer of the registry is among them, and the page places
    # both problems' pictures, the convergence plot and the table of calls.
    pytest.importorskip("docutils")
    from tests.registry import NAMED_OPTIMIZERS

    ext = _ext_module("gradtx_docs")  # imports gradtx_second_order_paths as Sphinx does
    second = ext.gradtx_second_order_paths
    paths = ext.gradtx_paths
    second_order = {
        e.public
        for e in NAMED_OPTIMIZERS
        if getattr(e.factory, "__module__", "").startswith("gradtx.second_order")
    }
    assert second_order >= {"lbfgs", "bfgs", "newton", "hessian_free", "nonlinear_cg"}
    drawn = {re.match(r"gradtx\.(\w+)\(", call)[1] for call in second.METHODS.values()}
    assert second_order <= drawn, f"not drawn: {sorted(second_order - drawn)}"
    for label in second.METHODS:
        tx = second.build(label)
        assert callable(tx.init) and callable(tx.update), label
    page = (DOCS / "guides" / "second_order_gallery.md").read_text()
    placed = re.findall(r"^```\{second-order-gallery\} (\S+)$", page, re.MULTILINE)
    assert sorted(placed) == sorted(paths.PROBLEMS)
    for directive in ("second-order-convergence", "second-order-calls"):
        assert re.search(rf"^```\{{{directive}\}}$", page, re.MULTILINE), directive
    # Reachable from the first-order gallery and the second-order guide.
    for guide in ("gallery.md", "second_order.md"):
        assert "second_order_gallery>" in (DOCS / "guides" / guide).read_text() or (
            "{doc}`second_order_gallery`" in (DOCS / "guides" / guide).read_text()
        ), guide


def test_the_build_runs_every_guide_and_every_example():
    jobs = _ext_module("gradtx_jobs")
    scripts = {path.name for path in (DOCS.parent / "examples").glob("*.py")}
    assert set(jobs.EXAMPLES) == scripts
    names = {name for name, _ in jobs.jobs(DOCS / "_build" / "html")}
    assert {f"docs/guides/{guide.name}" for guide in GUIDES} <= names
    assert {f"examples/{script}" for script in scripts} <= names
    assert (
        "index" in (DOCS / "index.rst").read_text()
        and ".. compare-curves::" in (DOCS / "index.rst").read_text()
    )


def test_a_failing_guide_block_names_the_guide_and_the_block(tmp_path):
    import subprocess
    import sys

    guide = tmp_path / "broken.md"
    guide.write_text(
        "# Broken\n\n```python\nx = 1\n```\n\ntext\n\n"
        "```python\ny = x + 1\nraise ValueError('boom')\n```\n"
    )
    done = subprocess.run(
        [sys.executable, str(DOCS / "_ext" / "run_guide.py"), str(guide)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "broken.md: python block 2 of 2 (line 10) failed" in done.stderr
    assert "raise ValueError('boom')" in done.stderr
    assert 'broken.md", line 11' in done.stderr and "ValueError: boom" in done.stderr
    guide.write_text("```python\nx = 1\n```\n\n```python\nassert x == 1\n```\n")
    done = subprocess.run(
        [sys.executable, str(DOCS / "_ext" / "run_guide.py"), str(guide)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 python blocks ran" in done.stdout
