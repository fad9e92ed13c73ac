"""Validation of the typed RL config, once, in the driver, before any worker starts (`validate`).

It checks every field's declared domain (`Literal` choices, `Range`s) and what types cannot express: batch sizes
that divide, paths that exist, lengths that fit the model's context, options that need one another, and user code
(reward functions, agent tools) that loads. Every error is a ConfigError naming the key, the value received and what
would be valid. The helpers shared with the SFT config (`rlhf.sft_config`) live here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlhf.agent.config import AgentConfig, validate_agent_config
from rlhf.agent.runtime import resolve_plugins
from rlhf.async_config import check_async_training
from rlhf.config import RLHFConfig, TrainerConfig
from rlhf.lora_config import VLLM_LORA_RANKS, check_lora, model_config_for
from rlhf.models.tiny import TinyModelSpec
from rlhf.packing import validate_token_budget
from rlhf.rewards.registry import load_reward_fn
from rlhf.schema import ConfigError, check_fields


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`."""
    if not ok:
        raise ConfigError(message)


def model_config_value(model_path: str, key: str) -> int | None:
    """`key` from the model's config.json, or None if the file (or the key) is not there yet."""
    config_file = Path(model_path) / "config.json"
    if not config_file.exists():
        return None
    return json.loads(config_file.read_text()).get(key)


def model_context_length(model_path: str) -> int | None:
    """max_position_embeddings from the model's config.json, or None if it is not there yet."""
    return model_config_value(model_path, "max_position_embeddings")


def check_run_names(trainer: TrainerConfig) -> None:
    """Run names become folder names under trainer.output_dir: refuse anything that would write elsewhere."""
    for key in ("project_name", "experiment_name"):
        name = getattr(trainer, key)
        require(
            bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and ".." not in name,
            f"trainer.{key}={name!r} must be a plain name: no path separators and no '..' (it becomes a folder "
            f"under trainer.output_dir={trainer.output_dir!r})",
        )


def check_offload(section: str, zero_stage: int, offload_params: bool, offload_optimizer: bool) -> None:
    """DeepSpeed offloads parameters only under ZeRO-3 and optimizer state only under ZeRO >= 1."""
    require(
        not offload_params or zero_stage == 3,
        f"{section}.offload_params=true needs {section}.zero_stage=3 (got {section}.zero_stage={zero_stage}): only "
        "ZeRO-3 partitions the parameters it offloads",
    )
    require(
        not offload_optimizer or zero_stage >= 1,
        f"{section}.offload_optimizer=true needs {section}.zero_stage >= 1 (got {section}.zero_stage={zero_stage})",
    )


def check_cluster_layout(trainer: TrainerConfig) -> None:
    """Several nodes need a Ray cluster to join: a local instance has exactly one node."""
    address = trainer.ray_address or os.environ.get("RAY_ADDRESS")
    require(
        trainer.nnodes == 1 or bool(address),
        f"trainer.nnodes={trainer.nnodes} needs a Ray cluster with that many nodes, but neither trainer.ray_address "
        "nor RAY_ADDRESS is set, and the local Ray instance a run starts has 1 node (see docs/cluster.md)",
    )


def validate(cfg: RLHFConfig) -> None:
    """Check everything that can be checked in the driver, in seconds, before any worker starts.

    Raises:
        ValueError: naming the config key, the value received and what would be valid.
    """
    check_fields(cfg)
    check_run_names(cfg.trainer)
    a, rw = cfg.actor, cfg.reward
    check_offload("actor", a.zero_stage, a.offload_params, a.offload_optimizer)
    check_offload("critic", cfg.critic.zero_stage, cfg.critic.offload_params, cfg.critic.offload_optimizer)
    check_cluster_layout(cfg.trainer)
    _validate_tensor_parallel(cfg)
    has_env_reward = cfg.agent.enable and cfg.agent.env_reward_weight != 0
    require(
        rw.rule_weight > 0 or rw.model_path is not None or has_env_reward,
        "reward.rule_weight=0, no reward.model_path and no environment reward (agent.enable with "
        "agent.env_reward_weight != 0): nothing would score the responses",
    )
    _validate_batch_sizes(cfg)
    longest = cfg.data.max_prompt_length + cfg.rollout.max_response_length
    for key, budget in (
        ("actor.max_tokens_per_micro_batch", a.max_tokens_per_micro_batch),
        ("ref.max_tokens_per_micro_batch", cfg.ref.max_tokens_per_micro_batch),
        ("critic.max_tokens_per_micro_batch", cfg.critic.max_tokens_per_micro_batch),
    ):
        try:
            validate_token_budget(key, budget, longest)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    _validate_paths(cfg)
    if a.lora.enabled:
        _validate_lora(cfg)
    cfg.algorithm.validate()
    check_async_training(cfg)  # after the algorithm: its plugins may register on-policy-only estimators
    _validate_agent(cfg.agent)
    if rw.function is not None:
        # User code is resolved here, in the driver, so a wrong path fails in seconds instead of inside a worker.
        try:
            load_reward_fn(rw.function)
        except ValueError as e:
            raise ConfigError(f"reward.function={rw.function!r}: {e}") from e


