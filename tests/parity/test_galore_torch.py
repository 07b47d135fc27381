"""gradtx's GaLore against PyTorch forms: float64 trajectories, 300 steps unless
said, a tall (6 x 4) and a wide (3 x 5) matrix projected, a vector and a scalar
whole.

Collected only by ``python -m pytest -m parity tests/parity``. Two torch sides:

1. ``pytorch_optimizer.GaLore``, a port of the authors' ``GaLoreAdamW``, under
   each of its projection types, as gradtx's ``projection_type`` of the same
   name (``"reverse_std"`` is Optax's side and gradtx's default; ``"std"`` the
   paper's and the authors' default).
2. :class:`AuthorsGaLoreAdamW` below: the authors' algorithm as their code runs
   it (``galore_torch/adamw.py`` with ``galore_torch/galore_projector.py``, GitHub
   jiaweizzhao/GaLore at 2cc66f8), written again here after reading it, because
   ``galore_torch`` is not installed (its package needs ``transformers``, and the
   PyPI release 1.0 predates the repository's: its ``"full"`` projector keeps the
   singular values in both factors). It pins the refresh timing, which differs in
   pytorch_optimizer (below).

The keywords that select the torch forms:

- ``projection_type``: which side (see :func:`gradtx.scale_by_galore`);
- ``base_optimizer=scale_by_adam(eps=..., eps_hat=True)``: both torch sides add
  ``eps`` to the uncorrected root (``lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)``);
- ``decay_form="authors"`` where ``weight_decay > 0``: both torch sides decay
  the params *after* the step (``p <- (p - lr u)(1 - lr wd)``), Optax and
  gradtx's default the params before it (``p - lr u - lr wd p``; with wd = 0.1
  the runs part by 1.2e-3 over 300 steps);
- the refresh: the authors' code, the paper, Optax and gradtx renew ``P`` at
  steps 1, T + 1, 2T + 1, ... (1-based; the authors at ``step % T == 0`` with a
  0-based count read before it is incremented). pytorch_optimizer increments its
  count first, so it renews at steps 1, T, 2T, ...: it agrees only for ``T = 1``
  or ``T`` past the run (one SVD), which its cases use.

The SVD: the authors' code and pytorch_optimizer take it in float32 for float64
params (as gradtx's default ``svd_dtype=float32``), but another library's float32
SVD differs by ~1e-7, so those runs part by ~1e-6 (the float32-SVD cases, one SVD
each). The other cases take a float64 SVD on both sides (gradtx ``svd_dtype=None``)
and agree to ~1e-14. Where the SVD is renewed, torch's and JAX's SVDs pick
opposite signs for some singular vectors, which turns the Adam moments built in
the old basis against the new one (runs part by 0.1 to 0.4); those cases hand the
torch side JAX's SVD, to check the refresh itself. With a refresh every step, a
renewed basis turns on rounding further on (near-equal singular values), and runs
part by 1e-2 there, as two gradtx runs whose starts differ by 1e-15 do: those cases
stop at 120 steps, or at 60 where the tall leaf is projected on the right with
rank 2 (its 2nd and 3rd singular values cross near step 80, and two gradtx runs
1e-15 apart part by 1.7e-2 from there). "full" at rank 2: see ``ROUNDING_BOUND``.

Noticed in the authors' code, not followed: ``project_back`` picks the side from
the shape of the low-rank update, not of the matrix; under ``"reverse_std"`` a
wide matrix with ``rank >= rows`` gives a square update that is sent to the
wrong side (a shape error). gradtx picks it from the matrix.
"""

from __future__ import annotations

import importlib
import math

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from tests.parity.leaves import (  # noqa: E402 (needs torch)
    STEPS,
    float64,
    problem,
    trajectory_deviation,
)

ONE_SVD = 1000  # update_proj_gap past the 300 steps: one projection, at step 1
TYPES = ("reverse_std", "std", "left", "right", "full")


def _gradtx(
    rank,
    gap,
    scale=1.0,
    svd_dtype=jnp.float32,
    projection_type="reverse_std",
    eps=1e-8,
    weight_decay=0.0,
    decay_form="optax",
):
    return lambda: gradtx.galore(
        1e-2,
        rank=rank,
        update_proj_gap=gap,
        scale=scale,
        base_optimizer=gradtx.scale_by_adam(eps=eps, eps_hat=True),
        weight_decay=weight_decay,
        svd_dtype=svd_dtype,
        projection_type=projection_type,
        decay_form=decay_form,
    )


