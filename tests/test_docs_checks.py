"""The built documentation site's checks, tested without a build or a browser.

``tools/docs_link_check.py`` runs here on a small made-up site (a good one and a
broken one). ``tools/docs_browser_check.py`` needs Chromium, so only ``.ci/run``
runs it; here: it and the link check are wired into ``.ci/run``, README.md and
the ``docs`` extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"


@pytest.fixture(scope="module")
def link_check():
    spec = importlib.util.spec_from_file_location("docs_link_check", TOOLS / "docs_link_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body if not name.endswith(".html") else f"<html><body>{body}</body></html>")
    return root


def test_a_site_whose_links_resolve_passes(link_check, tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<h1 id="top">x</h1><a href="api/">api</a><a href="#top">t</a>'
            '<a href="api/adam.html#gradtx.adam">adam</a><img src="_static/a.png">'
            '<a href="https://doi.org/10.5555/x">doi</a><a href="https://www.arxiv.org/abs/1">a</a>'
            '<a href="search.html?q=adam">s</a><img src="data:image/png;base64,AAAA">'
            '<svg><use href="#top"></use></svg>',
            "api/index.html": '<a href="../index.html#top">up</a><a href="/api/adam.html">a</a>',
            "api/adam.html": '<dt id="gradtx.adam">adam</dt><a name="old">x</a>'
            '<a href="adam.html#old">o</a><link href="../_static/s.css" rel="stylesheet">',
            "search.html": "",
            "_static/a.png": "png",
            "_static/s.css": 'a { background: url("a.png"); } b { mask: url(#m); }',
        },
    )
    counts = {}
    assert link_check.check_site(site, counts) == []
    assert counts == {"pages": 4, "urls": 14}


def test_each_kind_of_broken_link_is_reported(link_check, tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<a href="missing.html">m</a><a href="#nowhere">n</a>'
            '<a href="other.html#nowhere">o</a><img src="https://example.com/x.png">'
            '<script src="//cdn.example.com/x.js"></script><a href="mailto:a@b.c">mail</a>'
            '<a href="../outside.html">out</a>',
            "other.html": '<p id="here">x</p>',
            "_static/s.css": "a { background: url(gone.png); }",
        },
    )
    problems = "\n".join(link_check.check_site(site))
    for expected in (
        "'missing.html': no such file missing.html",
        "'#nowhere': no id 'nowhere' in index.html",
        "'other.html#nowhere': no id 'nowhere' in other.html",
        "external link to 'example.com', not a citation host",
        "a protocol-relative URL leaves the site",
        "a mailto URL leaves the site",
        "'../outside.html': points outside the site",
        "css.url='gone.png': no such file _static/gone.png",
    ):
        assert expected in problems
    assert len(problems.splitlines()) == 8
    assert link_check.main([str(site)]) == 1


def test_citation_hosts_and_their_subdomains_only(link_check):
    assert link_check.citation_host("arxiv.org")
    assert link_check.citation_host("export.arxiv.org")
    assert link_check.citation_host("dx.doi.org")
    assert not link_check.citation_host("notarxiv.org")
    assert not link_check.citation_host("github.com")


def test_the_checks_are_wired_into_ci_readme_and_the_docs_extra():
    commands = ("python tools/docs_link_check.py", "python tools/docs_browser_check.py")
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in readme
        assert f'"$PYTHON" {command.removeprefix("python ")}' in ci
    assert "apt-get install -y -q chromium chromium-driver" in ci
    assert ci.index("sphinx -W") < ci.index("docs_browser_check.py")
    assert '"selenium>=' in (ROOT / "pyproject.toml").read_text()
