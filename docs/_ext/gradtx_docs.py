"""Sphinx extension: the parts of the guides computed from the library at build time.

* ``builder-inited`` draws every schedule of :mod:`gradtx.schedules` with
  matplotlib's Agg backend into ``<outdir>/_static/schedules/<name>.png``, before
  any page is read, so the pictures always show what the code computes (nothing
  generated is committed).
* ``.. schedule-curve:: <name>`` places one of those pictures.
* ``.. optax-names::`` writes the table of every public name of Optax (its
  ``__all__`` and the ``contrib``, ``tree``, ``projections`` and ``schedules``
  submodules) with its gradtx spelling, found by ``getattr`` on gradtx's
  namespaces, so the table never goes stale.
* ``.. optimizer-path:: <name>`` and ``.. optimizer-gallery::``: each first-order
  named optimizer's path on Rosenbrock and on a badly conditioned quadratic,
  computed and drawn on ``builder-inited`` (:mod:`gradtx_paths`).
* ``.. second-order-gallery:: <problem>``, ``.. second-order-convergence::`` and
  ``.. second-order-calls::``: the second-order methods' iterates on the same two
  problems, their losses against the step, and the calls drawn
  (:mod:`gradtx_second_order_paths`, drawn on ``builder-inited`` too).
* ``.. compare-curves::``: the learning curves of ``gradtx compare`` on digits,
  and every guide's Python code and every example script, run in subprocesses
  while the pages are read and written (:mod:`gradtx_jobs`); a failure fails the
  build on ``build-finished``.
"""

from __future__ import annotations

import importlib
import types
import warnings
from pathlib import Path

import gradtx_jobs
import gradtx_paths
import gradtx_second_order_paths
from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx import addnodes

STATIC_DIR = ("_static", "schedules")

# Each schedule as drawn: (the call, evaluated in gradtx.schedules' namespace; steps drawn).
# The guide shows the call under its picture.
SCHEDULES: dict[str, tuple[str, int]] = {
    "constant_schedule": ("constant_schedule(0.1)", 1000),
    "linear_schedule": (
        "linear_schedule(init_value=0.1, end_value=0.01, transition_steps=600, "
        "transition_begin=200)",
        1000,
    ),
    "linear_decay": ("linear_decay(init_value=0.1, transition_steps=800)", 1000),
    "polynomial_schedule": (
        "polynomial_schedule(init_value=0.1, end_value=0.0, power=2.0, transition_steps=800)",
        1000,
    ),
    "exponential_decay": (
        "exponential_decay(init_value=0.1, transition_steps=100, decay_rate=0.8)",
        1000,
    ),
    "inverse_time_decay": ("inverse_time_decay(init_value=0.1, transition_steps=100)", 1000),
    "cosine_decay_schedule": (
        "cosine_decay_schedule(init_value=0.1, decay_steps=1000, alpha=0.1)",
        1000,
    ),
    "cosine_restarts_schedule": (
        "cosine_restarts_schedule(init_value=0.1, decay_steps=200, t_mul=2)",
        1400,
    ),
    "sgdr_schedule": (
        "sgdr_schedule([dict(init_value=0.0, peak_value=0.1, warmup_steps=50, decay_steps=300), "
        "dict(init_value=0.0, peak_value=0.05, warmup_steps=50, decay_steps=700)])",
        1000,
    ),
    "piecewise_constant_schedule": (
        "piecewise_constant_schedule(init_value=0.1, boundaries_and_scales={300: 0.5, 600: 0.2})",
        1000,
    ),
    "piecewise_constant_values": (
        "piecewise_constant_values(init_value=0.1, boundaries_and_values={300: 0.05, 600: 0.01})",
        1000,
    ),
    "piecewise_interpolate_schedule": (
        "piecewise_interpolate_schedule('cosine', init_value=0.1, "
        "boundaries_and_scales={300: 0.5, 600: 0.2})",
        1000,
    ),
    "linear_onecycle_schedule": (
        "linear_onecycle_schedule(transition_steps=1000, peak_value=0.1)",
        1000,
    ),
    "cosine_onecycle_schedule": (
        "cosine_onecycle_schedule(transition_steps=1000, peak_value=0.1)",
        1000,
    ),
    "warmup_constant_schedule": (
        "warmup_constant_schedule(init_value=0.0, peak_value=0.1, warmup_steps=200)",
        1000,
    ),
    "warmup_cosine_decay_schedule": (
        "warmup_cosine_decay_schedule(init_value=0.0, peak_value=0.1, warmup_steps=100, "
        "decay_steps=1000, end_value=0.001)",
        1000,
    ),
    "warmup_exponential_decay_schedule": (
        "warmup_exponential_decay_schedule(init_value=0.0, peak_value=0.1, warmup_steps=100, "
        "transition_steps=100, decay_rate=0.7, transition_begin=100)",
        1000,
    ),
    "warmup_schedule": ("warmup_schedule(cosine_decay_schedule(0.1, 800), warmup_steps=200)", 1000),
    "join_schedules": (
        "join_schedules([constant_schedule(0.1), linear_schedule(0.05, 0.0, 500)], "
        "boundaries=[500])",
        1000,
    ),
}