# ---------------------------------------------------------------- pytorch_optimizer


def _torch(rank, gap, scale=1.0, projection_type="reverse_std", weight_decay=0.0):
    def make(ps):
        projected = {
            "params": ps[:2],
            "rank": rank,
            "update_proj_gap": gap,
            "scale": scale,
            "projection_type": projection_type,
        }
        return pytorch_optimizer.GaLore(
            [projected, {"params": ps[2:]}],
            lr=1e-2,
            eps=1e-8,
            weight_decay=weight_decay,
            foreach=False,
        )

    return make


FLOAT32_SVD = {
    # name: (rank, update_proj_gap, scale, projection_type, tolerance)
    "reverse_std, rank 1, one SVD": (1, ONE_SVD, 1.0, "reverse_std", 5e-6),
    "reverse_std, rank 2, one SVD": (2, ONE_SVD, 1.0, "reverse_std", 5e-6),
    "reverse_std, rank 3, one SVD, scale 0.25": (3, ONE_SVD, 0.25, "reverse_std", 5e-6),
    "std, rank 2, one SVD": (2, ONE_SVD, 1.0, "std", 5e-6),
    "left, rank 2, one SVD": (2, ONE_SVD, 1.0, "left", 5e-6),
    "right, rank 2, one SVD, scale 0.5": (2, ONE_SVD, 0.5, "right", 5e-6),
    "full, rank 1, one SVD": (1, ONE_SVD, 1.0, "full", 5e-6),
}


@pytest.mark.parametrize("name", list(FLOAT32_SVD))
def test_galore_matches_pytorch_optimizer(name):
    rank, gap, scale, kind, tol = FLOAT32_SVD[name]
    with float64():
        worst, moved = trajectory_deviation(
            _gradtx(rank, gap, scale, projection_type=kind), _torch(rank, gap, scale, kind)
        )
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < tol, f"{name}: {worst:.3e}"


def _projector_class():
    return importlib.import_module(pytorch_optimizer.GaLore.__module__).GaLoreProjector


def _factors(svd):
    """A ``get_orthogonal_matrix`` for 'left', 'right' and 'full' that takes ``svd(weights)``."""

    def get_orthogonal_matrix(self, weights, projection_type, from_random_matrix=False):
        assert not from_random_matrix and projection_type in ("left", "right", "full")
        u, vh = svd(weights)
        a, b = u[:, : self.rank].clone(), vh[: self.rank].clone()
        return {"left": a, "right": b, "full": (a, b)}[projection_type]

    return get_orthogonal_matrix


def _torch_svd(weights):  # in the weights' dtype (float64 here)
    u, _, vh = torch.linalg.svd(weights, full_matrices=False)
    return u, vh


def _jax_svd(weights):
    u, _, vh = jnp.linalg.svd(jnp.asarray(weights.numpy()), full_matrices=False)
    return torch.from_numpy(np.array(u)), torch.from_numpy(np.array(vh))


SAME_PRECISION = {
    # name: (rank, update_proj_gap, scale, projection_type, the torch side's SVD, steps)
    "reverse_std, rank 1, one float64 SVD": (1, ONE_SVD, 1.0, "reverse_std", _torch_svd, STEPS),
    "reverse_std, rank 2, one float64 SVD": (2, ONE_SVD, 1.0, "reverse_std", _torch_svd, STEPS),
    "reverse_std, rank 3, one float64 SVD, scale 0.25": (
        3,
        ONE_SVD,
        0.25,
        "reverse_std",
        _torch_svd,
        STEPS,
    ),
    "std, rank 1, one float64 SVD": (1, ONE_SVD, 1.0, "std", _torch_svd, STEPS),
    "std, rank 3, one float64 SVD, scale 0.5": (3, ONE_SVD, 0.5, "std", _torch_svd, STEPS),
    "left, rank 2, one float64 SVD": (2, ONE_SVD, 1.0, "left", _torch_svd, STEPS),
    "right, rank 2, one float64 SVD": (2, ONE_SVD, 1.0, "right", _torch_svd, STEPS),
    "full, rank 2, one float64 SVD, scale 0.5": (2, ONE_SVD, 0.5, "full", _torch_svd, STEPS),
    "reverse_std, rank 2, refresh every step, JAX's SVD": (2, 1, 1.0, "reverse_std", _jax_svd, 120),
    "reverse_std, rank 3, refresh every step, JAX's SVD, scale 0.5": (
        3,
        1,
        0.5,
        "reverse_std",
        _jax_svd,
        120,
    ),
    "std, rank 2, refresh every step, JAX's SVD": (2, 1, 1.0, "std", _jax_svd, 60),
    "left, rank 1, refresh every step, JAX's SVD": (1, 1, 1.0, "left", _jax_svd, 120),
    "right, rank 2, refresh every step, JAX's SVD": (2, 1, 1.0, "right", _jax_svd, 60),
    "full, rank 1, refresh every step, JAX's SVD": (1, 1, 1.0, "full", _jax_svd, 120),
    "full, rank 2, refresh every step, JAX's SVD": (2, 1, 1.0, "full", _jax_svd, 120),
}

