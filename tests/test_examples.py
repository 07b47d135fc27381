"""What the README promises: the main job (``gradtx compare``), the quick start, the
table, its size, and links that lead to the documentation site's pages."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.registry import NAMED_OPTIMIZERS
from tests.repo_python import run_python

ROOT = Path(__file__).resolve().parents[1]


def readme_command(heading: str) -> str:
    """The command in the fenced block under the README's set-up item ``heading``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(heading) + r".*?```\n(.*?)\n\s*```", readme, re.DOTALL)
    assert found, f"README.md has no command under {heading!r}"
    return found[1].strip()


def test_readme_main_job_races_the_default_optimizers_on_digits(tmp_path):
    """The main command (after its pip install) runs and writes what the README says."""
    install, command = readme_command("- Main job").split(" && ")
    assert install == 'pip install -e ".[examples]"'
    program, *args = shlex.split(command)
    assert program == "gradtx" and args[0] == "compare"
    out = tmp_path / "results"
    args = [a if a != "results" else str(out) for a in args]
    done = run_python("-m", "gradtx_cli", *args, "--plain", "--no-progress")
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "compare-digits.json").read_text())
    assert (out / "compare-digits.png").stat().st_size > 10_000
    rows = {r["optimizer"]: r for r in results["results"]}
    assert len(rows) == 10
    for name, row in rows.items():
        # 500 full-batch steps of any of them fit the 1078 training images far
        # below the untrained loss (~2.3) and classify the held-out ones well.
        assert row["final_loss"] < 0.1, name
        assert row["test_accuracy"] >= 0.95, name


def test_readme_test_command_is_what_ci_runs():
    assert readme_command("- Tests") == 'pip install -e ".[test]" && python -m pytest'
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '-m pip install -e ".[test]"' in ci and "-m pytest" in ci


def test_readme_quick_start_runs_and_fits(capsys):
    """The README's first code block is a working training loop."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no python code block"
    namespace = {}
    exec(compile(block[1], "README.md", "exec"), namespace)
    # The data are exactly linear, so 500 Adam steps fit them to float32 noise.
    final = float(namespace["loss"](namespace["params"], namespace["x"], namespace["y"]))
    assert final < 1e-8
    # It prints that loss (a float32, so compare at float32 precision).
    assert float(capsys.readouterr().out) == pytest.approx(final, rel=1e-6)


def test_readme_lists_every_named_optimizer():
    """The methods tables name every named optimizer, in backticks.

    The README stays short: every other public name (each block, wrapper and
    schedule) is on the documentation site, which tests/test_docs_site.py checks.
    """
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(\w+)`", readme))
    named = {entry.public for entry in NAMED_OPTIMIZERS}
    assert {"adam", "lion", "adafactor", "lbfgs"} <= named
    assert named - listed == set()
    assert {"chain", "apply_updates", "tree", "projections"} <= listed


README_LIMIT_BYTES = 15_000
# A relative Markdown link target: ``](path)`` or ``](path#anchor)``, not a URL.
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_stays_within_its_size_limit():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, (
        f"README.md is {size} bytes, over its limit of {README_LIMIT_BYTES}: shorten it "
        "and leave the detail to the documentation site (docs/)"
    )


def test_readme_links_resolve_and_every_guide_is_linked():
    """Each relative link names a file of the checkout (the docs pages' sources,
    which GitHub renders), an ``#anchor`` names a heading of the README, and every
    guide of docs/guides/ is linked, so the README's summaries lead to their detail."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = _LINK.findall(readme)
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in headings:
                broken.append(target)
        elif not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to what is not there: {broken}"
    docs_links = {t.partition("#")[0] for t in targets if t.startswith("docs/")}
    guides = {f"docs/guides/{page.name}" for page in (ROOT / "docs" / "guides").glob("*.md")}
    assert guides, "no guides under docs/guides"
    assert guides - docs_links == set(), f"guides the README does not link: {guides - docs_links}"
    assert "docs/api/index.rst" in docs_links