def _validate_lora(cfg: RLHFConfig) -> None:
    lora = cfg.actor.lora
    check_lora(
        lora,
        "actor.lora",
        cfg.actor.zero_stage,
        "actor.zero_stage",
        model_config_for(cfg.model.path, cfg.model.build_tiny),
    )
    require(
        lora.sync != "adapter" or lora.rank <= VLLM_LORA_RANKS[-1],
        f"actor.lora.sync=adapter with actor.lora.rank={lora.rank}: vLLM's LoRA holds ranks up to "
        f"{VLLM_LORA_RANKS[-1]}; set actor.lora.sync=merged (or auto)",
    )


def _validate_agent(agent: AgentConfig) -> None:
    """agent.* checks; with the agent on, its tools, parser and environment are loaded here, in the driver, so a
    missing tool file or a tool without docstring or type hints fails in seconds naming agent.tools[i]."""
    if not agent.enable:
        validate_agent_config(agent)
        return
    try:
        resolve_plugins(agent)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _validate_batch_sizes(cfg: RLHFConfig) -> None:
    t, a, r, d = cfg.trainer, cfg.actor, cfg.rollout, cfg.data
    world = t.nnodes * t.num_devices_per_node
    require(
        d.train_batch_size % world == 0,
        f"data.train_batch_size={d.train_batch_size} must be divisible by the number of actor ranks "
        f"(trainer.nnodes x trainer.num_devices_per_node = {world})",
    )
    require(
        d.train_batch_size % a.ppo_mini_batch_size == 0,
        f"data.train_batch_size={d.train_batch_size} must be divisible by actor.ppo_mini_batch_size={a.ppo_mini_batch_size}",
    )
    mini_seqs = a.ppo_mini_batch_size * r.n
    require(
        mini_seqs % world == 0,
        f"actor.ppo_mini_batch_size x rollout.n = {mini_seqs} sequences must be divisible by {world} actor ranks",
    )
    per_rank = mini_seqs // world
    require(
        per_rank % a.micro_batch_size_per_device == 0,
        f"actor.micro_batch_size_per_device={a.micro_batch_size_per_device} must divide the {per_rank} sequences "
        f"of a mini-batch on each rank (actor.ppo_mini_batch_size={a.ppo_mini_batch_size} x rollout.n={r.n} / {world} ranks)",
    )
    if cfg.algorithm.needs_critic():
        c = cfg.critic.micro_batch_size_per_device
        require(
            per_rank % c == 0,
            f"critic.micro_batch_size_per_device={c} must divide the {per_rank} sequences of a mini-batch on each rank",
        )
    if cfg.algorithm.overlong.enable:
        require(
            cfg.algorithm.overlong.buffer_len <= r.max_response_length,
            f"algorithm.overlong.buffer_len={cfg.algorithm.overlong.buffer_len} must be <= "
            f"rollout.max_response_length={r.max_response_length}",
        )


def _validate_tensor_parallel(cfg: RLHFConfig) -> None:
    tp, t = cfg.rollout.tensor_parallel_size, cfg.trainer
    require(
        t.num_devices_per_node % tp == 0,
        f"rollout.tensor_parallel_size={tp} must divide trainer.num_devices_per_node={t.num_devices_per_node}: "
        "the ranks of one vLLM engine sit on one node",
    )
    heads = model_config_value(cfg.model.path, "num_attention_heads")
    require(
        heads is None or heads % tp == 0,
        f"rollout.tensor_parallel_size={tp} must divide the model's {heads} attention heads "
        f"(num_attention_heads in {cfg.model.path}/config.json)",
    )
    require(
        tp == 1 or not cfg.agent.enable,
        f"agent.enable=true with rollout.tensor_parallel_size={tp}: multi-turn episodes run on one-rank engines "
        "for now; set rollout.tensor_parallel_size=1",
    )


def missing_path_hint(path: str) -> str:
    """Extra advice when a relative path is missing inside a Ray job that runs in its uploaded working directory."""
    submit_dir = os.environ.get("RLHF_SUBMIT_DIR")
    if Path(path).is_absolute() or not submit_dir or Path.cwd().resolve() == Path(submit_dir).resolve():
        return ""
    return (
        f"; this Ray job runs in its uploaded working directory {Path.cwd()} (scripts/submit.sh leaves models/, data/ "
        f"and outputs/ out) because the head node cannot see {submit_dir}: put models and data on storage every node "
        "sees and pass absolute paths"
    )


def _validate_paths(cfg: RLHFConfig) -> None:
    m, d, r = cfg.model, cfg.data, cfg.rollout
    if not m.build_tiny:
        require(
            Path(m.path).is_dir(),
            f"model.path={m.path!r} does not exist (set model.build_tiny=true to build the local tiny model there)"
            + missing_path_hint(m.path),
        )
    for key, path in (("critic.model_path", cfg.critic.model_path), ("reward.model_path", cfg.reward.model_path)):
        require(path is None or Path(path).is_dir(), f"{key}={path!r} does not exist" + missing_path_hint(path or ""))
    for key, files in (("data.train_files", d.train_files), ("data.val_files", d.val_files)):
        for f in files:
            require(os.path.isfile(f), f"{key}: file {f!r} does not exist" + missing_path_hint(f))
    context = model_context_length(m.path)
    if context is None and m.build_tiny:
        context = TinyModelSpec().max_position_embeddings
    if context is not None:
        total = d.max_prompt_length + r.max_response_length
        require(
            total <= context,
            f"data.max_prompt_length + rollout.max_response_length = {d.max_prompt_length} + "
            f"{r.max_response_length} = {total} exceeds the model's context of {context} tokens "
            f"(max_position_embeddings in {m.path}/config.json)",
        )
