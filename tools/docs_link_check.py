"""Checks every link and reference of the built documentation site, offline.

Usage (after ``python -m sphinx -W -b html docs docs/_build/html``)::

    python tools/docs_link_check.py [docs/_build/html]

Parses every ``.html`` file of the site with :mod:`html.parser` (no network, no
``sphinx -b linkcheck``) and looks at every URL an element carries (``href``,
``src``, ``srcset``, ``action``, ``poster``, ``data``, SVG's ``xlink:href``):

* an internal URL (relative, site-absolute, or on ``http://127.0.0.1`` /
  ``http://localhost``) must name a file of the site (a folder means its
  ``index.html``), and its ``#fragment``, if any, an ``id`` (or ``<a name>``) of
  the page it points to;
* an external ``http(s)`` URL is allowed only on a citation host,
  :data:`CITATION_HOSTS` (the papers: DOIs, arXiv, the proceedings' sites);
  anything else, and any other scheme but ``data:``, is a problem.

Also checks the ``url(...)`` references of the site's own CSS files.
Exits 1 with the list of problems, 0 when there are none.
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SITE = ROOT / "docs" / "_build" / "html"

# External links the site may carry: where the papers it cites live (a host or
# any subdomain of it). Nothing is fetched; a link elsewhere is reported.
CITATION_HOSTS = (
    "doi.org",  # DOIs (dx.doi.org too)
    "arxiv.org",
    "openreview.net",
    "proceedings.mlr.press",  # PMLR (ICML, AISTATS, COLT)
    "jmlr.org",
    "papers.nips.cc",
    "proceedings.neurips.cc",
    "aclanthology.org",
    "ieeexplore.ieee.org",
    "dl.acm.org",
    "link.springer.com",
    "www.cs.toronto.edu",  # Hinton's RMSProp lecture slides
)
LOCAL_HOSTS = ("127.0.0.1", "localhost")
URL_ATTRIBUTES = ("href", "src", "action", "poster", "data", "xlink:href")
_CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)'"\s]+))\s*\)""")


class _Page(HTMLParser):
    """The ids of one page and the URLs its elements carry, with their lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[int, str, str]] = []  # (line, tag.attribute, url)

    def handle_starttag(self, tag, attrs):
        line = self.getpos()[0]
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in URL_ATTRIBUTES:
                self.urls.append((line, f"{tag}.{name}", value.strip()))
            elif name == "srcset":
                for candidate in value.split(","):
                    if candidate.strip():
                        self.urls.append((line, f"{tag}.srcset", candidate.split()[0]))

    handle_startendtag = handle_starttag


def citation_host(host: str) -> bool:
    host = host.lower()
    return any(host == allowed or host.endswith("." + allowed) for allowed in CITATION_HOSTS)


def check_site(site: Path, counts: dict[str, int] | None = None) -> list[str]:
    """The problems of the built site under ``site`` (an empty list when none);
    ``counts``, if given, receives the numbers of pages and URLs checked."""
    site = site.resolve()
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no .html files (build the site first)"]
    parsed: dict[Path, _Page] = {}
    for page in pages:
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8"))
        parser.close()
        parsed[page] = parser

    def ids_of(target: Path) -> set[str]:
        if target not in parsed:
            parser = _Page()
            parser.feed(target.read_text(encoding="utf-8", errors="replace"))
            parsed[target] = parser
        return parsed[target].ids

    problems: list[str] = []

    def check(source: Path, line: int, where: str, url: str) -> None:
        here = f"{source.relative_to(site)}:{line} {where}={url!r}"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "data":
            return
        if scheme in ("http", "https") and (parts.hostname or "") not in LOCAL_HOSTS:
            if not citation_host(parts.hostname or ""):
                problems.append(f"{here}: external link to {parts.hostname!r}, not a citation host")
            return
        if scheme not in ("", "http", "https") or (not scheme and parts.netloc):
            problems.append(f"{here}: a {scheme or 'protocol-relative'} URL leaves the site")
            return
        path = unquote(parts.path)
        if not path:
            target = source
        elif path.startswith("/"):
            target = site / path.lstrip("/")
        else:
            target = source.parent / path
        target = Path(str(target.resolve()))
        if site != target and site not in target.parents:
            problems.append(f"{here}: points outside the site")
            return
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"{here}: no such file {target.relative_to(site)}")
            return
        fragment = unquote(parts.fragment)
        if fragment and target.suffix == ".html" and fragment not in ids_of(target):
            problems.append(f"{here}: no id {fragment!r} in {target.relative_to(site)}")

    checked = 0
    for page in pages:
        for line, where, url in parsed[page].urls:
            check(page, line, where, url)
            checked += 1
    for sheet in sorted(site.rglob("*.css")):
        text = sheet.read_text(encoding="utf-8", errors="replace")
        for match in _CSS_URL.finditer(text):
            url = next(group for group in match.groups() if group is not None).strip()
            if url.startswith("#"):  # an SVG filter or marker reference
                continue
            check(sheet, text.count("\n", 0, match.start()) + 1, "css.url", url)
            checked += 1
    if counts is not None:
        counts.update(pages=len(pages), urls=checked)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path, default=DEFAULT_SITE)
    args = parser.parse_args(argv)
    counts: dict[str, int] = {}
    problems = check_site(args.site, counts)
    if problems:
        print(f"docs link check: {len(problems)} problem(s) in {args.site}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(
        f"docs link check: OK ({counts['pages']} pages, {counts['urls']} URLs: every internal "
        "link and anchor resolves; external links only to citation hosts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
