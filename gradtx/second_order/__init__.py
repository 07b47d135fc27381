"""Second-order and quasi-Newton methods, line searches and the minimize driver."""

from gradtx.second_order.bfgs import bfgs, lbfgs, scale_by_bfgs, scale_by_lbfgs
from gradtx.second_order.hessian_free import hessian_free, scale_by_hessian_free
from gradtx.second_order.linesearch import (
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from gradtx.second_order.minimize import MinimizeResult, minimize
from gradtx.second_order.newton import newton, scale_by_newton
from gradtx.second_order.nonlinear_cg import nonlinear_cg, scale_by_nonlinear_cg

__all__ = [
    "MinimizeResult",
    "bfgs",
    "hessian_free",
    "lbfgs",
    "minimize",
    "newton",
    "nonlinear_cg",
    "scale_by_backtracking_linesearch",
    "scale_by_bfgs",
    "scale_by_hessian_free",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_nonlinear_cg",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
]
