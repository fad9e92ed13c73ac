"""The `algorithm:` section of the config: one typed home for every RL-algorithm default, and its validation.

Field names follow verl where verl has one. Choices are `Literal`s and numeric bounds `Range`s (`rlhf.schema`), so
`validate()` checks every field generically and errors name the full key (`algorithm.clip_ratio_c=0.5 ...`);
registry names (estimators, policy losses) are checked against the registries, which plugins can extend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, load_plugin_modules
from rlhf.schema import ConfigError, Range, check_fields

KLEstimator = Literal["k1", "k2", "k3", "abs"]
LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
UNIT = Range(ge=0.0, le=1.0)
NON_NEGATIVE = Range(ge=0.0)
POSITIVE = Range(gt=0.0)


@dataclass
class KLControlConfig:
    """Coefficient of the KL penalty folded into the rewards (`use_kl_in_reward`)."""

    type: Literal["fixed", "adaptive"] = "fixed"
    """fixed: constant kl_coef; adaptive: Ziegler et al. 2019 proportional controller towards target_kl."""
    kl_coef: Annotated[float, NON_NEGATIVE] = 0.001
    """Initial (fixed: constant) coefficient beta in r_t = score_t - beta * KL_t."""
    target_kl: Annotated[float, POSITIVE] = 0.1
    """adaptive only: the per-token KL the controller steers towards."""
    horizon: Annotated[int, Range(ge=1)] = 10000
    """adaptive only: samples over which the coefficient moves by the clipped error (larger = slower)."""


@dataclass
class DynamicSamplingConfig:
    """DAPO dynamic sampling (Yu et al. 2025): drop prompt groups whose rewards all agree, generate more."""

    enable: bool = False
    """Filter out groups with zero reward variance (they give zero GRPO advantage) and refill the batch."""
    max_num_gen_batches: Annotated[int, Range(ge=0)] = 10
    """Give up after this many generation rounds per step; 0 means no limit (verl's convention)."""


@dataclass
class OverlongConfig:
    """DAPO soft overlong punishment (Yu et al. 2025): a length penalty added to the score near the length limit."""

    enable: bool = False
    """Add `overlong_reward_penalty` to each response's score."""
    buffer_len: Annotated[int, Range(ge=1)] = 4096
    """Length of the penalty ramp before rollout.max_response_length (the paper's L_cache = 4096)."""
    penalty_factor: Annotated[float, NON_NEGATIVE] = 1.0
    """Penalty at the maximum length (the ramp goes from 0 down to -penalty_factor)."""


@dataclass
class AlgorithmConfig:
    """Which advantage estimator, policy loss and regularisers the RL step uses (the `algorithm:` config section)."""

    advantage: str = "grpo"
    """Advantage estimator, a registry name: gae | grpo | drgrpo | rloo | reinforce_pp | reinforce_pp_baseline | remax."""
    gamma: Annotated[float, UNIT] = 1.0
    """Discount factor over response tokens (gae, reinforce_pp); 1.0 = undiscounted, usual for LLMs."""
    lam: Annotated[float, UNIT] = 1.0
    """GAE lambda (gae only); 1.0 = Monte-Carlo returns minus values."""
    norm_adv_by_std: bool = True
    """grpo: divide the group-centred score by the group std (False gives Dr.GRPO's numerator)."""
    policy_loss: str = "ppo"
    """Policy loss, a registry name: ppo | gspo | cispo."""
    clip_ratio_low: Annotated[float, UNIT] = 0.2
    """ppo: ratio clipped below at 1 - clip_ratio_low."""
    clip_ratio_high: Annotated[float, NON_NEGATIVE] = 0.2
    """ppo: ratio clipped above at 1 + clip_ratio_high; larger than low = DAPO clip-higher (0.28)."""
    clip_ratio_c: Annotated[float, NON_NEGATIVE] = 3.0
    """ppo dual-clip bound c > 1 for negative advantages (Ye et al. 2020); 0 disables dual-clip."""
    gspo_clip_ratio_low: Annotated[float, UNIT] = 3e-4
    """gspo: the sequence ratio is clipped below at 1 - this (GSPO paper: 3e-4)."""
    gspo_clip_ratio_high: Annotated[float, NON_NEGATIVE] = 4e-4
    """gspo: the sequence ratio is clipped above at 1 + this (GSPO paper: 4e-4)."""
    cispo_clip_ratio_low: Annotated[float, UNIT] = 1.0
    """cispo: IS weight truncated below at 1 - this; 1.0 = no lower bound, as in MiniMax-M1."""
    cispo_clip_ratio_high: Annotated[float, NON_NEGATIVE] = 0.28
    """cispo: IS weight truncated above at 1 + this (MiniMax-M1 tunes only this bound)."""
    loss_agg_mode: LossAggMode = "token-mean"
    """token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm (see aggregate_loss)."""
    use_kl_loss: bool = False
    """Add kl_loss_coef * KL(policy || ref) to the actor loss (GRPO style); needs the reference model."""
    kl_loss_coef: Annotated[float, NON_NEGATIVE] = 0.001
    """Weight of the KL loss term."""
    kl_loss_type: KLEstimator = "k3"
    """KL estimator for the loss: k1 | k2 | k3 | abs (k3 = verl's low_var_kl)."""
    use_kl_in_reward: bool = False
    """Subtract kl_ctrl.kl_coef * KL from the token rewards before advantages (PPO/RLHF style); needs the ref."""
    kl_penalty: KLEstimator = "k1"
    """KL estimator for the in-reward penalty: k1 | k2 | k3 | abs."""
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    """Coefficient schedule for the in-reward KL penalty."""
    entropy_coeff: Annotated[float, Range()] = 0.0
    """Weight of the entropy bonus (loss -= entropy_coeff * entropy); 0 disables it."""
    cliprange_value: Annotated[float, POSITIVE] = 0.5
    """Critic: new values are clipped to old_values +- this before the squared error (PPO value clipping)."""
    rollout_is: Literal["token", "sequence"] | None = None
    """Truncated importance sampling vs the rollout engine's log-probs: None | token | sequence."""
    rollout_is_threshold: Annotated[float, POSITIVE] = 2.0
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
        """Check every field; raise ConfigError naming the first bad key (`algorithm.<key>=<value> ...`).

        Imports `plugin_modules` first, so user-registered names are known.
        """
        try:
            load_plugin_modules(self.plugin_modules)
        except ValueError as e:  # its message already names algorithm.plugin_modules
            raise ConfigError(str(e)) from e
        check_fields(self, "algorithm.")
        for key, value, registry in (
            ("advantage", self.advantage, ADVANTAGE_ESTIMATORS),
            ("policy_loss", self.policy_loss, POLICY_LOSSES),
        ):
            if value not in registry:
                raise ConfigError(f"algorithm.{key}={value!r} is not registered; choose one of {sorted(registry)}")
        if not (self.clip_ratio_c == 0 or self.clip_ratio_c > 1):
            raise ConfigError(
                f"algorithm.clip_ratio_c={self.clip_ratio_c} must be > 1 (the dual-clip bound) or 0 to disable it"
            )
