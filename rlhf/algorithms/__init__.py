"""RL algorithms as pure tensor functions: advantage estimators, policy / value / KL losses, loss aggregation.

No Ray, vLLM or DeepSpeed here: the controller and the workers both import this package. Estimators and policy
losses are chosen by registry name (`algorithm.advantage`, `algorithm.policy_loss`).
"""

from rlhf.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    get_advantage_fn,
    register_advantage,
)
from rlhf.algorithms.aggregation import LOSS_AGG_MODES, aggregate_loss, aggregation_counts, make_loss_aggregator
from rlhf.algorithms.config import AlgorithmConfig, DynamicSamplingConfig, KLControlConfig, OverlongConfig
from rlhf.algorithms.core import masked_mean, masked_var, masked_whiten
from rlhf.algorithms.dapo import overlong_reward_penalty, select_informative_groups
from rlhf.algorithms.kl import KL_ESTIMATORS, apply_kl_penalty, kl_estimate, kl_loss
from rlhf.algorithms.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from rlhf.algorithms.policy_loss import POLICY_LOSSES, entropy_loss, get_policy_loss_fn, register_policy_loss
from rlhf.algorithms.registry import load_plugin_modules
from rlhf.algorithms.rollout_correction import rollout_importance_weights
from rlhf.algorithms.value import compute_value_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "AdaptiveKLController",
    "AdvantageInputs",
    "AlgorithmConfig",
    "DynamicSamplingConfig",
    "FixedKLController",
    "KLControlConfig",
    "OverlongConfig",
    "aggregate_loss",
    "aggregation_counts",
    "apply_kl_penalty",
    "compute_value_loss",
    "entropy_loss",
    "get_advantage_fn",
    "get_policy_loss_fn",
    "kl_estimate",
    "kl_loss",
    "load_plugin_modules",
    "make_kl_controller",
    "make_loss_aggregator",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "overlong_reward_penalty",
    "register_advantage",
    "register_policy_loss",
    "rollout_importance_weights",
    "select_informative_groups",
]
