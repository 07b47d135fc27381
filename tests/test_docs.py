"""Every public name is documented, and every parameter of every public function.

The rule for a parameter (Google style, as the package writes its docstrings):

* it is *listed* in the ``Args:`` section, alone (``decay: ...``) or in a group
  (``b1, b2, eps: see :func:`scale_by_adam`.``); an entry that is nothing but a
  reference (``see :func:`f``` / ``as :func:`f```) only counts if ``f`` documents
  those names itself;
* or the docstring delegates all its arguments (``Arguments as :func:`f```,
  ``see :func:`f` for every argument``) and ``f`` documents that parameter.

``Args:`` entries that name no parameter (stale docs) fail too. The examples in
the docstrings run as doctests (``--doctest-modules`` in pyproject.toml).
"""

from __future__ import annotations

import inspect
import re

import pytest

import gradtx
from tests.registry import NAMED_OPTIMIZERS

_SECTION = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*:(.*)$")
_REFERENCE = re.compile(r"^\s*(?:see|as)\s+:func:`~?(?:gradtx\.)?(\w+)`\s*\.?\s*$", re.IGNORECASE)
_DELEGATION = re.compile(
    r"Arguments as :func:`~?(?:gradtx\.)?(\w+)`"
    r"|:func:`~?(?:gradtx\.)?(\w+)` for every argument"
)


def _public(kind):
    for name in gradtx.__all__:
        obj = getattr(gradtx, name)
        if kind(obj):
            yield name, obj


PUBLIC_FUNCTIONS = dict(_public(inspect.isfunction))
PUBLIC_CLASSES = dict(_public(inspect.isclass))


def _sections(doc: str) -> dict[str, list[str]]:
    """The docstring's sections (``Args``, ``Returns``, ...) as lists of lines."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in inspect.cleandoc(doc).splitlines():
        match = _SECTION.match(line)
        if match and not line.startswith(" "):
            current = match.group(1)
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def _args_entries(doc: str) -> dict[str, str]:
    """``{parameter name: the text of its entry}`` from the ``Args:`` section."""
    lines = _sections(doc).get("Args", [])
    indented = [line for line in lines if line.strip()]
    if not indented:
        return {}
    indent = min(len(line) - len(line.lstrip()) for line in indented)
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in indented:
        here = len(line) - len(line.lstrip())
        match = _ENTRY.match(line.strip()) if here == indent else None
        if match:
            names = [n.strip().lstrip("*") for n in match.group(1).split(",")]
            for n in names:
                entries[n] = match.group(2).strip()
        else:
            for n in names:
                entries[n] += " " + line.strip()
    return entries


def _documented(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The parameters of public function ``name`` that its docstring documents."""
    fn = PUBLIC_FUNCTIONS[name]
    doc = inspect.getdoc(fn) or ""
    params = set(inspect.signature(fn).parameters)
    seen = seen | {name}
    documented = set()
    for param, text in _args_entries(doc).items():
        reference = _REFERENCE.match(text)
        if reference and reference.group(1) in PUBLIC_FUNCTIONS:
            target = reference.group(1)
            if target not in seen and param in _documented(target, seen):
                documented.add(param)
        else:
            documented.add(param)
    for match in _DELEGATION.finditer(doc):
        target = match.group(1) or match.group(2)
        if target in PUBLIC_FUNCTIONS and target not in seen:
            documented |= _documented(target, seen) & params
    return documented


@pytest.mark.parametrize("name", sorted(PUBLIC_FUNCTIONS) + sorted(PUBLIC_CLASSES))
def test_public_name_has_a_docstring(name):
    obj = getattr(gradtx, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc.splitlines()[0]) > 10, f"{name} has no summary line"


@pytest.mark.parametrize("name", sorted(PUBLIC_FUNCTIONS))
def test_every_parameter_is_documented(name):
    params = set(inspect.signature(PUBLIC_FUNCTIONS[name]).parameters)
    missing = sorted(params - _documented(name))
    assert not missing, f"{name}: parameters not documented: {missing}"


@pytest.mark.parametrize("name", sorted(PUBLIC_FUNCTIONS))
def test_args_section_names_only_real_parameters(name):
    fn = PUBLIC_FUNCTIONS[name]
    params = set(inspect.signature(fn).parameters)
    stale = sorted(set(_args_entries(inspect.getdoc(fn) or "")) - params)
    assert not stale, f"{name}: Args documents parameters it does not take: {stale}"


@pytest.mark.parametrize("name", sorted(PUBLIC_FUNCTIONS))
def test_every_public_function_has_a_runnable_example(name):
    doc = inspect.getdoc(PUBLIC_FUNCTIONS[name]) or ""
    assert "Examples" in _sections(doc), f"{name}: no Examples section"
    assert ">>>" in doc, f"{name}: the Examples section has no doctest"


@pytest.mark.parametrize("name", sorted({e.public for e in NAMED_OPTIMIZERS}))
def test_named_optimizers_cite_their_references(name):
    sections = _sections(inspect.getdoc(PUBLIC_FUNCTIONS[name]) or "")
    assert any(line.strip() for line in sections.get("References", [])), name


# ---------------------------------------------------------------- the rule itself


def _fake(doc):
    def fake(a, b, *rest, c=1):
        pass

    fake.__doc__ = doc
    return fake


def test_the_args_parser_reads_groups_continuations_and_stars(monkeypatch):
    doc = """Summary line here.

    Args:
      a, b: two things,
        over two lines; c: not an entry.
      *rest: the rest.
      c: see :func:`adam`.

    Returns:
      x: not an argument.
    """
    entries = _args_entries(doc)
    assert sorted(entries) == ["a", "b", "c", "rest"]
    assert "over two lines" in entries["a"]
    monkeypatch.setitem(PUBLIC_FUNCTIONS, "fake", _fake(doc))
    # ``c`` is only a reference, and adam documents no ``c``: not documented.
    assert _documented("fake") == {"a", "b", "rest"}


def test_delegation_counts_only_parameters_the_target_documents(monkeypatch):
    monkeypatch.setitem(
        PUBLIC_FUNCTIONS, "fake", _fake("Summary line here.\n\nArguments as :func:`scale_by_rms`.")
    )
    assert _documented("fake") == set()  # scale_by_rms takes no a, b, rest or c
