"""The second-order pictures of the documentation site, computed at build time.

The second-order methods of :mod:`gradtx.second_order` (and gradient descent with
a backtracking line search, for scale) run in float64 from the starts of
:mod:`gradtx_paths` on its two problems, Rosenbrock's function and the rotated
quadratic of condition number 50, for at most :data:`STEPS` updates each. A run
stops, as :func:`gradtx.minimize` does, once ``|grad f|_2 <= TOL``, the loss is
not finite, or an update leaves the params where they were. Every method and
both problems run in one jitted program (the problems are one loss with a
traced switch, mapped over with ``jax.vmap``), so the whole costs one compile.
matplotlib's Agg backend draws

* ``second-order-rosenbrock.png`` and ``second-order-quadratic.png``: every
  method's iterates on the contours, one panel each;
* ``second-order-convergence.png``: the loss against the iteration, every
  method, one panel per problem.

docs/guides/second_order_gallery.md places them (``.. second-order-gallery::``,
``.. second-order-convergence::``, ``.. second-order-calls::``).
"""

from __future__ import annotations

from pathlib import Path

import gradtx_paths

STEPS = 100
TOL = 1e-8

# label -> the call drawn. Gradient descent with Armijo backtracking is the
# first-order yardstick; the rest are every second-order named optimizer, with its
# default line search or none, and the variants worth seeing.
METHODS: dict[str, str] = {
    "gradient descent + backtracking": (
        "gradtx.chain(gradtx.sgd(1.0), "
        "gradtx.scale_by_backtracking_linesearch(50, store_grad=True))"
    ),
    "newton": "gradtx.newton()",
    "newton, damped": "gradtx.newton(damping=1.0)",
    "newton + backtracking": (
        "gradtx.newton(linesearch=gradtx.scale_by_backtracking_linesearch(50))"
    ),
    "bfgs": "gradtx.bfgs()",
    "lbfgs": "gradtx.lbfgs()",
    "nonlinear_cg": "gradtx.nonlinear_cg()",
    "nonlinear_cg, Fletcher-Reeves": "gradtx.nonlinear_cg(method='fletcher_reeves')",
    "hessian_free": "gradtx.hessian_free()",
    "hessian_free, exact CG": "gradtx.hessian_free(cg_tol=1e-6)",
}

# The loss at the minimum is 0 on both problems; the convergence plot floors the
# loss here so that an exact 0 stays on its log scale.
FLOOR = 1e-30


def build(label: str):
    """The transformation drawn as ``label``."""
    import gradtx

    return eval(METHODS[label], {"gradtx": gradtx})  # noqa: S307 (our own table)


def _loss(p, is_rosenbrock):
    """Rosenbrock's function where ``is_rosenbrock`` (traced) is 1, else the quadratic."""
    rosenbrock = gradtx_paths.PROBLEMS["rosenbrock"][0]
    quadratic = gradtx_paths.PROBLEMS["quadratic"][0]
    return is_rosenbrock * rosenbrock(p) + (1 - is_rosenbrock) * quadratic(p)


