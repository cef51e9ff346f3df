"""Schedule optimisation (docs/theory.md section 5): SLSQP with analytic gradients, multi-start."""

from specsched.optimize.problem import (
    AB_MAX,
    AB_MIN,
    AUTO_SLSQP_MAX_STEPS,
    DELTA,
    LINEAR_AB_MAX,
    LINEAR_AB_MIN,
    METHODS,
    STARTS,
    OptimizeResult,
    baseline_losses,
    check_bounds,
    optimize_schedule,
    project_feasible,
    warm_start,
)

__all__ = [
    "AB_MAX",
    "AB_MIN",
    "AUTO_SLSQP_MAX_STEPS",
    "DELTA",
    "LINEAR_AB_MAX",
    "LINEAR_AB_MIN",
    "METHODS",
    "STARTS",
    "OptimizeResult",
    "baseline_losses",
    "check_bounds",
    "optimize_schedule",
    "project_feasible",
    "warm_start",
]
