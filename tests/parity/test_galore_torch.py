"""gradtx's GaLore against ``pytorch_optimizer.GaLore`` (a port of the authors'
``galore_torch.GaLoreAdamW``): float64 trajectories, 300 steps, a tall (6 x 4)
and a wide (3 x 5) matrix projected, a vector and a scalar whole.

Collected only by ``python -m pytest -m parity tests/parity``. The keywords that
select pytorch_optimizer's form:

- its ``projection_type="reverse_std"``: gradtx projects a matrix with at least
  as many rows as columns on the left (``P^T G``, ``P`` = leading left singular
  vectors) and a wide one on the right, as Optax does. The authors' code and
  pytorch_optimizer's default (``"std"``) take the other side of each (right
  for tall and square, left for wide), and gradtx has no keyword for that;
- ``base_optimizer=scale_by_adam(eps=1e-8, eps_hat=True)``: both packages add
  ``eps`` to the uncorrected root (``lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)``);
- ``weight_decay=0``: both packages decay the params *after* the step
  (``p <- (p - lr u)(1 - lr wd)``), Optax and gradtx the params before it
  (``p - lr u - lr wd p``); no gradtx keyword changes that (with wd = 0.1 the
  runs part by 1.2e-3 over 300 steps);
- the projection's refresh: pytorch_optimizer renews ``P`` at steps 1, T, 2T, ...
  (1-based), the authors' code, Optax and gradtx at 1, T + 1, 2T + 1, ...: the
  two agree only for ``T = 1`` (every step) or ``T`` past the run (one SVD).

The SVD: pytorch_optimizer takes it in float32 for float64 params (as gradtx's
default ``svd_dtype=float32``), but another library's float32 SVD differs by
~1e-7, so the runs part by 3.5e-7 to 1e-6 (first test). The second test gives
pytorch_optimizer's projector a float64 SVD (gradtx ``svd_dtype=None``), and the
runs agree to 1e-14 (4e-15 at most). With a refresh every step, torch's and JAX's SVDs pick
opposite signs for some singular vectors, which turns the Adam moments built in
the old basis against the new one (the runs part by 0.15 to 0.44); those cases
hand pytorch_optimizer JAX's SVD to check the refresh itself, over 120 steps:
further on, a refreshed basis turns on rounding (near-equal singular values),
and runs part by 1e-2 there, as two gradtx runs whose starts differ by 1e-15 do.
"""

from __future__ import annotations

import importlib

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
pytestmark = pytest.mark.parity

from tests.parity.leaves import STEPS, float64, trajectory_deviation  # noqa: E402 (needs torch)

ONE_SVD = 1000  # update_proj_gap past the 300 steps: one projection, at step 1


def _gradtx(rank, gap, scale=1.0, svd_dtype=jnp.float32):
    return lambda: gradtx.galore(
        1e-2,
        rank=rank,
        update_proj_gap=gap,
        scale=scale,
        base_optimizer=gradtx.scale_by_adam(eps=1e-8, eps_hat=True),
        svd_dtype=svd_dtype,
    )


def _torch(rank, gap, scale=1.0):
    def make(ps):
        projected = {
            "params": ps[:2],
            "rank": rank,
            "update_proj_gap": gap,
            "scale": scale,
            "projection_type": "reverse_std",
        }
        return pytorch_optimizer.GaLore(
            [projected, {"params": ps[2:]}], lr=1e-2, eps=1e-8, foreach=False
        )

    return make


FLOAT32_SVD = {
    # name: (rank, update_proj_gap, scale, tolerance)
    "rank 1, one SVD": (1, ONE_SVD, 1.0, 5e-6),  # 3.5e-7
    "rank 2, one SVD": (2, ONE_SVD, 1.0, 5e-6),  # 5.5e-7
    "rank 3, one SVD, scale 0.25": (3, ONE_SVD, 0.25, 5e-6),
}


@pytest.mark.parametrize("name", list(FLOAT32_SVD))
def test_galore_matches_pytorch_optimizer(name):
    rank, gap, scale, tol = FLOAT32_SVD[name]
    with float64():
        worst, moved = trajectory_deviation(_gradtx(rank, gap, scale), _torch(rank, gap, scale))
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < tol, f"{name}: {worst:.3e}"


def _projector_class():
    return importlib.import_module(pytorch_optimizer.GaLore.__module__).GaLoreProjector


def _factors(svd):
    """A ``get_orthogonal_matrix`` for 'left' and 'right' that takes ``svd(weights)``."""

    def get_orthogonal_matrix(self, weights, projection_type, from_random_matrix=False):
        assert not from_random_matrix and projection_type in ("left", "right")
        u, vh = svd(weights)
        return vh[: self.rank].clone() if projection_type == "right" else u[:, : self.rank].clone()

    return get_orthogonal_matrix


def _torch_svd(weights):  # in the weights' dtype (float64 here)
    u, _, vh = torch.linalg.svd(weights, full_matrices=False)
    return u, vh


def _jax_svd(weights):
    u, _, vh = jnp.linalg.svd(jnp.asarray(weights.numpy()), full_matrices=False)
    return torch.from_numpy(np.array(u)), torch.from_numpy(np.array(vh))


SAME_PRECISION = {
    # name: (rank, update_proj_gap, scale, the torch side's SVD, steps)
    "rank 1, one float64 SVD": (1, ONE_SVD, 1.0, _torch_svd, STEPS),
    "rank 2, one float64 SVD": (2, ONE_SVD, 1.0, _torch_svd, STEPS),
    "rank 3, one float64 SVD, scale 0.25": (3, ONE_SVD, 0.25, _torch_svd, STEPS),
    "rank 2, refresh every step, JAX's SVD": (2, 1, 1.0, _jax_svd, 120),
    "rank 3, refresh every step, JAX's SVD, scale 0.5": (3, 1, 0.5, _jax_svd, 120),
}


@pytest.mark.parametrize("name", list(SAME_PRECISION))
def test_galore_matches_pytorch_optimizer_with_the_same_svd(name, monkeypatch):
    rank, gap, scale, svd, steps = SAME_PRECISION[name]
    monkeypatch.setattr(_projector_class(), "get_orthogonal_matrix", _factors(svd))
    with float64():
        worst, moved = trajectory_deviation(
            _gradtx(rank, gap, scale, svd_dtype=None), _torch(rank, gap, scale), steps=steps
        )
    print(f"{name}: {worst:.3e} (moved {moved:.3g})")
    assert moved > 0.1, f"the run barely moved ({moved})"
    assert worst < 1e-12, f"{name}: {worst:.3e}"
