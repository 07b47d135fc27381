"""Second-order methods on L2-regularised logistic regression, checked against SciPy.

The problem is scikit-learn's bundled breast-cancer data (569 tumours, 30
standardised features, label 1 = benign), and the loss is the mean logistic
loss plus a ridge penalty on the weights (not on the bias):

    f(w, b) = mean_i [log(1 + exp(z_i)) - y_i z_i] + (l2 / 2) |w|^2,   z = X w + b.

It is smooth and strictly convex, so it has one minimiser. Each gradtx method is
run to ``|grad f| <= tol`` by ``gradtx.minimize`` (one compiled
``lax.while_loop``), in float64, from zero:

* ``gradtx.lbfgs()``: L-BFGS with a zoom (strong Wolfe) line search;
* ``gradtx.newton()``: the pure Newton step ``-H^-1 g`` (the Hessian of 31
  unknowns is cheap; Newton converges quadratically near the minimum);
* ``gradtx.nonlinear_cg()``: Polak-Ribiere+ conjugate gradient with a zoom
  line search.

The reference minimiser is ``scipy.optimize.minimize(method="L-BFGS-B")`` with
tight tolerances, on a numpy version of the same loss and gradient. The table
gives each method's iterations, why it stopped, final loss, gradient norm,
largest coordinate distance to SciPy's answer, and wall time (compilation
included). The Hessian's smallest eigenvalue is about ``l2``, so a gradient of
1e-10 still allows ~1e-7 on the params: that is the size of the distances, on
SciPy's side as much as on gradtx's.

    python examples/second_order_logreg.py
    python examples/second_order_logreg.py --l2 1e-2 --tol 1e-12

The last line printed is ``max |params - scipy|: x.xe-xx`` (over the methods).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize as scipy_minimize
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler

import gradtx

METHODS = {
    "lbfgs": lambda: gradtx.lbfgs(),
    "newton": lambda: gradtx.newton(),
    "nonlinear_cg": lambda: gradtx.nonlinear_cg(),
}


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Standardised float64 features ``(569, 30)`` and 0/1 labels."""
    data = load_breast_cancer()
    return StandardScaler().fit_transform(data.data), data.target.astype(np.float64)


def logistic_loss(params: dict, x, y, l2: float):
    """``f(w, b)`` above, for jax arrays."""
    z = x @ params["w"] + params["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z) + 0.5 * l2 * jnp.sum(params["w"] ** 2)


def scipy_reference(x: np.ndarray, y: np.ndarray, l2: float):
    """SciPy's ``scipy.optimize.OptimizeResult``, from numpy formulas; ``.x`` is ``[w, b]``."""

    def value_and_grad(theta):
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        residual = 1.0 / (1.0 + np.exp(-z)) - y  # sigmoid(z) - y
        value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
        grad = np.append(x.T @ residual / len(y) + l2 * w, residual.mean())
        return value, grad

    # ftol=0: stop on the gradient (or when the line search cannot decrease f any more),
    # not on a small relative decrease of f, which leaves ~3e-7 on the params here.
    options = {"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000, "maxcor": 20}
    return scipy_minimize(
        value_and_grad, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options=options
    )


def flatten(params: dict) -> np.ndarray:
    return np.append(np.asarray(params["w"]), np.asarray(params["b"]))


def stop_reason(result: gradtx.MinimizeResult, max_steps: int) -> str:
    """Why :func:`gradtx.minimize` stopped."""
    if bool(result.converged):
        return "|grad| <= tol"
    if int(result.num_steps) >= max_steps:
        return "max steps"
    if not np.isfinite(float(result.value)):
        return "non-finite loss"
    # The line search found no decrease: f is flat to float64 resolution there.
    return "no decrease"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--l2", type=float, default=1e-3, help="the ridge strength")
    parser.add_argument("--tol", type=float, default=1e-9, help="gradient-norm tolerance")
    parser.add_argument("--max-steps", type=int, default=2000)
    return parser.parse_args(argv)


def main(argv=None) -> float:
    args = parse_args(argv)
    x, y = load_data()
    scipy_result = scipy_reference(x, y, args.l2)
    reference = scipy_result.x
    print(
        f"scipy L-BFGS-B: {scipy_result.nit} iterations, loss {scipy_result.fun:.15f}, "
        f"|grad| {np.linalg.norm(scipy_result.jac):.1e}"
    )
    print(
        f"{'method':<14}{'iterations':>11}{'stopped on':>15}{'loss':>20}{'|grad|':>10}"
        f"{'max |params - scipy|':>22}{'time (s)':>10}"
    )
    deviations = []
    with jax.enable_x64(True):
        xs, ys = jnp.asarray(x), jnp.asarray(y)
        start_params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}

        def loss(params):
            return logistic_loss(params, xs, ys, args.l2)

        for name, factory in METHODS.items():
            start = time.perf_counter()
            result = gradtx.minimize(
                loss, start_params, factory(), max_steps=args.max_steps, tol=args.tol
            )
            seconds = time.perf_counter() - start
            deviation = float(np.max(np.abs(flatten(result.params) - reference)))
            deviations.append(deviation)
            grad_norm = float(gradtx.tree.global_norm(result.grad))
            print(
                f"{name:<14}{int(result.num_steps):>11}{stop_reason(result, args.max_steps):>15}"
                f"{float(result.value):>20.15f}{grad_norm:>10.1e}{deviation:>22.1e}"
                f"{seconds:>10.2f}"
            )
    print(f"max |params - scipy|: {max(deviations):.1e}")
    return max(deviations)


if __name__ == "__main__":
    main()