def schedule_names() -> list[str]:
    """The schedule builders of ``gradtx.schedules``: not the protocol classes or the
    ``inject_*`` wrappers it also holds, as ``optax.schedules`` does."""
    from gradtx import schedules as s

    return [n for n in s.__all__ if n.islower() and not n.startswith("inject_")]


def build_schedule(name: str):
    """``(schedule, number of steps drawn)`` for a name of ``gradtx.schedules``."""
    from gradtx import schedules as s

    if name not in SCHEDULES:
        raise KeyError(
            f"gradtx.schedules.{name} has no picture: add its call to SCHEDULES in "
            "docs/_ext/gradtx_docs.py and a section to docs/guides/schedules.md"
        )
    call, steps = SCHEDULES[name]
    return eval(call, dict(vars(s))), steps  # noqa: S307 (our own table)


def draw_schedules(outdir: Path) -> list[str]:
    """Writes ``<name>.png`` for every name of :func:`schedule_names`."""
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name in schedule_names():
        schedule, steps = build_schedule(name)
        counts = jnp.arange(steps)
        values = [float(v) for v in schedule(counts)]
        fig, ax = plt.subplots(figsize=(5.0, 2.4), dpi=100)
        ax.plot(range(steps), values, color="#1f77b4", linewidth=1.6)
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        ax.set_title(name, fontsize=10, family="monospace")
        ax.set_ylim(bottom=min(0.0, min(values)))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(outdir / f"{name}.png")
        plt.close(fig)
        drawn.append(name)
    return drawn


def _on_builder_inited(app) -> None:
    if app.builder.format != "html":
        return
    # The subprocesses first, so they run while this process draws and reads.
    RUNNER.start(Path(app.outdir))
    draw_schedules(Path(app.outdir).joinpath(*STATIC_DIR))
    gradtx_paths.draw(Path(app.outdir).joinpath(*PATHS_DIR))
    gradtx_second_order_paths.draw(Path(app.outdir).joinpath(*PATHS_DIR))


def _on_build_finished(app, exception) -> None:
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    if not RUNNER.futures:
        return
    failures, timings = RUNNER.finish(cancel=exception is not None)
    logging.getLogger(__name__).info("gradtx docs jobs: " + "; ".join(timings))
    if failures and exception is None:
        raise ExtensionError(
            f"{len(failures)} of the build's programs failed:\n\n" + "\n\n".join(failures)
        )


class ScheduleCurve(Directive):
    """``.. schedule-curve:: name``: the picture drawn for ``gradtx.schedules.<name>``."""

    required_arguments = 1
    has_content = False

    def run(self):

        name = self.arguments[0]
        if name not in schedule_names():
            raise self.error(f"schedule-curve: {name!r} is not a schedule of gradtx.schedules")
        env = self.state.document.settings.env
        depth = env.docname.count("/")
        src = "../" * depth + "/".join(STATIC_DIR) + f"/{name}.png"
        html = (
            f'<img class="schedule-curve" src="{src}" '
            f'alt="The values of gradtx.schedules.{name} against the step." />'
        )
        call = "gradtx.schedules." + SCHEDULES[name][0]
        caption = nodes.paragraph()
        caption += nodes.Text("Drawn from ")
        caption += nodes.literal(text=call)
        caption += nodes.Text(f" over {SCHEDULES[name][1]} steps.")
        return [nodes.raw("", html, format="html"), caption]


# ---------------------------------------------------------------- optimizer paths

PATHS_DIR = ("_static", "paths")
RUNNER = gradtx_jobs.Runner()


def _static_src(directive, *parts: str) -> str:
    depth = directive.state.document.settings.env.docname.count("/")
    return "../" * depth + "/".join(parts)


