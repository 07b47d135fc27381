"""The package's layout: the command-line application sits above the library, never inside it.

``gradtx_cli`` (the ``gradtx`` command: its parser, which runs before JAX is
imported, its races, problems and tables) may import the library; no library
module (any module under ``gradtx/``) may import it. Checked on the source
files' import statements, parsed with :mod:`ast`, so an import inside a function
counts as much as one at the top.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.repo_python import run_python

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gradtx"
APP = ROOT / "gradtx_cli"


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
    return name == "gradtx_cli" or name.startswith("gradtx_cli.")


def app_imports(source: str, importer: str, is_package: bool = False) -> list[str]:
    """The modules of ``gradtx_cli`` that ``source`` imports, with line numbers.

    Counts ``import gradtx_cli...``, ``from gradtx_cli... import ...`` and
    ``importlib.import_module`` / ``__import__`` called with a literal name.
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
    return sorted(PACKAGE.rglob("*.py"))


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
    for name in ("__init__", "__main__", "commands", "race", "problems"):
        assert (APP / f"{name}.py").is_file(), name
    for name in ("cli", "commands", "race", "problems", "app"):
        assert not (PACKAGE / f"{name}.py").exists(), name
        assert not (PACKAGE / name).exists(), name
    cli = APP / "commands.py"
    # The checker sees the app's own imports of itself: it reads real files.
    assert app_imports(cli.read_text(encoding="utf-8"), "gradtx_cli.commands") != []


@pytest.mark.parametrize(
    ("source", "importer", "is_package"),
    [
        ("import gradtx_cli.commands", "gradtx.tree", False),
        ("import gradtx_cli.race as a", "gradtx.tree", False),
        ("from gradtx_cli.race import build", "gradtx.tree", False),
        ("def f():\n    from gradtx_cli import problems", "gradtx.tree", False),
        ("import importlib\nimportlib.import_module('gradtx_cli.commands')", "gradtx.tree", False),
        ("__import__('gradtx_cli')", "gradtx.tree", False),
        ("import gradtx_cli", "gradtx.tree", False),
        ("from gradtx_cli import main", "gradtx.training.curves", False),
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
        ("x = 'gradtx_cli'", "gradtx.tree", False),
        ("import gradtx_clip", "gradtx.tree", False),
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


# ------------------------------------------------------------- import gradtx

# The public submodules directly under gradtx; the test below also finds every
# public module file (no part of its path starting with "_") and checks them all.
PUBLIC_SUBMODULES = (
    "base",
    "checkpoint",
    "combine",
    "optimizers",
    "schedules",
    "second_order",
    "sharding",
    "training",
    "transforms",
    "tree",
)
# Optional packages (extras or what examples use): a plain ``import gradtx`` loads none.
OPTIONAL = ("orbax", "flax", "optax", "chex", "sklearn", "matplotlib", "rich", "tqdm", "torch")


def public_modules() -> list[str]:
    names = []
    for path in library_files():
        name = _module_name(path)
        if not any(part.startswith("_") for part in name.split(".")):
            names.append(name)
    return sorted(set(names) - {"gradtx"})


def test_public_modules_are_found():
    found = public_modules()
    assert {f"gradtx.{name}" for name in PUBLIC_SUBMODULES} <= set(found)
    assert "gradtx.transforms.clipping" in found and "gradtx._checks" not in found
    assert not any(_is_app(name) for name in found)


def test_import_gradtx_loads_every_public_submodule():
    """In a fresh interpreter, after a plain ``import gradtx`` and nothing else."""
    assert len(public_modules()) > 30
    script = f"""
import json, sys
import gradtx
gradtx.checkpoint.restore_state, gradtx.checkpoint.state_differences
gradtx.sharding.state_shardings, gradtx.sharding.zero1_state_shardings
missing = [
    name for name in {PUBLIC_SUBMODULES!r}
    if getattr(getattr(gradtx, name, None), "__name__", None) != "gradtx." + name
]
not_loaded = [name for name in {public_modules()!r} if name not in sys.modules]
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in {OPTIONAL!r} or m == "gradtx_cli" or m.startswith("gradtx_cli.")
)
print(json.dumps({{
    "missing": missing, "not_loaded": not_loaded, "loaded": loaded, "all": gradtx.__all__
}}))
"""
    done = run_python("-c", script, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["missing"] == []  # each an attribute of gradtx, the module itself
    # Deeper modules are loaded; as attributes, some are shadowed by the function
    # their package re-exports (gradtx.second_order.bfgs is the function bfgs).
    assert result["not_loaded"] == []
    assert result["loaded"] == []  # nor the app, nor any optional package
    assert set(PUBLIC_SUBMODULES) <= set(result["all"])
