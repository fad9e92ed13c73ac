"""Controllers for the coefficient of the in-reward KL penalty: fixed, or adaptive towards a target KL.

Adaptive control is from Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019,
arXiv:1909.08593), section 2.2. The controller is runtime state (checkpointed), not config.
"""

from __future__ import annotations

from rlhf.algorithms.config import KLControlConfig

# Ziegler et al. clip the proportional error so one noisy batch moves the coefficient by at most 20% of n/horizon.
_MAX_PROPORTIONAL_ERROR = 0.2


class FixedKLController:
    """A constant coefficient; `update` is a no-op."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (kept so callers treat both controllers alike)."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)  (Ziegler et al. 2019).

    Args:
        init_kl_coef: starting beta.
        target_kl: the KL (per token, as measured by `apply_kl_penalty`) to steer towards.
        horizon: number of samples over which beta can change by the full clipped error.
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL control needs target_kl > 0 and horizon > 0, got {target_kl}, {horizon}")
        self.value = float(init_kl_coef)
        self.target_kl = float(target_kl)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta after a batch of `n_steps` samples whose mean KL was `current_kl`."""
        proportional_error = current_kl / self.target_kl - 1.0
        proportional_error = min(max(proportional_error, -_MAX_PROPORTIONAL_ERROR), _MAX_PROPORTIONAL_ERROR)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(cfg: KLControlConfig) -> KLController:
    """The controller `algorithm.kl_ctrl` describes."""
    if cfg.type == "fixed":
        return FixedKLController(cfg.kl_coef)
    if cfg.type == "adaptive":
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.horizon)
    raise ValueError(f"algorithm.kl_ctrl.type={cfg.type!r} is not valid; choose one of ['fixed', 'adaptive']")
