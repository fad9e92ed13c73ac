"""Write docs/config.md: every config key with its domain, default, description and verl's key for the same setting.

    python scripts/config_docs.py            # rewrite docs/config.md from the schema (tests check it is current)

Descriptions come from the docstring under each field of `rlhf/config.py` (`rlhf/algorithms/config.py`), so the
table cannot drift from the code; only the verl column is kept here by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rlhf.config import RLHFConfig
from rlhf.schema import field_docs, literal_choices, unwrap, walk_fields

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"

# Our key -> verl's key for the same setting ("" where verl has no such key).
VERL = {
    "model.path": "actor_rollout_ref.model.path",
    "model.dtype": "actor_rollout_ref.rollout.dtype (+ FSDP mixed_precision)",
    "model.gradient_checkpointing": "actor_rollout_ref.model.enable_gradient_checkpointing",
    "actor.optim.lr": "actor_rollout_ref.actor.optim.lr",
    "actor.optim.weight_decay": "actor_rollout_ref.actor.optim.weight_decay",
    "actor.optim.betas": "actor_rollout_ref.actor.optim.betas",
    "actor.optim.warmup_steps": "actor_rollout_ref.actor.optim.lr_warmup_steps",
    "actor.optim.lr_schedule": "actor_rollout_ref.actor.optim.warmup_style",
    "actor.optim.min_lr_ratio": "actor_rollout_ref.actor.optim.min_lr_ratio",
    "actor.optim.grad_clip": "actor_rollout_ref.actor.grad_clip",
    "actor.ppo_mini_batch_size": "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor.micro_batch_size_per_device": "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor.max_tokens_per_micro_batch": "actor_rollout_ref.actor.ppo_max_token_len_per_gpu (use_dynamic_bsz=True)",
    "actor.ppo_epochs": "actor_rollout_ref.actor.ppo_epochs",
    "actor.shuffle": "actor_rollout_ref.actor.shuffle",
    "actor.log_prob_micro_batch_size": "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
    "actor.lora.rank": "actor_rollout_ref.model.lora_rank",
    "actor.lora.alpha": "actor_rollout_ref.model.lora_alpha",
    "actor.lora.target_modules": "actor_rollout_ref.model.target_modules",
    "actor.offload_params": "actor_rollout_ref.actor.fsdp_config.param_offload",
    "actor.offload_optimizer": "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
    "critic.offload_params": "critic.model.fsdp_config.param_offload",
    "critic.offload_optimizer": "critic.model.fsdp_config.optimizer_offload",
    "ref.log_prob_micro_batch_size": "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "rollout.n": "actor_rollout_ref.rollout.n",
    "rollout.temperature": "actor_rollout_ref.rollout.temperature",
    "rollout.top_p": "actor_rollout_ref.rollout.top_p",
    "rollout.max_response_length": "data.max_response_length",
    "rollout.gpu_memory_utilization": "actor_rollout_ref.rollout.gpu_memory_utilization",
    "rollout.enforce_eager": "actor_rollout_ref.rollout.enforce_eager",
    "rollout.free_cache_engine": "actor_rollout_ref.rollout.free_cache_engine",
    "rollout.tensor_parallel_size": "actor_rollout_ref.rollout.tensor_model_parallel_size",
    "critic.model_path": "critic.model.path",
    "critic.optim.lr": "critic.optim.lr",
    "critic.micro_batch_size_per_device": "critic.ppo_micro_batch_size_per_gpu",
    "critic.ppo_epochs": "critic.ppo_epochs",
    "critic.warmup_steps": "trainer.critic_warmup",
    "reward.function": "custom_reward_function.path + custom_reward_function.name",
    "reward.model_path": "reward_model.model.path",
    "reward.rm_micro_batch_size": "reward_model.micro_batch_size_per_gpu",
    "data.train_files": "data.train_files",
    "data.val_files": "data.val_files",
    "data.prompt_key": "data.prompt_key",
    "data.train_batch_size": "data.train_batch_size",
    "data.val_batch_size": "data.val_batch_size",
    "data.max_prompt_length": "data.max_prompt_length",
    "data.shuffle": "data.shuffle",
    "algorithm.advantage": "algorithm.adv_estimator",
    "algorithm.gamma": "algorithm.gamma",
    "algorithm.lam": "algorithm.lam",
    "algorithm.norm_adv_by_std": "algorithm.norm_adv_by_std_in_grpo",
    "algorithm.policy_loss": "actor_rollout_ref.actor.policy_loss.loss_mode",
    "algorithm.clip_ratio_low": "actor_rollout_ref.actor.clip_ratio_low",
    "algorithm.clip_ratio_high": "actor_rollout_ref.actor.clip_ratio_high",
    "algorithm.clip_ratio_c": "actor_rollout_ref.actor.clip_ratio_c",
    "algorithm.loss_agg_mode": "actor_rollout_ref.actor.loss_agg_mode",
    "algorithm.use_kl_loss": "actor_rollout_ref.actor.use_kl_loss",
    "algorithm.kl_loss_coef": "actor_rollout_ref.actor.kl_loss_coef",
    "algorithm.kl_loss_type": "actor_rollout_ref.actor.kl_loss_type",
    "algorithm.use_kl_in_reward": "algorithm.use_kl_in_reward",
    "algorithm.kl_penalty": "algorithm.kl_penalty",
    "algorithm.kl_ctrl.type": "algorithm.kl_ctrl.type",
    "algorithm.kl_ctrl.kl_coef": "algorithm.kl_ctrl.kl_coef",
    "algorithm.kl_ctrl.target_kl": "algorithm.kl_ctrl.target_kl",
    "algorithm.kl_ctrl.horizon": "algorithm.kl_ctrl.horizon",
    "algorithm.entropy_coeff": "actor_rollout_ref.actor.entropy_coeff",
    "algorithm.cliprange_value": "critic.cliprange_value",
    "algorithm.rollout_is": "algorithm.rollout_correction.rollout_is",
    "algorithm.rollout_is_threshold": "algorithm.rollout_correction.rollout_is_threshold",
    "algorithm.dynamic_sampling.enable": "algorithm.filter_groups.enable",
    "algorithm.dynamic_sampling.max_num_gen_batches": "algorithm.filter_groups.max_num_gen_batches",
    "algorithm.overlong.enable": "reward_model.overlong_buffer.enable",
    "algorithm.overlong.buffer_len": "reward_model.overlong_buffer.len",
    "algorithm.overlong.penalty_factor": "reward_model.overlong_buffer.penalty_factor",
    "agent.enable": "actor_rollout_ref.rollout.multi_turn.enable",
    "agent.max_turns": "actor_rollout_ref.rollout.multi_turn.max_assistant_turns",
    "agent.tools": "actor_rollout_ref.rollout.multi_turn.tool_config_path (a file listing the tools)",
    "agent.tool_parser": "actor_rollout_ref.rollout.multi_turn.format",
    "agent.max_tool_calls_per_turn": "actor_rollout_ref.rollout.multi_turn.max_parallel_calls",
    "agent.tool_max_output_chars": "actor_rollout_ref.rollout.multi_turn.max_tool_response_length",
    "trainer.project_name": "trainer.project_name",
    "trainer.experiment_name": "trainer.experiment_name",
    "trainer.total_steps": "trainer.total_training_steps",
    "trainer.device": "trainer.device",
    "trainer.nnodes": "trainer.nnodes",
    "trainer.num_devices_per_node": "trainer.n_gpus_per_node",
    "trainer.logger": "trainer.logger",
    "trainer.output_dir": "trainer.default_local_dir",
    "trainer.test_freq": "trainer.test_freq",
    "trainer.val_num_samples": "actor_rollout_ref.rollout.val_kwargs.n",
    "trainer.val_before_train": "trainer.val_before_train",
    "trainer.save_freq": "trainer.save_freq",
    "trainer.keep_last": "trainer.max_actor_ckpt_to_keep",
    "trainer.resume": "trainer.resume_mode (+ resume_from_path)",
    "trainer.seed": "data.seed",
}


def domain(hint: Any) -> str:
    ft = unwrap(hint)
    bare = ft.bare
    if (choices := literal_choices(bare)) is not None:
        text = " \\| ".join(str(c) for c in choices)
    elif getattr(bare, "__origin__", None) is list:
        item = unwrap(bare.__args__[0])
        inner = literal_choices(item.bare)
        text = "list of " + (" \\| ".join(map(str, inner)) if inner else item.bare.__name__)
        if item.range is not None:
            text += f" ({item.range.describe()})"
    elif getattr(bare, "__origin__", None) is dict:
        key_type, value_type = bare.__args__
        text = f"mapping {key_type.__name__} -> {value_type.__name__}"
    else:
        text = getattr(bare, "__name__", str(bare))
        if ft.range is not None:
            text += f", {ft.range.describe()}"
    if ft.one_or_many:
        text += " (or one string)"
    return text + (" or null" if ft.optional else "")


def default_of(key: str) -> str:
    value: Any = RLHFConfig()
    for part in key.split("."):
        value = getattr(value, part)
    if value is None:
        return "null"
    # Newlines and pipes would break the table row: show them escaped, as they are written in YAML.
    return str(value).replace("\n", "\\n").replace("|", "\\|")


def render() -> str:
    lines = [
        "# Configuration keys",
        "",
        "Generated by `python scripts/config_docs.py` from the schema in `rlhf/config.py` (descriptions are the",
        "docstrings under each field; a test fails when this file is out of date). Every key is checked at start-up",
        "against its domain, naming the key. The last column is verl's key for the same setting, for users moving",
        "a recipe over.",
        "",
        "| key | domain | default | what it does | verl |",
        "|---|---|---|---|---|",
    ]
    for key, owner, name, hint in walk_fields(RLHFConfig):
        doc = field_docs(owner).get(name, "").replace("|", "\\|")
        verl = VERL.get(key, "")
        lines.append(f"| `{key}` | {domain(hint)} | `{default_of(key)}` | {doc} | {f'`{verl}`' if verl else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        raise SystemExit(0 if OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")  # noqa: T201 (a script's output)


if __name__ == "__main__":
    main()
