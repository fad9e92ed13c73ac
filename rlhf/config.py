"""Typed configuration: the one home of every key, its default, its domain and a line saying what it does.

Hydra composes the recipe YAML over a plain mirror of these dataclasses (registered as `rlhf_schema`, see
`rlhf.schema`) and `to_typed` builds them (unknown keys fail however they were written). `rlhf.config_checks.validate`
then checks, in the driver and before any worker starts, every field's declared domain and what types cannot express.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf.agent.config import AgentConfig
from rlhf.algorithms.config import AlgorithmConfig
from rlhf.async_config import AsyncTrainingConfig
from rlhf.lora_config import ActorLoRAConfig
from rlhf.schema import OneOrMany, Range, build, hydra_schema

POSITIVE_INT = Range(ge=1)
COUNT = Range(ge=0)
POSITIVE = Range(gt=0)
FRACTION = Range(gt=0, le=1)
Dtype = Literal["float32", "bfloat16"]
ZeroStage = Literal[0, 1, 2, 3]
KernelBackend = Literal["auto", "torch", "triton", "naive"]
OptimizerName = Literal["AdamW", "Adam", "SGD", "Adagrad", "RMSprop"]


@dataclass
class ModelConfig:
    """The policy model (actor, rollout and reference all start from it)."""

    path: str = "models/tiny-qwen2"
    """Hugging Face model folder; with build_tiny the local tiny model is built there when missing."""
    build_tiny: bool = False
    """Build the local tiny model (character tokenizer + small Qwen2) at `path` if it is not there; no hub needed."""
    dtype: Dtype = "float32"
    """Weights for training and rollout: float32, or bfloat16 (DeepSpeed keeps fp32 master weights)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory for big models, about a third more compute."""
    padding_free: Literal["auto", "off", "trim", "pack"] = "auto"
    """Training-side forwards without padding: pack (one row, restarted positions, varlen attention), trim (rows cut
    to their micro-batch's longest sequence) or off; auto packs with flash-attention or sdpa (run once per sequence),
    and trims with eager / flex attention."""


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule of one trained model (DeepSpeed builds it)."""

    name: OptimizerName = "AdamW"
    """Optimizer: AdamW and Adam use torch's implementation inside DeepSpeed; the others are torch.optim classes."""
    lr: Annotated[float, POSITIVE] = 1e-6
    """Peak learning rate (verl's GRPO default; the tiny recipes raise it)."""
    weight_decay: Annotated[float, COUNT] = 0.0
    """Decoupled weight decay (AdamW) or L2 penalty (the others)."""
    betas: list[Annotated[float, Range(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's (beta1, beta2) moment decay rates."""
    warmup_steps: Annotated[int, COUNT] = 0
    """Linear learning-rate warm-up from 0 over this many optimizer steps (0: none)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After the warm-up: keep the peak lr (constant), or decay it along a half cosine to min_lr_ratio x lr at the
    run's last optimizer step (cosine)."""
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.0
    """cosine: the final learning rate as a fraction of the peak."""
    grad_clip: Annotated[float, COUNT] = 1.0
    """Clip the global gradient norm to this (0 disables clipping)."""


@dataclass
class WorkerResources:
    """Ray resources that each worker of one role reserves (bundles are laid out per node, see docs/cluster.md)."""

    num_cpus: Annotated[float, COUNT] = 1.0
    """CPU cores per worker (on CPU the critic and reward model share the policy's bundles and reserve none)."""
    num_gpus: Annotated[float, COUNT] = 1.0
    """CUDA only: GPUs per worker."""
    memory_gb: Annotated[float, COUNT] = 0.0
    """RAM per worker reserved through Ray's `memory` resource, so Ray places it only where that much is free (0: none)."""


@dataclass
class RuntimeEnvConfig:
    """What Ray sets up in every worker process before it starts (Ray's runtime_env)."""

    pip: list[str] = field(default_factory=list)
    """Extra pip requirements installed by Ray into each worker's environment (e.g. ["liger-kernel==0.6.4"])."""
    env_vars: dict[str, str] = field(default_factory=dict)
    """Environment variables for every worker (applied after the ones this framework sets, so they win)."""


@dataclass
class ActorConfig:
    """Policy training: PPO-style epochs over mini-batches, gradient accumulation over micro-batches."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """The actor's optimizer."""
    ppo_mini_batch_size: Annotated[int, POSITIVE_INT] = 8
    """Prompts per optimizer step (x rollout.n sequences), global over ranks."""
    micro_batch_size_per_device: Annotated[int, POSITIVE_INT] = 4
    """Sequences per forward/backward on one rank (when max_tokens_per_micro_batch is not set)."""
    max_tokens_per_micro_batch: Annotated[int, POSITIVE_INT] | None = None
    """Token budget of one forward on a rank, for the update and the old log-probs (verl's ppo_max_token_len_per_gpu);
    micro-batches then hold as many sequences as fit, the same count on every rank. None: fixed-size micro-batches."""
    balance_tokens: bool = True
    """Reorder rows before splitting them over data-parallel ranks so every rank gets nearly the same token count."""
    recompute_old_log_prob: Literal["auto", "always"] = "auto"
    """auto: when the update is exactly on-policy (one epoch, one mini-batch, no KL in the reward) the old log-probs
    come from the update's own forward, detached, instead of a separate pass; always: the separate pass."""
    ppo_epochs: Annotated[int, POSITIVE_INT] = 1
    """Passes over the rollout batch per RL step."""
    shuffle: bool = True
    """Shuffle sequences between mini-batches each epoch."""
    zero_stage: ZeroStage = 1
    """DeepSpeed ZeRO stage: 1 shards optimizer state and reduces gradients once per optimizer step; 2 also shards
    gradients, reducing them after every micro-batch; 3 also shards parameters."""
    fused_kernels: bool = True
    """Log-probs and entropy from hidden states without materialising [tokens, vocab] logits."""
    kernel_backend: KernelBackend = "auto"
    """Fused kernel backend: auto (Triton on CUDA, chunked torch on CPU), torch, triton or naive."""
    log_prob_micro_batch_size: Annotated[int, POSITIVE_INT] = 16
    """Sequences per forward when computing old log-probs."""
    lora: ActorLoRAConfig = field(default_factory=ActorLoRAConfig)
    """LoRA: train low-rank adapters on a frozen base (rank 0: full fine-tuning)."""
    offload_params: bool = False
    """DeepSpeed parameter offload: ZeRO-3's weight shards live in CPU memory between uses (needs zero_stage=3)."""
    offload_optimizer: bool = False
    """DeepSpeed optimizer offload: optimizer state and step on the CPU (needs zero_stage >= 1)."""


@dataclass
class CriticConfig:
    """The value model for PPO/GAE: a token-classification head (1 label) on the policy's architecture."""

    model_path: str | None = None
    """Value model folder; None starts from model.path with a fresh value head."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    """The critic's optimizer (critics learn faster than policies)."""
    micro_batch_size_per_device: Annotated[int, POSITIVE_INT] = 4
    """Sequences per forward/backward on one rank (when max_tokens_per_micro_batch is not set)."""
    max_tokens_per_micro_batch: Annotated[int, POSITIVE_INT] | None = None
    """Token budget of one critic forward on a rank (values and update); None: fixed-size micro-batches."""
    ppo_epochs: Annotated[int, POSITIVE_INT] = 1
    """Passes over the rollout batch per step (mini-batches follow the actor's)."""
    warmup_steps: Annotated[int, COUNT] = 0
    """First RL steps that train only the critic, leaving the actor unchanged."""
    zero_stage: ZeroStage = 1
    """DeepSpeed ZeRO stage of the critic (see actor.zero_stage)."""
    offload_params: bool = False
    """DeepSpeed parameter offload of the critic (needs critic.zero_stage=3)."""
    offload_optimizer: bool = False
    """DeepSpeed optimizer offload of the critic (needs critic.zero_stage >= 1)."""
    resources: WorkerResources = field(default_factory=WorkerResources)
    """CUDA: each critic worker's own resources (nnodes x num_devices_per_node workers, laid out like the policy);
    CPU: the critic runs in the policy's bundles between the policy's stages and reserves nothing."""


@dataclass
class RolloutConfig:
    """Generation with vLLM (in the actor's process)."""

    n: Annotated[int, POSITIVE_INT] = 4
    """Responses sampled per prompt (the GRPO group size)."""
    temperature: Annotated[float, POSITIVE] = 1.0
    """Sampling temperature, applied identically by vLLM and by the trainer's log-probs."""
    top_p: Annotated[float, FRACTION] = 1.0
    """Nucleus sampling; below 1 the trainer's and vLLM's log-probs differ by design."""
    max_response_length: Annotated[int, POSITIVE_INT] = 16
    """Tokens generated per response at most."""
    kv_cache_gb: Annotated[float, POSITIVE] = 1.0
    """CPU only: GiB of RAM for vLLM's KV cache (vLLM's kv_cache_memory_bytes; fractions allowed). vLLM allocates
    it whole, so it is resident memory: size it to the batch (a token of a Qwen2 takes 2 x layers x KV heads x head
    dim x 4 bytes in fp32). A VLLM_CPU_KVCACHE_SPACE set in the environment overrides it."""
    gpu_memory_utilization: Annotated[float, FRACTION] = 0.5
    """CUDA only: fraction of device memory vLLM may take."""
    enforce_eager: bool = True
    """Skip CUDA graph capture: faster start-up, slower decoding."""
    free_cache_engine: bool = True
    """CUDA only: vLLM sleeps (frees its KV cache and weights) while the actor trains."""
    tensor_parallel_size: Annotated[int, POSITIVE_INT] = 1
    """Actor ranks that form one vLLM engine (consecutive ranks on one node; must divide num_devices_per_node)."""


@dataclass
class RefConfig:
    """The frozen reference policy (built only when a KL term is on)."""

    log_prob_micro_batch_size: Annotated[int, POSITIVE_INT] = 16
    """Sequences per forward of the reference model (when max_tokens_per_micro_batch is not set)."""
    max_tokens_per_micro_batch: Annotated[int, POSITIVE_INT] | None = None
    """Token budget of one reference forward (verl's ref.log_prob_max_token_len_per_gpu); None: fixed-size."""


@dataclass
class RewardConfig:
    """How responses are scored: rule functions and/or a reward model."""

    function: str | None = None
    """Rule reward function "pkg.module:fn" or "path/file.py:fn"; None: the built-in one for each data_source."""
    num_workers: Annotated[int, POSITIVE_INT] = 1
    """Ray actors in the reward group."""
    num_processes: Annotated[int, COUNT] = 2
    """Processes per reward actor running the function (0: inline, without timeouts)."""
    timeout_s: Annotated[float, POSITIVE] = 10.0
    """A call running longer scores 0 and counts in reward/timeouts."""
    full_score: Annotated[float, Range()] = 1.0
    """A validation response is correct when its rule score reaches this (an `acc` the function returns wins)."""
    rule_weight: Annotated[float, COUNT] = 1.0
    """Weight of the rule-function score in the reward (0: reward model only)."""
    model_path: str | None = None
    """A sequence-classification reward model (1 label); None: rule functions only."""
    rm_weight: Annotated[float, Range()] = 1.0
    """Weight of the reward model's score in the reward."""
    rm_micro_batch_size: Annotated[int, POSITIVE_INT] = 16
    """Sequences per reward-model forward."""
    resources: WorkerResources = field(default_factory=lambda: WorkerResources(num_cpus=0.01, num_gpus=0.0))
    """Each rule-reward actor's resources (a sliver of CPU: its processes run between the policy's stages)."""
    rm_resources: WorkerResources = field(default_factory=WorkerResources)
    """CUDA: each reward-model worker's own resources (laid out like the policy); CPU: it runs in the policy's
    bundles and reserves nothing."""


@dataclass
class DataConfig:
    """Prompt datasets: verl-format parquet/jsonl files, or the built-in arithmetic task."""

    train_files: Annotated[list[str], OneOrMany()] = field(default_factory=list)
    """Training files (parquet/jsonl with verl columns); a single path or a list; empty: the built-in task."""
    val_files: Annotated[list[str], OneOrMany()] = field(default_factory=list)
    """Held-out files for validation; a single path or a list."""
    prompt_key: str = "prompt"
    """Column holding each row's chat messages."""
    builtin_task: Literal["arith", "calc", "guess_number"] = "arith"
    """Task generated when train_files is empty: arith (a+b=), calc (a*b= with the calculator tool; rows carry tool-use
    traces for SFT), guess_number (the guessing game, for agent.env=guess_number)."""
    builtin_dir: str = "data/arith"
    """Where the built-in task's files are written (train.parquet, val.parquet)."""
    builtin_num_train: Annotated[int, POSITIVE_INT] = 2000
    """Training prompts of the built-in task."""
    builtin_num_val: Annotated[int, COUNT] = 200
    """Held-out prompts of the built-in task."""
    builtin_min_digits: Annotated[int, POSITIVE_INT] = 1
    """Fewest digits of a built-in operand."""
    builtin_max_digits: Annotated[int, POSITIVE_INT] = 2
    """Most digits of a built-in operand (guess_number: the hidden number is below 10**builtin_max_digits)."""
    train_batch_size: Annotated[int, POSITIVE_INT] = 8
    """Prompts per RL step (x rollout.n responses)."""
    val_batch_size: Annotated[int, POSITIVE_INT] = 64
    """Prompts per validation generation call."""
    max_prompt_length: Annotated[int, POSITIVE_INT] = 32
    """Longer prompts are dropped before training (and counted in the log)."""
    shuffle: bool = True
    """Shuffle the training prompts every epoch."""


@dataclass
class TrainerConfig:
    """The run: steps, devices, logging, validation, checkpoints."""

    project_name: str = "rlhf"
    """Project name (wandb project; a folder under output_dir): a name, not a path."""
    experiment_name: str = "default"
    """Experiment name (wandb run name; a folder under the project): a name, not a path."""
    total_steps: Annotated[int, POSITIVE_INT] = 10
    """RL steps (each: generate, score, update, sync)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when the driver sees a GPU, else CPU."""
    nnodes: Annotated[int, POSITIVE_INT] = 1
    """Nodes the actor ranks are spread over."""
    num_devices_per_node: Annotated[int, POSITIVE_INT] = 2
    """Actor ranks per node (CPU: processes; CUDA: GPUs)."""
    cpus_per_worker: Annotated[float, POSITIVE] = 1.0
    """CPU cores reserved per actor rank (its vLLM and torch threads)."""
    memory_gb_per_worker: Annotated[float, COUNT] = 0.0
    """RAM reserved per actor rank through Ray's `memory` resource (0: none reserved)."""
    ray_address: str | None = None
    """Ray cluster to join; None: $RAY_ADDRESS if set, else a local Ray instance started by this run."""
    placement_timeout_s: Annotated[float, POSITIVE] = 30.0
    """Give up, naming the group and what is missing, when Ray cannot reserve a group's resources within this."""
    runtime_env: RuntimeEnvConfig = field(default_factory=RuntimeEnvConfig)
    """pip packages and environment variables for every worker."""
    logger: list[Literal["console", "wandb", "jsonl"]] = field(default_factory=lambda: ["console"])
    """Where metrics go: any of console, wandb, jsonl."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of this project's log lines (vLLM, DeepSpeed and Ray stay at WARNING)."""
    output_dir: str = "outputs"
    """Runs go to <output_dir>/<project_name>/<experiment_name>."""
    test_freq: Annotated[int, COUNT] = 0
    """Validate every N steps and at the end (0: never)."""
    val_num_samples: Annotated[int, COUNT] = 0
    """k > 0: also sample k responses per held-out prompt for pass@k and mean@k."""
    val_before_train: bool = True
    """With test_freq > 0, validate at step 0 so curves start from the initial policy."""
    save_freq: Annotated[int, COUNT] = 0
    """Checkpoint every N steps and at the end (0: no checkpoints)."""
    keep_last: Annotated[int, COUNT] = 3
    """Complete checkpoints kept; older ones are deleted (0 keeps all)."""
    resume: str = "auto"
    """auto: the newest complete checkpoint of this run dir, if any; never; or a checkpoint directory."""
    max_restarts: Annotated[int, COUNT] = 0
    """After a worker dies or a weight sync fails: restart the worker groups from the last checkpoint, up to N times."""
    max_consecutive_skipped_updates: Annotated[int, POSITIVE_INT] = 3
    """Stop the run after this many NaN/inf updates in a row."""
    deterministic: bool = False
    """Deterministic torch kernels in the workers (exact resume on CPU; slower)."""
    seed: Annotated[int, Range(ge=0)] = 1
    """Seeds data order, sampling and initialisation."""

    def run_dir(self) -> Path:
        """<output_dir>/<project>/<experiment>, absolute so that workers (other working directories) write there."""
        return (Path(self.output_dir) / self.project_name / self.experiment_name).resolve()


@dataclass
class RLHFConfig:
    """The whole RL run (`python -m rlhf.main`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    actor: ActorConfig = field(default_factory=ActorConfig)
    """Policy training."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Generation."""
    ref: RefConfig = field(default_factory=RefConfig)
    """The reference policy."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The value model (PPO/GAE only)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Scoring."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Advantage estimator, policy loss and regularisers."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Multi-turn, tool-using rollouts (off by default)."""
    async_training: AsyncTrainingConfig = field(default_factory=AsyncTrainingConfig)
    """Rollout placement (colocated or split) and the staleness bound of asynchronous training."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The run."""


def register_schema() -> None:
    """Make `rlhf_schema` available to recipes (`defaults: [rlhf_schema, ...]`)."""
    ConfigStore.instance().store(name="rlhf_schema", node=hydra_schema(RLHFConfig))


def to_typed(cfg: DictConfig) -> RLHFConfig:
    """Hydra's composed config as the typed dataclasses; a key the schema does not have fails, naming it."""
    return build(RLHFConfig, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def to_yaml(cfg: object) -> str:
    """A typed config as YAML (saved beside every run and checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))  # type: ignore[call-overload]
