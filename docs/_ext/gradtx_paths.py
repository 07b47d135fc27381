"""The optimizer-path pictures of the documentation site, computed at build time.

Every first-order named optimizer of gradtx runs from the same start on two 2-D
problems, Rosenbrock's banana valley and a rotated quadratic of condition number
50, for :data:`STEPS` float32 steps. All methods of one problem run in one jitted
program (one compile per problem), and matplotlib's Agg backend draws

* ``<name>.png``: one method's two paths (placed on its API page by
  ``.. optimizer-path:: <name>``);
* ``gallery-rosenbrock.png`` and ``gallery-quadratic.png``: every method in one
  grid (docs/guides/gallery.md).

:data:`OPTIMIZERS` holds each method's call and its learning rates, one per
problem, picked from a log grid (tests/test_docs_site.py checks it lists
every first-order named optimizer of tests/registry.py). Nothing here imports
tests/.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

STEPS = 400

# name -> (call with ``LR`` for the learning rate, evaluated in gradtx's namespace;
#          LR on Rosenbrock; LR on the quadratic). Each rate is the one of the grid
#          1e-4, 3e-4, 1e-3, ..., 10, 30 with the lowest mean loss over the STEPS steps. A call
#          without ``LR`` takes no rate (the method sets its own step size).
OPTIMIZERS: dict[str, tuple[str, float | None, float | None]] = {
    "sgd": ("sgd(LR)", 0.001, 0.03),
    "momentum": ("momentum(LR)", 0.001, 0.01),
    "nesterov_momentum": ("nesterov_momentum(LR)", 0.001, 0.01),
    "noisy_sgd": ("noisy_sgd(LR, key=0)", 0.001, 0.03),
    "adagrad": ("adagrad(LR)", 0.1, 1.0),
    "rmsprop": ("rmsprop(LR)", 0.01, 0.1),
    "adadelta": ("adadelta(LR)", 10.0, 10.0),
    "adam": ("adam(LR)", 0.1, 1.0),
    "adamw": ("adamw(LR, weight_decay=1e-4)", 0.1, 1.0),
    "amsgrad": ("amsgrad(LR)", 1.0, 1.0),
    "adamax": ("adamax(LR)", 0.1, 1.0),
    "adamaxw": ("adamaxw(LR, weight_decay=1e-4)", 0.1, 1.0),
    "nadam": ("nadam(LR)", 0.1, 0.3),
    "nadamw": ("nadamw(LR, weight_decay=1e-4)", 0.1, 0.3),
    "radam": ("radam(LR)", 0.0001, 0.03),
    "adabound": ("adabound(LR)", 0.1, 1.0),
    "amsbound": ("amsbound(LR)", 0.1, 1.0),
    "adabelief": ("adabelief(LR)", 0.1, 0.3),
    "yogi": ("yogi(LR)", 0.1, 1.0),
    "lion": ("lion(LR)", 0.01, 0.1),
    # min_size=0 and blocks of 2, so that the two coordinates are quantized.
    "adamw_8bit": ("adamw_8bit(LR, weight_decay=1e-4, block_size=2, min_size=0)", 0.1, 1.0),
    "adamw_4bit": ("adamw_4bit(LR, weight_decay=1e-4, block_size=2, min_size=0)", 0.1, 1.0),
    "lion_8bit": ("lion_8bit(LR, block_size=2, min_size=0)", 0.01, 0.1),
    "sign_sgd": ("sign_sgd(LR)", 0.01, 0.03),
    "signum": ("signum(LR)", 0.03, 0.03),
    "optimistic_gradient_descent": ("optimistic_gradient_descent(LR)", 0.001, 0.01),
    "optimistic_adam_v2": ("optimistic_adam_v2(LR)", 0.1, 0.3),
    "optimistic_adam": ("optimistic_adam(LR)", 0.1, 0.3),
    "ranger": ("ranger(LR)", 0.0003, 0.01),
    "dpsgd": ("dpsgd(LR, l2_norm_clip=10.0, noise_multiplier=0.01, seed=0)", 0.003, 0.03),
    "rprop": ("rprop(LR)", 0.1, 0.3),
    "lamb": ("lamb(LR)", 0.1, 0.3),
    "lars": ("lars(LR)", 10.0, 30.0),
    "fromage": ("fromage(LR)", 0.1, 0.3),
    "novograd": ("novograd(LR)", 0.03, 0.1),
    "adan": ("adan(LR)", 0.1, 1.0),
    "sm3": ("sm3(LR)", 3.0, 3.0),
    "adafactor": ("adafactor(LR)", 0.01, 0.3),
    "madgrad": ("madgrad(LR)", 0.1, 0.3),
    "acprop": ("acprop(LR)", 0.0003, 0.03),
    "schedule_free_sgd": ("schedule_free_sgd(LR)", 0.01, 0.03),
    "schedule_free_adamw": ("schedule_free_adamw(LR)", 0.1, 1.0),
    "ademamix": ("ademamix(LR)", 0.1, 1.0),
    "simplified_ademamix": ("simplified_ademamix(LR)", 0.01, 0.003),
    "muon": ("muon(LR)", 0.1, 0.3),
    "sophia": ("sophia(LR)", 0.03, 0.1),
    "galore": ("galore(LR)", 0.1, 1.0),
    "prodigy": ("prodigy()", None, None),
    "dadapt_adamw": ("dadapt_adamw()", None, None),
    "dog": ("dog()", None, None),
    "dowg": ("dowg()", None, None),
    "cocob": ("cocob()", None, None),
    "momo": ("momo(LR)", 0.03, 0.1),
    "momo_adam": ("momo_adam(LR)", 1.0, 1.0),
    "soap": ("soap(LR)", 0.1, 1.0),
    "shampoo": ("shampoo(LR)", 0.3, 0.3),
    "adam_mini": ("adam_mini(LR)", 0.1, 1.0),
}

# What some updates need besides the gradient: the loss value, or the loss function.
NEEDS_VALUE = {"momo", "momo_adam"}
NEEDS_OBJ_FN = {"sophia"}
PER_EXAMPLE = {"dpsgd"}  # takes per-example gradients: a batch of one here


def _rosenbrock(p):
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


_ANGLE = math.pi / 6
_EIGEN = (1.0, 50.0)


def _quadratic(p):
    c, s = math.cos(_ANGLE), math.sin(_ANGLE)
    u = c * p[0] + s * p[1]
    v = -s * p[0] + c * p[1]
    return 0.5 * (_EIGEN[0] * u**2 + _EIGEN[1] * v**2)


# name -> (loss, start, minimum, x range, y range, title)
PROBLEMS = {
    "rosenbrock": (
        _rosenbrock,
        (-1.5, 2.0),
        (1.0, 1.0),
        (-2.0, 2.0),
        (-1.0, 3.0),
        "Rosenbrock: (1 - x)² + 100 (y - x²)²",
    ),
    "quadratic": (
        _quadratic,
        (-3.0, -0.8),
        (0.0, 0.0),
        (-3.5, 3.5),
        (-3.0, 3.0),
        "quadratic, condition number 50, axes turned 30°",
    ),
}


def build(name: str, problem: str):
    """The transformation drawn for ``gradtx.<name>`` on ``problem``."""
    import gradtx

    if name not in OPTIMIZERS:
        raise KeyError(
            f"gradtx.{name} has no optimizer path: add it to OPTIMIZERS in "
            "docs/_ext/gradtx_paths.py"
        )
    call, lr_rosenbrock, lr_quadratic = OPTIMIZERS[name]
    rate = lr_rosenbrock if problem == "rosenbrock" else lr_quadratic
    tx = eval(call.replace("LR", repr(rate)), dict(vars(gradtx)))  # noqa: S307 (our own table)
    if name in PER_EXAMPLE:
        import jax

        batch = gradtx.stateless(lambda u, p: jax.tree.map(lambda g: g[None], u))
        tx = gradtx.chain(batch, tx)
    return tx


def call_text(name: str, problem: str) -> str:
    call, lr_rosenbrock, lr_quadratic = OPTIMIZERS[name]
    rate = lr_rosenbrock if problem == "rosenbrock" else lr_quadratic
    return "gradtx." + call.replace("LR", f"{rate:g}" if rate is not None else "")


def compute_paths(names, problem: str, steps: int = STEPS):
    """``{name: (steps + 1, 2) numpy array}``: each method's iterates, one jitted program."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    loss, start, *_ = PROBLEMS[problem]
    value_and_grad = jax.value_and_grad(loss)
    txs = {name: build(name, problem) for name in names}

    def run_one(name, tx):
        params = jnp.asarray(start, jnp.float32)

        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p)
            extra = {}
            if name in NEEDS_VALUE:
                extra["value"] = value
            if name in NEEDS_OBJ_FN:
                extra["obj_fn"] = loss
            updates, state = tx.update(grad, state, p, **extra)
            p = p + updates
            return (p, state), p

        _, ps = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return jnp.concatenate([params[None], ps])

    @jax.jit
    def run_all():
        return {name: run_one(name, tx) for name, tx in txs.items()}

    return {name: np.asarray(path) for name, path in run_all().items()}