# "full" at rank >= 2: at a refresh R = P^T G Q is diagonal up to rounding, and
# Adam divides those ~1e-16 off-diagonal entries by their own root plus eps: a
# rounding-sized difference becomes up to ~1e-8 of a step, so both sides agree
# only to that (measured: 9.2e-10 with one SVD and eps 1e-8, 2.3e-8 with an SVD
# every step, 5.0e-12 against the authors' algorithm with eps 1e-6). In float32
# the same entries get whole +-1 steps of rounding-chosen sign, so the float32-SVD
# cases take "full" at rank 1 (R is 1 x 1).
ROUNDING_BOUND = {
    "full, rank 2, one float64 SVD, scale 0.5": 1e-8,
    "full, rank 2, refresh every step, JAX's SVD": 1e-7,
    "full, rank 2, gap 11": 1e-10,
}


@pytest.mark.parametrize("name", list(SAME_PRECISION))
def test_galore_matches_pytorch_optimizer_with_the_same_svd(name, monkeypatch):
    rank, gap, scale, kind, svd, steps = SAME_PRECISION[name]
    monkeypatch.setattr(_projector_class(), "get_orthogonal_matrix", _factors(svd))
    with float64():
        worst, moved = trajectory_deviation(
            _gradtx(rank, gap, scale, svd_dtype=None, projection_type=kind),
            _torch(rank, gap, scale, kind),
            steps=steps,
        )
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < ROUNDING_BOUND.get(name, 1e-12), f"{name}: {worst:.3e}"


# ---------------------------------------------------------------- the authors' algorithm


def _float32_svd(g):
    """The authors' SVD: in float32 whatever the gradient's dtype, cast back after."""
    u, _, vh = torch.linalg.svd(g.float(), full_matrices=False)
    return u.to(g.dtype), vh.to(g.dtype)


