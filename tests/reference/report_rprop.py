"""Prints how far gradtx's Rprop strays from Igel & Huesken's pseudo-code (and Optax, PyTorch).

Run from the repository root (well under a minute)::

    python -m tests.reference.report_rprop            # one row per variant
    python -m tests.reference.report_rprop --cases    # one row per case

It runs the cases of ``tests/test_rprop.py`` (same data, hyperparameters and
measure): ``max |gradtx - reference| / (|reference| + 1)`` over 120 steps, every
leaf and element. Then the relation to Optax's ``scale_by_rprop`` (our iRprop-
output one step late, withheld where the new gradient disagrees), and, when
torch is installed (it is not a test dependency), ``torch.optim.Rprop`` against
``rprop(variant="irprop-")`` on the same runs in float64.

Like ``report_deviations``, this module drives gradtx on purpose; the
reference it checks against (``rprop.py``) imports numpy only.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def _import_tests():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    if root not in sys.path:  # run as a script: python tests/reference/report_rprop.py
        sys.path.insert(0, root)
    from tests import test_rprop

    return test_rprop


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def _optax_relation_gap(t, dtype_name: str) -> float:
    """Optax's outputs against ours shifted one step (0 on a flip), and the step sizes."""
    import jax
    import numpy as np

    def measure(dtype):
        ((ours, our_steps), (theirs, their_steps)), grads = t._optax_and_ours(dtype)
        shifted = jax.tree.map(
            lambda o, g: np.concatenate(
                [np.zeros_like(o[:1]), np.where(g[1:] * o[:-1] < 0, 0, o[:-1])]
            ),
            *map(
                lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree), (ours, grads)
            ),
        )
        as64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)  # noqa: E731
        return max(
            t.deviation(as64(theirs), shifted), t.deviation(as64(their_steps), as64(our_steps))
        )

    return t.in_dtype(dtype_name, measure)


def _torch_path(t, torch, hyper_name: str, kind: str):
    """``torch.optim.Rprop`` (float64) fed the gradients of one of the test runs."""
    import numpy as np

    h = t.HYPER[hyper_name]
    leaves = [torch.tensor(w.copy(), dtype=torch.float64) for w in t.W0]
    opt = torch.optim.Rprop(
        leaves,
        lr=h["learning_rate"],
        etas=(h["eta_minus"], h["eta_plus"]),
        step_sizes=(h["min_step_size"], h["max_step_size"]),
    )
    noise_scale = 1.0 if kind == "noisy loss" else 0.0
    rows = []
    for k in range(t.STEPS):
        if kind == "recorded":
            grads = [g[k] for g in t.GRADS]
        else:
            point = [p.detach().numpy().copy() for p in leaves]
            _, clean = t.numpy_loss_and_grad(point)
            grads = [g + noise_scale * n[k] for g, n in zip(clean, t.NOISE, strict=True)]
        for p, g in zip(leaves, grads, strict=True):
            p.grad = torch.tensor(np.asarray(g, np.float64))
        opt.step()
        rows.append([p.detach().numpy().copy() for p in leaves])
    return t._unflatten([np.stack(column) for column in zip(*rows, strict=True)])


def _torch_rows(t) -> list[list[str]]:
    try:
        import torch
    except ImportError:
        return [
            ["rprop(variant='irprop-')", "torch.optim.Rprop: torch not installed", "n/a", "n/a"]
        ]
    rows = []
    for hyper, kind in [
        ("defaults", "recorded"),
        ("clamped", "recorded"),
        ("defaults", "loss"),
        ("clamped", "noisy loss"),
    ]:
        ours, _ = t.in_dtype("float64", t.run_gradtx, "irprop-", hyper, kind)
        gap = t.deviation(ours, _torch_path(t, torch, hyper, kind))
        rows.append(
            ["rprop(variant='irprop-')", f"torch.optim.Rprop, {hyper}, {kind}", _fmt(gap), "n/a"]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="one row per case")
    args = parser.parse_args(argv)
    t = _import_tests()

    print(
        f"gradtx rprop vs Igel & Huesken (2000) pseudo-code in float64 numpy: {t.STEPS} steps on a "
        f"{len(t.W0)}-leaf pytree, every step compared.\n"
        "deviation = max |gradtx - reference| / (|reference| + 1); tolerance "
        f"{t.RTOL['float64']:g} (float64, x64 enabled), {t.RTOL['float32']:g} (float32).\n"
    )
    per_variant: dict[str, dict[str, float]] = {}
    case_rows = []
    cases: dict[tuple, dict[str, float]] = {}
    for variant, hyper, kind, dtype in t.REFERENCE_CASES:
        value = t.reference_deviation(variant, hyper, kind, dtype)
        cases.setdefault((variant, hyper, kind), {})[dtype] = value
        row = per_variant.setdefault(variant, {})
        row[dtype] = max(row.get(dtype, 0.0), value)
    for (variant, hyper, kind), found in cases.items():
        case_rows.append(
            [
                f"rprop(variant={variant!r})",
                f"{hyper}, {kind}",
                _fmt(found.get("float64")),
                _fmt(found.get("float32")),
            ]
        )
    if args.cases:
        print(_table(["method", "case", "max rel deviation f64", "f32"], case_rows))
    else:
        rows = [
            [
                f"rprop(variant={v!r})",
                f"Igel & Huesken 2000, {v}",
                _fmt(r["float64"]),
                _fmt(r["float32"]),
            ]
            for v, r in per_variant.items()
        ]
        print(_table(["method", "reference", "max rel deviation f64", "f32"], rows))
    print(
        "\n(The noise-free real loss runs in float64 only: it ends oscillating at min_step_size "
        "around the optimum, where float32 and float64 take different sign branches.)\n"
    )

    print("Relations to other libraries (same measure):\n")
    rows = [
        [
            "scale_by_rprop (irprop-)",
            "optax.scale_by_rprop = ours one step late, 0 on a flip; same step sizes",
            _fmt(_optax_relation_gap(t, "float64")),
            _fmt(_optax_relation_gap(t, "float32")),
        ]
    ]
    rows += _torch_rows(t)
    print(_table(["method", "relation", "max rel deviation f64", "f32"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
