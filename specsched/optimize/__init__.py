"""Schedule optimisation (docs/theory.md section 5): SLSQP, L-BFGS and Newton's method with
analytic gradients, multi-start; the best SD3 shift of a flow-matching schedule (section 10)."""

from specsched.optimize.problem import (
    AB_MAX,
    AB_MIN,
    AUTO_SLSQP_MAX_STEPS,
    DELTA,
    FM_STARTS,
    LINEAR_AB_MAX,
    LINEAR_AB_MIN,
    METHODS,
    STARTS,
    TERMINALS,
    OptimizeResult,
    baseline_losses,
    check_bounds,
    optimize_schedule,
    project_feasible,
    warm_start,
)
from specsched.optimize.shift import ShiftResult, optimal_shift

__all__ = [
    "AB_MAX",
    "AB_MIN",
    "AUTO_SLSQP_MAX_STEPS",
    "DELTA",
    "FM_STARTS",
    "LINEAR_AB_MAX",
    "LINEAR_AB_MIN",
    "METHODS",
    "STARTS",
    "TERMINALS",
    "OptimizeResult",
    "ShiftResult",
    "baseline_losses",
    "check_bounds",
    "optimal_shift",
    "optimize_schedule",
    "project_feasible",
    "warm_start",
]