def compute(steps: int = STEPS) -> dict[str, dict[str, tuple]]:
    """``{problem: {label: (iterates (n + 1, 2), losses (n + 1,), converged)}}``, float64.

    ``n`` is the number of updates the run made before it stopped (at most ``steps``).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gradtx

    problems = list(gradtx_paths.PROBLEMS)
    with jax.enable_x64(True):
        txs = {label: build(label) for label in METHODS}
        starts = jnp.array([gradtx_paths.PROBLEMS[p][1] for p in problems], jnp.float64)
        switches = jnp.array([float(p == "rosenbrock") for p in problems], jnp.float64)

        def run_one(tx, start, switch):
            fun = lambda p: _loss(p, switch)  # noqa: E731
            value_and_grad = jax.value_and_grad(fun)

            def step(carry, _):
                params, state, value, grad, stopped = carry
                stop = stopped | (gradtx.tree.global_norm(grad) <= TOL) | ~jnp.isfinite(value)
                updates, new_state = tx.update(
                    grad, state, params, value=value, grad=grad, value_fn=fun
                )
                new_params = params + updates
                stop = stop | ~(gradtx.tree.global_norm(updates) > 0)
                keep = lambda old, new: jnp.where(stop, old, new)  # noqa: E731
                params = keep(params, new_params)
                state = jax.tree.map(keep, state, new_state)
                new_value, new_grad = value_and_grad(params)
                value, grad = keep(value, new_value), keep(grad, new_grad)
                return (params, state, value, grad, stop), (params, value, stop)

            value, grad = value_and_grad(start)
            first = (start, tx.init(start), value, grad, jnp.asarray(False))
            (*_, stopped), (params, values, stops) = jax.lax.scan(step, first, None, length=steps)
            converged = gradtx.tree.global_norm(jax.grad(fun)(params[-1])) <= TOL
            return (
                jnp.concatenate([start[None], params]),
                jnp.concatenate([value[None], values]),
                stops,
                converged,
            )

        @jax.jit
        def run_all(starts, switches):
            return {
                label: jax.vmap(lambda s, w, tx=tx: run_one(tx, s, w))(starts, switches)
                for label, tx in txs.items()
            }

        runs = jax.device_get(run_all(starts, switches))

    out: dict[str, dict[str, tuple]] = {problem: {} for problem in problems}
    for label, (params, values, stops, converged) in runs.items():
        for i, problem in enumerate(problems):
            stopped = np.asarray(stops[i])
            # stops[k] says update k + 1 was not made: the run made argmax(stops) updates.
            n = int(np.argmax(stopped)) if stopped.any() else steps
            out[problem][label] = (
                np.asarray(params[i][: n + 1]),
                np.asarray(values[i][: n + 1]),
                bool(converged[i]),
            )
    return out


def _note(losses, converged: bool) -> str:
    steps = len(losses) - 1
    after = f"after {steps} step" + ("" if steps == 1 else "s")
    if converged:
        return f"|grad| ≤ {TOL:g} {after}"
    return f"loss {float(losses[-1]):.2g} {after}"


def draw(outdir: Path) -> list[str]:
    """Writes the three pictures; returns the labels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    outdir.mkdir(parents=True, exist_ok=True)
    runs = compute()
    labels = list(METHODS)
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    # A method's variants dashed, so that a curve that another one covers stays visible.
    families = [label.split()[0].rstrip(",") for label in labels]
    styles = {
        label: "--" if families.index(family) < i else "-"
        for i, (label, family) in enumerate(zip(labels, families, strict=True))
    }
    cols = 5
    rows = -(-len(labels) // cols)
    for problem, by_label in runs.items():
        x_range, y_range = gradtx_paths.PROBLEMS[problem][3:5]
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), dpi=80)
        for ax in axes.flat[len(labels) :]:
            ax.axis("off")
        for ax, label in zip(axes.flat, labels, strict=False):
            params, losses, converged = by_label[label]
            gradtx_paths._contours(ax, problem)
            inside = params[
                (params[:, 0] >= x_range[0] - 1)
                & (params[:, 0] <= x_range[1] + 1)
                & (params[:, 1] >= y_range[0] - 1)
                & (params[:, 1] <= y_range[1] + 1)
            ]
            ax.plot(inside[:, 0], inside[:, 1], "-", color="#1f77b4", linewidth=1.0)
            ax.plot(inside[:, 0], inside[:, 1], ".", color="#1f77b4", markersize=3.5)
            ax.text(
                0.02,
                0.02,
                _note(losses, converged),
                transform=ax.transAxes,
                fontsize=7,
                color="#333333",
            )
            ax.set_title(label, fontsize=8, family="monospace")
            ax.set_xticks([])
            ax.set_yticks([])
        title = gradtx_paths.PROBLEMS[problem][5]
        fig.suptitle(f"{title}: float64, at most {STEPS} steps from the green dot", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.savefig(outdir / f"second-order-{problem}.png")
        plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(11.0, 4.8), dpi=80, sharey=True)
    for ax, (problem, by_label) in zip(axes, runs.items(), strict=True):
        for label in labels:
            _, losses, converged = by_label[label]
            shown = np.maximum(losses, FLOOR)
            ax.semilogy(
                range(len(shown)),
                shown,
                styles[label],
                color=colors[label],
                linewidth=1.4,
                label=label,
            )
            if converged:
                ax.semilogy(len(shown) - 1, shown[-1], "o", color=colors[label], markersize=4)
        ax.set_title(gradtx_paths.PROBLEMS[problem][5], fontsize=9)
        ax.set_xlabel("step")
        ax.set_xlim(0, STEPS)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"loss (the minimum is 0; floored at {FLOOR:g})")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(outdir / "second-order-convergence.png")
    plt.close(fig)
    return labels
