"""The package's layout: the command-line application sits above the library, never inside it.

``gradtx/app`` (the ``gradtx`` command: its parser, races and problems) may import
the library; no library module (every other module under ``gradtx/``) may import
``gradtx.app``. Checked on the source files' import statements, parsed with
:mod:`ast`, so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gradtx"
APP = PACKAGE / "app"


def _module_name(path: Path) -> str:
    """``gradtx.transforms.clipping`` for ``gradtx/transforms/clipping.py``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in ``importer``."""
    if level == 0:
        return module or ""
    package = importer.split(".")
    if not is_package:
        package.pop()
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_app(name: str) -> bool:
    return name == "gradtx.app" or name.startswith("gradtx.app.")


def app_imports(source: str, importer: str, is_package: bool = False) -> list[str]:
    """The modules of ``gradtx.app`` that ``source`` imports, with their line numbers.

    Counts ``import gradtx.app...``, ``from gradtx.app... import ...``, ``from
    gradtx import app`` (relative forms included) and ``importlib.import_module`` /
    ``__import__`` called with a literal name.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, importer, is_package)
            names = [module] if _is_app(module) else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names = [str(first.value)]
        hits = sorted({n for n in names if _is_app(n)})
        found.extend(f"line {node.lineno}: {n}" for n in hits)
    return found


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if APP not in p.parents)


def test_the_library_never_imports_the_app():
    files = library_files()
    assert len(files) > 20 and PACKAGE / "__init__.py" in files
    offenders = {}
    for path in files:
        found = app_imports(
            path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py"
        )
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_app_is_where_the_command_line_lives():
    for name in ("__init__", "__main__", "cli", "race", "problems"):
        assert (APP / f"{name}.py").is_file(), name
    for name in ("cli", "race", "problems"):
        assert not (PACKAGE / f"{name}.py").exists(), name
    cli = APP / "cli.py"
    # The checker sees the app's own imports of itself: it reads real files.
    assert app_imports(cli.read_text(encoding="utf-8"), "gradtx.app.cli") != []


@pytest.mark.parametrize(
    ("source", "importer", "is_package"),
    [
        ("import gradtx.app.cli", "gradtx.tree", False),
        ("import gradtx.app as a", "gradtx.tree", False),
        ("from gradtx.app.race import build", "gradtx.tree", False),
        ("from gradtx import app", "gradtx.tree", False),
        ("from gradtx import tree, app", "gradtx.tree", False),
        ("def f():\n    from gradtx.app import problems", "gradtx.tree", False),
        ("from . import app", "gradtx.tree", False),
        ("from .app import cli", "gradtx", True),
        ("from ..app.cli import main", "gradtx.transforms.flat", False),
        ("from .. import app", "gradtx.transforms", True),
        ("import importlib\nimportlib.import_module('gradtx.app.cli')", "gradtx.tree", False),
        ("__import__('gradtx.app')", "gradtx.tree", False),
    ],
)
def test_the_checker_finds_every_spelling(source, importer, is_package):
    assert len(app_imports(source, importer, is_package)) == 1


@pytest.mark.parametrize(
    ("source", "importer", "is_package"),
    [
        ("import gradtx", "gradtx.tree", False),
        ("from gradtx import application, tree", "gradtx.tree", False),
        ("import gradtx.apply", "gradtx.tree", False),
        ("from . import tree", "gradtx.transforms.flat", False),
        ("from .app import cli", "gradtx.transforms", True),  # gradtx.transforms.app
        ("x = 'gradtx.app'", "gradtx.tree", False),
    ],
)
def test_the_checker_passes_other_imports(source, importer, is_package):
    assert app_imports(source, importer, is_package) == []


def _defined_at_top(path: Path) -> set[str]:
    """The names a module binds at its top level by assignment, ``def`` or ``class``."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_masks_have_one_home_beside_masked_and_partition():
    homes = {
        name: sorted(
            str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if name in _defined_at_top(p)
        )
        for name in ("Mask", "resolve_mask", "masked", "partition")
    }
    assert homes == dict.fromkeys(homes, ["gradtx/combine.py"])