class AuthorsGaLoreAdamW(torch.optim.Optimizer):
    """GaLore-AdamW as the authors' code runs it, for the parameter groups that
    carry ``rank``, ``update_proj_gap``, ``scale`` and ``proj_type``:

    - a per-parameter count ``k`` from 0; the projector is (re)computed from
      ``svd(G)`` when there is none yet or ``k % update_proj_gap == 0``, with
      ``k`` read *before* it is incremented (so at 1-based steps 1, T + 1, ...);
    - sides: ``"std"`` right (``G B^T``, ``B`` = leading rows of ``V^H``) when
      ``rows >= cols``, else left (``A^T G``, ``A`` = leading columns of ``U``);
      ``"reverse_std"`` the opposite; ``"left"``, ``"right"``; ``"full"``
      ``A^T G B^T``. Back: ``A N``, ``N B`` or ``A N B``, times ``scale``, the
      side of ``"std"``/``"reverse_std"`` read from the shape of ``N``;
    - Adam's moments on the projection, never reset; ``N = m / (sqrt(v) + eps)``;
      ``p <- p - lr sqrt(1 - b2^k) / (1 - b1^k) N``, then ``p <- p - lr wd p``.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, svd=None):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )
        self.svd = _float32_svd if svd is None else svd

    @staticmethod
    def _side(group, shape):
        kind, tall = group["proj_type"], shape[0] >= shape[1]
        if kind == "std":
            return "right" if tall else "left"
        if kind == "reverse_std":
            return "left" if tall else "right"
        return kind

    def _project(self, state, group, g):
        side = self._side(group, g.shape)
        if "ortho" not in state or state["k"] % group["update_proj_gap"] == 0:
            u, vh = self.svd(g)
            a, b = u[:, : group["rank"]], vh[: group["rank"]]
            state["ortho"] = {"left": a, "right": b, "full": (a, b)}[side]
        o = state["ortho"]
        if side == "left":
            return o.T @ g
        if side == "right":
            return g @ o.T
        return o[0].T @ g @ o[1].T

    @staticmethod
    def _project_back(state, group, n):
        o, kind = state["ortho"], group["proj_type"]
        rows, cols = n.shape
        if kind == "std":
            full = n @ o if rows >= cols else o @ n
        elif kind == "reverse_std":
            full = o @ n if rows <= cols else n @ o
        elif kind == "left":
            full = o @ n
        elif kind == "right":
            full = n @ o
        else:
            full = o[0] @ n @ o[1]
        return full * group["scale"]

    @torch.no_grad()
    def step(self, closure=None):
        del closure
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                state = self.state[p]
                state.setdefault("k", 0)
                g = p.grad
                if "rank" in group:
                    g = self._project(state, group, g)
                if "m" not in state:
                    state["m"], state["v"] = torch.zeros_like(g), torch.zeros_like(g)
                state["k"] += 1
                k = state["k"]
                state["m"].mul_(b1).add_(g, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                n = state["m"] / (state["v"].sqrt() + group["eps"])
                if "rank" in group:
                    n = self._project_back(state, group, n)
                p.add_(n, alpha=-lr * math.sqrt(1 - b2**k) / (1 - b1**k))
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-lr * group["weight_decay"])


def _authors(rank, gap, scale, kind, svd=None, projected=2, weight_decay=0.0):
    def make(ps):
        galore_group = {
            "params": ps[:projected],
            "rank": rank,
            "update_proj_gap": gap,
            "scale": scale,
            "proj_type": kind,
        }
        groups = [galore_group, {"params": ps[projected:]}]
        return AuthorsGaLoreAdamW(groups, lr=1e-2, weight_decay=weight_decay, svd=svd)

    return make


def _with_a_square_leaf():
    """:func:`problem`'s start with a square (4 x 4) matrix put third, where ``"std"``
    (the authors' side, the right) and the paper's ``m <= n`` rule (the left) part."""
    x0, curv, target = problem(seed=3)
    rng = np.random.default_rng(4)
    square = [rng.normal(size=(4, 4)), np.logspace(0, 2, 16).reshape(4, 4), rng.normal(size=(4, 4))]
    lists = (x0, curv, target)
    return tuple(
        [*leaves[:2], extra, *leaves[2:]] for leaves, extra in zip(lists, square, strict=True)
    )


AUTHORS = {
    # name: (rank, update_proj_gap, scale, proj_type, SVD of the torch side, steps, square leaf)
    "std, rank 2, gap 7": (2, 7, 1.0, "std", _jax_svd, STEPS, False),
    "std, rank 1, gap 25, square leaf": (1, 25, 0.5, "std", _jax_svd, STEPS, True),
    "reverse_std, rank 2, gap 7": (2, 7, 1.0, "reverse_std", _jax_svd, STEPS, False),
    "reverse_std, rank 1, gap 25, square leaf": (1, 25, 1.0, "reverse_std", _jax_svd, STEPS, True),
    "left, rank 2, gap 10": (2, 10, 1.0, "left", _jax_svd, STEPS, False),
    "right, rank 1, gap 9, scale 0.25": (1, 9, 0.25, "right", _jax_svd, STEPS, False),
    "full, rank 2, gap 11": (2, 11, 1.0, "full", _jax_svd, STEPS, False),
    "full, rank 1, gap 6": (1, 6, 1.0, "full", _jax_svd, STEPS, False),
    "std, rank 2, gap 1": (2, 1, 1.0, "std", _jax_svd, 60, False),
    "std, rank 2, float64 torch SVD, one SVD": (2, ONE_SVD, 1.0, "std", _torch_svd, STEPS, False),
}


@pytest.mark.parametrize("name", list(AUTHORS))
def test_galore_matches_the_authors_algorithm(name):
    """The refresh timing (steps 1, T + 1, ...) and every side, against the authors'
    code's algorithm, both sides with a float64 SVD (JAX's, so the signs agree)."""
    rank, gap, scale, kind, svd, steps, square = AUTHORS[name]
    start = _with_a_square_leaf() if square else None
    with float64():
        worst, moved = trajectory_deviation(
            _gradtx(rank, gap, scale, svd_dtype=None, projection_type=kind, eps=1e-6),
            _authors(rank, gap, scale, kind, svd, projected=3 if square else 2),
            steps=steps,
            start=start,
        )
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < ROUNDING_BOUND.get(name, 1e-12), f"{name}: {worst:.3e}"


@pytest.mark.parametrize("kind", TYPES)
def test_galore_matches_the_authors_algorithm_with_their_float32_svd(kind):
    """Their SVD in float32 for float64 params, as gradtx's default ``svd_dtype``; one
    SVD (torch's and JAX's float32 SVDs part by ~1e-7 and may pick other signs)."""
    rank = 1 if kind == "full" else 2  # see ROUNDING_BOUND
    with float64():
        worst, moved = trajectory_deviation(
            _gradtx(rank, ONE_SVD, 1.0, projection_type=kind, eps=1e-6),
            _authors(rank, ONE_SVD, 1.0, kind),
        )
    print(f"{kind}, rank {rank}, one float32 SVD: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < 5e-6, f"{kind}: {worst:.3e}"


@pytest.mark.parametrize("gap", [7, 25])
def test_the_refresh_timing_matters(gap):
    """A control for the cases above: the authors' algorithm renewing one step early
    (at 1-based steps 1, T, 2T, ..., pytorch_optimizer's timing) parts from gradtx."""

    class OneEarly(AuthorsGaLoreAdamW):
        def _project(self, state, group, g):
            # read the count as if incremented first: renew at k + 1 = 0 mod T
            state["k"] += 1
            try:
                return super()._project(state, group, g)
            finally:
                state["k"] -= 1

    def make(ps):
        group = {"params": ps[:2], "rank": 2, "update_proj_gap": gap, "scale": 1.0}
        return OneEarly([{**group, "proj_type": "std"}, {"params": ps[2:]}], lr=1e-2, svd=_jax_svd)

    with float64():
        worst, _ = trajectory_deviation(
            _gradtx(2, gap, svd_dtype=None, projection_type="std", eps=1e-6), make
        )
    print(f"one step early, gap {gap}: {worst:.3e}")
    assert worst > 1e-6


DECAY = {
    # name: (torch side, projection_type, update_proj_gap)
    "pytorch_optimizer, std, one float64 SVD": ("pytorch_optimizer", "std", ONE_SVD),
    "pytorch_optimizer, reverse_std, one float64 SVD": (
        "pytorch_optimizer",
        "reverse_std",
        ONE_SVD,
    ),
    "authors, std, gap 7": ("authors", "std", 7),
    "authors, reverse_std, gap 7": ("authors", "reverse_std", 7),
}


@pytest.mark.parametrize("name", list(DECAY))
@pytest.mark.parametrize("decay_form", ["authors", "optax"])
def test_galore_weight_decay_after_the_step(name, decay_form, monkeypatch):
    """weight_decay = 0.1: ``decay_form="authors"`` follows both torch sides (float64
    SVDs; JAX's on the torch side where the basis is renewed), Optax's form parts."""
    side, kind, gap = DECAY[name]
    if side == "pytorch_optimizer":
        monkeypatch.setattr(_projector_class(), "get_orthogonal_matrix", _factors(_torch_svd))
        theirs, eps = _torch(2, gap, 1.0, kind, weight_decay=0.1), 1e-8
    else:
        theirs, eps = _authors(2, gap, 1.0, kind, _jax_svd, weight_decay=0.1), 1e-6
    ours = _gradtx(2, gap, 1.0, None, kind, eps, weight_decay=0.1, decay_form=decay_form)
    with float64():
        worst, moved = trajectory_deviation(ours, theirs)
    print(f"{name}, decay_form={decay_form}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    if decay_form == "authors":
        assert worst < 1e-12, f"{name}: {worst:.3e}"
    else:
        assert worst > 1e-4, f"{name}: the decay forms should part ({worst:.3e})"
