"""HAM / nHAM (Hyperbolic Aware Minimization) and the optimizer factory (REFERENCE §1)."""

from hamgraph.optim.factory import (
    BASE_OPTIMIZERS,
    build_optimizer,
    check_base_options,
    resolve_base,
)
from hamgraph.optim.functional import default_fused, hyperbolic_step_
from hamgraph.optim.groups import ham_param_groups, ham_target_names, ham_target_params
from hamgraph.optim.ham import HAM

__all__ = [
    "BASE_OPTIMIZERS",
    "HAM",
    "build_optimizer",
    "check_base_options",
    "default_fused",
    "ham_param_groups",
    "ham_target_names",
    "ham_target_params",
    "hyperbolic_step_",
    "resolve_base",
]
