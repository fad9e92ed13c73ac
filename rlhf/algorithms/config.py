"""The `algorithm:` section of the config: one typed home for every RL-algorithm default, and its validation.

Field names follow verl where verl has one. `validate()` runs in the driver before any worker starts; errors name
the full key (`algorithm.clip_ratio_c=0.5 ...`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlhf.algorithms.aggregation import LOSS_AGG_MODES
from rlhf.algorithms.kl import KL_ESTIMATORS
from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, load_plugin_modules

KL_CONTROLLER_TYPES = ("fixed", "adaptive")
ROLLOUT_IS_LEVELS = ("token", "sequence")


@dataclass
class KLControlConfig:
    """Coefficient of the KL penalty folded into the rewards (`use_kl_in_reward`)."""

    type: str = "fixed"
    """fixed: constant kl_coef; adaptive: Ziegler et al. 2019 proportional controller towards target_kl."""
    kl_coef: float = 0.001
    """Initial (fixed: constant) coefficient beta in r_t = score_t - beta * KL_t."""
    target_kl: float = 0.1
    """adaptive only: the per-token KL the controller steers towards."""
    horizon: int = 10000
    """adaptive only: samples over which the coefficient moves by the clipped error (larger = slower)."""


@dataclass
class DynamicSamplingConfig:
    """DAPO dynamic sampling (Yu et al. 2025): drop prompt groups whose rewards all agree, generate more."""

    enable: bool = False
    """Filter out groups with zero reward variance (they give zero GRPO advantage) and refill the batch."""
    max_num_gen_batches: int = 10
    """Give up after this many generation rounds per step; 0 means no limit (verl's convention)."""


@dataclass
class OverlongConfig:
    """DAPO soft overlong punishment (Yu et al. 2025): a length penalty added to the score near the length limit."""

    enable: bool = False
    """Add `overlong_reward_penalty` to each response's score."""
    buffer_len: int = 4096
    """Length of the penalty ramp before rollout.max_response_length (the paper's L_cache = 4096)."""
    penalty_factor: float = 1.0
    """Penalty at the maximum length (the ramp goes from 0 down to -penalty_factor)."""


@dataclass
class AlgorithmConfig:
    """Which advantage estimator, policy loss and regularisers the RL step uses (the `algorithm:` config section)."""

    advantage: str = "grpo"
    """Advantage estimator, a registry name: gae | grpo | drgrpo | rloo | reinforce_pp | reinforce_pp_baseline | remax."""
    gamma: float = 1.0
    """Discount factor over response tokens (gae, reinforce_pp); 1.0 = undiscounted, usual for LLMs."""
    lam: float = 1.0
    """GAE lambda (gae only); 1.0 = Monte-Carlo returns minus values."""
    norm_adv_by_std: bool = True
    """grpo: divide the group-centred score by the group std (False gives Dr.GRPO's numerator)."""
    policy_loss: str = "ppo"
    """Policy loss, a registry name: ppo | gspo | cispo."""
    clip_ratio_low: float = 0.2
    """ppo: ratio clipped below at 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.2
    """ppo: ratio clipped above at 1 + clip_ratio_high; larger than low = DAPO clip-higher (0.28)."""
    clip_ratio_c: float = 3.0
    """ppo dual-clip bound c > 1 for negative advantages (Ye et al. 2020); 0 disables dual-clip."""
    gspo_clip_ratio_low: float = 3e-4
    """gspo: the sequence ratio is clipped below at 1 - this (GSPO paper: 3e-4)."""
    gspo_clip_ratio_high: float = 4e-4
    """gspo: the sequence ratio is clipped above at 1 + this (GSPO paper: 4e-4)."""
    cispo_clip_ratio_low: float = 1.0
    """cispo: IS weight truncated below at 1 - this; 1.0 = no lower bound, as in MiniMax-M1."""
    cispo_clip_ratio_high: float = 0.28
    """cispo: IS weight truncated above at 1 + this (MiniMax-M1 tunes only this bound)."""
    loss_agg_mode: str = "token-mean"
    """token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm (see aggregate_loss)."""
    use_kl_loss: bool = False
    """Add kl_loss_coef * KL(policy || ref) to the actor loss (GRPO style); needs the reference model."""
    kl_loss_coef: float = 0.001
    """Weight of the KL loss term."""
    kl_loss_type: str = "k3"
    """KL estimator for the loss: k1 | k2 | k3 | abs (k3 = verl's low_var_kl)."""
    use_kl_in_reward: bool = False
    """Subtract kl_ctrl.kl_coef * KL from the token rewards before advantages (PPO/RLHF style); needs the ref."""
    kl_penalty: str = "k1"
    """KL estimator for the in-reward penalty: k1 | k2 | k3 | abs."""
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    """Coefficient schedule for the in-reward KL penalty."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus (loss -= entropy_coeff * entropy); 0 disables it."""
    cliprange_value: float = 0.5
    """Critic: new values are clipped to old_values +- this before the squared error (PPO value clipping)."""
    rollout_is: str | None = None
    """Truncated importance sampling vs the rollout engine's log-probs: None | token | sequence."""
    rollout_is_threshold: float = 2.0
    """Upper truncation of the rollout IS weight (TIS uses 2)."""
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    """DAPO dynamic sampling."""
    overlong: OverlongConfig = field(default_factory=OverlongConfig)
    """DAPO soft overlong punishment."""
    plugin_modules: list[str] = field(default_factory=list)
    """Dotted modules imported before validation (and in each worker) to register user estimators / losses."""

    def needs_critic(self) -> bool:
        """Whether this algorithm needs a value model (only GAE uses values)."""
        return self.advantage == "gae"

    def needs_ref(self) -> bool:
        """Whether reference log-probs are needed (a KL term is on)."""
        return self.use_kl_loss or self.use_kl_in_reward

    def validate(self) -> None:
        """Check every field; raise ValueError naming the first bad key (`algorithm.<key>=<value> ...`).

        Imports `plugin_modules` first, so user-registered names are known.
        """
        load_plugin_modules(self.plugin_modules)
        _check_choice("advantage", self.advantage, sorted(ADVANTAGE_ESTIMATORS), "is not registered")
        _check_choice("policy_loss", self.policy_loss, sorted(POLICY_LOSSES), "is not registered")
        _check_choice("loss_agg_mode", self.loss_agg_mode, list(LOSS_AGG_MODES))
        _check_choice("kl_loss_type", self.kl_loss_type, list(KL_ESTIMATORS))
        _check_choice("kl_penalty", self.kl_penalty, list(KL_ESTIMATORS))
        _check_choice("kl_ctrl.type", self.kl_ctrl.type, list(KL_CONTROLLER_TYPES))
        _check_choice("rollout_is", self.rollout_is, [None, *ROLLOUT_IS_LEVELS])

        _check_range("gamma", self.gamma, 0.0, 1.0)
        _check_range("lam", self.lam, 0.0, 1.0)
        _check_range("clip_ratio_low", self.clip_ratio_low, 0.0, 1.0)
        _check_range("gspo_clip_ratio_low", self.gspo_clip_ratio_low, 0.0, 1.0)
        _check_range("cispo_clip_ratio_low", self.cispo_clip_ratio_low, 0.0, 1.0)
        for key in ("clip_ratio_high", "gspo_clip_ratio_high", "cispo_clip_ratio_high", "kl_loss_coef"):
            _check_range(key, getattr(self, key), 0.0, math.inf)
        _check_range("kl_ctrl.kl_coef", self.kl_ctrl.kl_coef, 0.0, math.inf)
        if not (self.clip_ratio_c == 0 or self.clip_ratio_c > 1):
            raise ValueError(
                f"algorithm.clip_ratio_c={self.clip_ratio_c} must be > 1 (the dual-clip bound) or 0 to disable it"
            )
        _check_positive("kl_ctrl.target_kl", self.kl_ctrl.target_kl)
        _check_positive("kl_ctrl.horizon", self.kl_ctrl.horizon)
        _check_positive("cliprange_value", self.cliprange_value)
        _check_positive("rollout_is_threshold", self.rollout_is_threshold)
        if not math.isfinite(self.entropy_coeff):
            raise ValueError(f"algorithm.entropy_coeff={self.entropy_coeff} must be a finite number")
        _check_range("dynamic_sampling.max_num_gen_batches", self.dynamic_sampling.max_num_gen_batches, 0, math.inf)
        _check_positive("overlong.buffer_len", self.overlong.buffer_len)
        _check_range("overlong.penalty_factor", self.overlong.penalty_factor, 0.0, math.inf)


def _check_choice(key: str, value: object, choices: list, verb: str = "is not valid") -> None:
    if value not in choices:
        raise ValueError(f"algorithm.{key}={value!r} {verb}; choose one of {choices}")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ValueError(f"algorithm.{key}={value} must be in [{low}, {high}]")


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"algorithm.{key}={value} must be > 0")
