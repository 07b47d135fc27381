"""Prints how far gradtx's RAdam, AdaBound and AMSBound stray from their references.

Run from the repository root (well under a minute)::

    python -m tests.reference.report_radam_adabound            # one row per method/reference
    python -m tests.reference.report_radam_adabound --cases    # one row per case

It runs the cases of ``tests/test_radam.py`` and ``tests/test_adabound.py`` (same
data, hyperparameters and measure: ``max |gradtx - reference| / (|reference| +
1)`` over 120 steps, every leaf and element), then gradtx's ``radam`` against
Optax's on the same data, and, where installed (neither is a test dependency),
``torch.optim.RAdam`` against ``radam(eps_hat=True)`` and the authors' AdaBound
package (``pip install adabound``) against ``adabound``, in float64.

Like ``report_deviations``, this module drives gradtx on purpose; the references
it checks against (``radam.py``, ``adabound.py``) import numpy only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_radam_adabound.py
        sys.path.insert(0, root)
    from tests import test_adabound, test_radam

    return test_radam, test_adabound


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def _optax_rows(r) -> list[list[str]]:
    import jax

    rows = []
    for name, (ours, theirs) in r.OPTAX_CASES.items():
        with jax.enable_x64(True):
            f64 = r.deviation(r.trajectory(ours(), "float64"), r.trajectory(theirs(), "float64"))
        f32 = r.deviation(r.trajectory(ours(), "float32"), r.trajectory(theirs(), "float32"))
        rows.append(["radam", f"optax.radam, {name}", "1", _fmt(f64), _fmt(f32)])
    return rows


def _torch_trajectory(r, make_optimizer, schedule=None):
    """A torch optimizer (float64) on the test data, params after every step."""
    import numpy as np
    import torch

    leaves = [torch.tensor(x.copy(), dtype=torch.float64) for x in r.THETA0]
    opt = make_optimizer(leaves)
    scheduler = schedule(opt) if schedule else None
    rows = [[x.copy() for x in r.THETA0]]
    for grads in r.GRADS_BY_STEP:
        for p, g in zip(leaves, grads, strict=True):
            p.grad = torch.tensor(np.asarray(g, np.float64))
        opt.step()
        if scheduler is not None:
            scheduler.step()
        rows.append([p.detach().numpy().copy() for p in leaves])
    return [np.stack(column) for column in zip(*rows, strict=True)]


def _torch_rows(r, a) -> list[list[str]]:
    import warnings

    import jax

    try:
        import torch
    except ImportError:
        return [["radam(eps_hat=True)", "torch.optim.RAdam: torch not installed", "", "n/a", ""]]

    def ours(tx):
        with jax.enable_x64(True):
            return r.trajectory(tx, "float64")

    rows = []
    for b2, eps in [(0.999, 1e-8), (0.99, 1e-3)]:
        theirs = _torch_trajectory(
            r, lambda p, b2=b2, eps=eps: torch.optim.RAdam(p, lr=0.01, betas=(0.9, b2), eps=eps)
        )
        gap = r.deviation(ours(r.radam(0.01, b2=b2, eps=eps, eps_hat=True)), theirs)
        rows.append(["radam(eps_hat=True)", f"torch.optim.RAdam, b2={b2}", "1", _fmt(gap), ""])
    try:
        import adabound as luolc  # the authors' package
    except ImportError:
        rows.append(["adabound", "Luolc's adabound package: not installed", "", "n/a", ""])
        return rows
    from gradtx.optimizers.adabound import adabound

    runs = [  # (name, the package's arguments, gradtx's optimizer, ExponentialLR's decay)
        ("defaults", dict(lr=1e-3), lambda: adabound(1e-3), None),
        (
            "amsbound",
            dict(lr=1e-2, gamma=0.05, amsbound=True),
            lambda: adabound(1e-2, gamma=0.05, amsbound=True),
            None,
        ),
        (
            "ExponentialLR(0.98)",
            dict(lr=1e-2, gamma=0.05),
            lambda: adabound(lambda k: 1e-2 * 0.98**k, gamma=0.05),
            0.98,
        ),
    ]
    for name, kwargs, make, decay in runs:
        schedule = None
        if decay is not None:
            schedule = lambda opt, decay=decay: torch.optim.lr_scheduler.ExponentialLR(opt, decay)  # noqa: E731
        with warnings.catch_warnings():  # the package uses add_'s deprecated overloads
            warnings.simplefilter("ignore")
            theirs = _torch_trajectory(
                r, lambda p, kwargs=kwargs: luolc.AdaBound(p, **kwargs), schedule
            )
        gap = r.deviation(ours(make()), theirs)
        rows.append(["adabound", f"Luolc's AdaBound package, {name}", "1", _fmt(gap), ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="one row per case")
    args = parser.parse_args(argv)
    r, a = _import_tests()

    print(
        f"gradtx vs independent float64 numpy references: {r.NUM_STEPS} steps of random "
        f"gradients on a {len(r.THETA0)}-leaf pytree, every step compared.\n"
        f"deviation = max |gradtx - reference| / (|reference| + {r.SCALE:g}); tolerance "
        f"{r.RTOL['float64']:g} (float64, x64 enabled), {r.RTOL['float32']:g} (float32).\n"
    )
    per_row: dict[tuple[str, str], dict] = {}
    case_rows = []
    for module in (r, a):
        for case in module.CASES:
            found = {dtype: module.case_deviation(case, dtype) for dtype in r.RTOL}
            row = per_row.setdefault((case.method, case.reference), {"cases": 0})
            row["cases"] += 1
            for dtype, value in found.items():
                row[dtype] = max(row.get(dtype, 0.0), value)
            case_rows.append(
                [case.id, case.reference, _fmt(found["float64"]), _fmt(found["float32"])]
            )
    if args.cases:
        print(_table(["case", "reference", "max deviation f64", "f32"], case_rows))
    else:
        rows = [
            [method, ref, str(v["cases"]), _fmt(v["float64"]), _fmt(v["float32"])]
            for (method, ref), v in per_row.items()
        ]
        print(_table(["method", "reference", "cases", "max deviation f64", "f32"], rows))

    print(
        "\nOther implementations on the same data (same measure; Optax's float32 radam "
        "computes rho_t less accurately, see gradtx.optimizers.radam):\n"
    )
    rows = _optax_rows(r) + _torch_rows(r, a)
    print(_table(["method", "compared with", "cases", "max deviation f64", "f32"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