class OptimizerPath(Directive):
    """``.. optimizer-path:: name``: ``gradtx.<name>``'s paths on the two 2-D problems."""

    required_arguments = 1
    has_content = False

    def run(self):
        name = self.arguments[0]
        if name not in gradtx_paths.OPTIMIZERS:
            raise self.error(
                f"optimizer-path: {name!r} is not in OPTIMIZERS of docs/_ext/gradtx_paths.py"
            )
        src = _static_src(self, *PATHS_DIR, f"{name}.png")
        html = (
            f'<img class="optimizer-path" src="{src}" alt="The path of gradtx.{name} on '
            "Rosenbrock's function and on a badly conditioned quadratic.\" />"
        )
        caption = nodes.paragraph()
        caption += nodes.Text(
            f"{gradtx_paths.STEPS} float32 steps of gradtx.{name} from the green dot on "
            "Rosenbrock's function (left) and a quadratic of condition number 50 (right); "
            "above each panel the call drawn, its rate picked from a grid for that problem; "
            "the star is the minimum. All methods side by side: "
        )
        ref = addnodes.pending_xref(
            "", refdomain="std", reftype="doc", reftarget="/guides/gallery", refexplicit=True
        )
        ref += nodes.inline(text="the optimizer gallery")
        caption += ref
        caption += nodes.Text(".")
        return [nodes.raw("", html, format="html"), caption]


class OptimizerGallery(Directive):
    """``.. optimizer-gallery:: problem``: every method's path on one problem, in a grid."""

    required_arguments = 1
    has_content = False

    def run(self):
        problem = self.arguments[0]
        if problem not in gradtx_paths.PROBLEMS:
            raise self.error(f"optimizer-gallery: no problem {problem!r}")
        src = _static_src(self, *PATHS_DIR, f"gallery-{problem}.png")
        alt = f"The paths of every first-order named optimizer of gradtx on the {problem}."
        html = f'<img class="optimizer-gallery" src="{src}" alt="{alt}" />'
        return [nodes.raw("", html, format="html")]


class OptimizerTable(Directive):
    """``.. optimizer-rates::``: the call drawn for each method, per problem."""

    has_content = False

    def run(self):
        rows = [
            [name, *(gradtx_paths.call_text(name, p) for p in gradtx_paths.PROBLEMS)]
            for name in gradtx_paths.OPTIMIZERS
        ]
        return [_calls_table(["method", "on Rosenbrock", "on the quadratic"], rows)]


class SecondOrderGallery(Directive):
    """``.. second-order-gallery:: problem``: every second-order method's iterates on it."""

    required_arguments = 1
    has_content = False

    def run(self):
        problem = self.arguments[0]
        if problem not in gradtx_paths.PROBLEMS:
            raise self.error(f"second-order-gallery: no problem {problem!r}")
        src = _static_src(self, *PATHS_DIR, f"second-order-{problem}.png")
        alt = f"The iterates of every second-order method of gradtx on the {problem}."
        return [
            nodes.raw(
                "", f'<img class="optimizer-gallery" src="{src}" alt="{alt}" />', format="html"
            )
        ]


class SecondOrderConvergence(Directive):
    """``.. second-order-convergence::``: every second-order method's loss per step."""

    has_content = False

    def run(self):
        src = _static_src(self, *PATHS_DIR, "second-order-convergence.png")
        alt = (
            "The loss against the step of every second-order method of gradtx, on "
            "Rosenbrock's function and on the badly conditioned quadratic."
        )
        return [
            nodes.raw(
                "", f'<img class="optimizer-gallery" src="{src}" alt="{alt}" />', format="html"
            )
        ]


class SecondOrderCalls(Directive):
    """``.. second-order-calls::``: the call drawn under each label of the pictures."""

    has_content = False

    def run(self):
        rows = [[label, call] for label, call in gradtx_second_order_paths.METHODS.items()]
        return [_calls_table(["label", "call (on both problems)"], rows)]