@functools.cache
def _grid(problem: str):
    import numpy as np

    loss, _, _, (x0, x1), (y0, y1), _ = PROBLEMS[problem]
    xs, ys = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    zs = loss(np.stack([xs, ys]))
    return xs, ys, zs, np.geomspace(max(zs.min(), 1e-3), zs.max(), 14)


def _contours(ax, problem: str):
    _, start, minimum, (x0, x1), (y0, y1), _ = PROBLEMS[problem]
    xs, ys, zs, levels = _grid(problem)
    ax.contour(xs, ys, zs, levels=levels, colors="#999999", linewidths=0.5)
    ax.plot(*start, "o", color="#2ca02c", markersize=4)
    ax.plot(*minimum, "*", color="#d62728", markersize=8)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _draw_path(ax, path, problem: str):
    import numpy as np

    loss, *_ = PROBLEMS[problem]
    finite = np.all(np.isfinite(path), axis=1)
    shown = path[: np.argmin(finite) if not finite.all() else len(path)]
    ax.plot(shown[:, 0], shown[:, 1], "-", color="#1f77b4", linewidth=1.2)
    ax.plot(shown[-1, 0], shown[-1, 1], ".", color="#1f77b4", markersize=6)
    final = float(loss(shown[-1])) if len(shown) else float("nan")
    note = f"loss {final:.2g}" if finite.all() else f"diverged at step {len(shown)}"
    ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="#333333")


def draw(outdir: Path) -> list[str]:
    """Writes every picture; returns the names drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    names = list(OPTIMIZERS)
    paths = {problem: compute_paths(names, problem) for problem in PROBLEMS}
    for name in names:
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0), dpi=90)
        for ax, problem in zip(axes, PROBLEMS, strict=True):
            _contours(ax, problem)
            _draw_path(ax, paths[problem][name], problem)
            ax.set_title(call_text(name, problem), fontsize=7, family="monospace")
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(outdir / f"{name}.png")
        plt.close(fig)
    cols = 6
    rows = -(-len(names) // cols)
    for problem in PROBLEMS:
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.0 * rows), dpi=72)
        for ax in axes.flat[len(names) :]:
            ax.axis("off")
        for ax, name in zip(axes.flat[: len(names)], names, strict=True):
            _contours(ax, problem)
            _draw_path(ax, paths[problem][name], problem)
            ax.set_title(name, fontsize=8, family="monospace")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{PROBLEMS[problem][5]}: {STEPS} steps from the green dot", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.98))
        fig.savefig(outdir / f"gallery-{problem}.png")
        plt.close(fig)
    return names