def _calls_table(header: list[str], rows: list[list[str]]) -> nodes.table:
    """A table of the calls drawn: ``header`` in plain text, each row's cells as code."""
    table = nodes.table(classes=["optimizer-rates"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body
    head += _text_row(header, literal=False)
    for cells in rows:
        body += _text_row(cells, literal=True)
    return table


def _text_row(cells, *, literal: bool) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        para = nodes.paragraph()
        para += nodes.literal(text=text) if literal else nodes.Text(text)
        entry += para
        row += entry
    return row


class CompareCurves(Directive):
    """``.. compare-curves::``: the learning curves written by ``gradtx compare`` this build."""

    has_content = False

    def run(self):
        src = _static_src(self, *gradtx_jobs.COMPARE_DIR, "compare-digits.png")
        html = (
            f'<img class="compare-curves" src="{src}" alt="Training loss, gradient norm and '
            'update norm against step for every optimizer of gradtx compare on digits." />'
        )
        caption = nodes.paragraph()
        caption += nodes.Text("Drawn by ")
        caption += nodes.literal(text="gradtx " + " ".join(gradtx_jobs.COMPARE_ARGS[:-2]))
        caption += nodes.Text(" when this site was built.")
        return [nodes.raw("", html, format="html"), caption]


# ---------------------------------------------------------------- Optax's names

SUBMODULES = ("contrib", "tree", "tree_utils", "projections", "schedules", "transforms")
# Where gradtx may hold a name, searched in this order after the matching submodule.
GRADTX_NAMESPACES = (
    "",
    "schedules",
    "contrib",
    "tree",
    "tree_utils",
    "projections",
    "transforms",
    "second_order",
    "training",
    "checkpoint",
    "sharding",
)


def _public(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    return sorted(n for n in names if not isinstance(getattr(module, n), types.ModuleType))


def _gradtx_spelling(name: str, submodule: str) -> str | None:
    import gradtx

    order = (submodule,) + tuple(ns for ns in GRADTX_NAMESPACES if ns != submodule)
    for ns in order:
        module = importlib.import_module(f"gradtx.{ns}") if ns else gradtx
        if hasattr(module, name):
            return f"gradtx.{ns}.{name}" if ns else f"gradtx.{name}"
    return None


def optax_rows() -> list[tuple[str, str]]:
    """``(optax name, gradtx spelling or a note)`` for every public Optax name."""
    import optax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        losses = set(_public(importlib.import_module("optax.losses")))
        rows = []
        for name in sorted(optax.__all__):
            obj = getattr(optax, name)
            if isinstance(obj, types.ModuleType):
                spelled = f"gradtx.{name}" if hasattr(__import__("gradtx"), name) else None
                rows.append((f"optax.{name}", spelled or "not in gradtx (a submodule)"))
            elif name in losses:
                rows.append((f"optax.{name}", "a loss: stays in Optax (optax.losses)"))
            else:
                rows.append((f"optax.{name}", _gradtx_spelling(name, "") or "not in gradtx"))
        for sub in SUBMODULES:
            module = importlib.import_module(f"optax.{sub}")
            for name in _public(module):
                rows.append((f"optax.{sub}.{name}", _gradtx_spelling(name, sub) or "not in gradtx"))
    return rows


def gradtx_only() -> list[str]:
    """The names of ``gradtx.__all__`` that Optax has nowhere (top level or the submodules)."""
    import optax

    import gradtx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spaces = [optax] + [importlib.import_module(f"optax.{sub}") for sub in SUBMODULES]
        return sorted(n for n in gradtx.__all__ if not any(hasattr(m, n) for m in spaces))


class OptaxNames(Directive):
    """``.. optax-names::``: the table of Optax's public names and their gradtx spellings."""

    has_content = False
    option_spec = {"summary": directives.flag, "gradtx-only": directives.flag}

    def run(self):
        import optax

        if "gradtx-only" in self.options:
            para = nodes.paragraph()
            for i, name in enumerate(gradtx_only()):
                if i:
                    para += nodes.Text(", ")
                para += nodes.literal(text=name)
            return [para]

        rows = optax_rows()
        if "summary" in self.options:
            missing = sum(1 for _, g in rows if g.startswith("not in"))
            losses = sum(1 for _, g in rows if g.startswith("a loss"))
            text = (
                f"Optax {optax.__version__}: {len(rows)} public names; "
                f"{len(rows) - missing - losses} have a gradtx spelling, "
                f"{losses} are losses, {missing} are not in gradtx."
            )
            return [nodes.paragraph(text=text)]
        table = nodes.table(classes=["optax-names"])
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=1)
        group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        group += head
        head += self._row("Optax " + optax.__version__, "gradtx", literal=False)
        body = nodes.tbody()
        group += body
        for optax_name, gradtx_name in rows:
            body += self._row(optax_name, gradtx_name, literal=gradtx_name.startswith("gradtx"))
        return [table]

    @staticmethod
    def _row(left: str, right: str, *, literal: bool = True) -> nodes.row:
        row = nodes.row()
        for i, text in enumerate((left, right)):
            entry = nodes.entry()
            para = nodes.paragraph()
            code = literal if i == 1 else left.startswith("optax")
            para += nodes.literal(text=text) if code else nodes.Text(text)
            entry += para
            row += entry
        return row


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    app.connect("build-finished", _on_build_finished)
    app.add_directive("schedule-curve", ScheduleCurve)
    app.add_directive("optimizer-path", OptimizerPath)
    app.add_directive("optimizer-gallery", OptimizerGallery)
    app.add_directive("optimizer-rates", OptimizerTable)
    app.add_directive("second-order-gallery", SecondOrderGallery)
    app.add_directive("second-order-convergence", SecondOrderConvergence)
    app.add_directive("second-order-calls", SecondOrderCalls)
    app.add_directive("compare-curves", CompareCurves)
    app.add_directive("optax-names", OptaxNames)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
