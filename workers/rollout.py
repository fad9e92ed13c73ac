"""The rollout: a vLLM engine in the actor's own process, generating n responses per prompt with log-probs.

In-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) weight sync is an in-memory reload through
``collective_rpc("load_policy_weights")`` with no copy across processes. vLLM reports log-probs after temperature
(``logprobs_mode="processed_logprobs"``), the same distribution the trainer scores. The interface
(`generate`, `sync_weights`, `sleep`, `wake_up`) is what a split-placement or asynchronous rollout would implement.

Tensor parallelism (`rollout.tensor_parallel_size` = t > 1): every t consecutive actor ranks (on one node) are the t
shards of one vLLM engine, started in each rank's own process with vLLM's ``external_launcher`` backend, which builds
its tensor-parallel groups inside the ranks' existing torch.distributed world. The t ranks must run every request
together: each rank gathers the prompts of its group (its own DP shard and its t-1 neighbours'), all t generate the
same union (per-request seeds make the outputs identical), and each keeps its own rows. The weight sync stays in
memory: every rank hands the full weights to its own shard, and vLLM's loaders take that shard's slice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.distributed as dist
from rlhf.workers.lora import AdapterWeights
from rlhf.workers.vllm_lora import VLLMAdapterSlot, vllm_lora_kwargs
from vllm import LLM, SamplingParams
from vllm.distributed.parallel_state import get_tp_group
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.sequences import assemble, right_pad

logger = logging.getLogger(__name__)

EXTENSION = "rlhf.workers.vllm_extension.WeightSyncExtension"


class VLLMRollout:
    """Generation with vLLM on this rank's device."""

    def __init__(self, cfg: RLHFConfig, device: torch.device, pad_token_id: int) -> None:
        r = cfg.rollout
        self.cfg, self.pad_token_id = cfg, pad_token_id
        self.is_cuda = device.type == "cuda"
        max_model_len = cfg.data.max_prompt_length + r.max_response_length
        cpu_only = {}
        if not self.is_cuda:
            # vLLM-CPU crashes ("CPU Generator does not use offset") when a seeded request's prompt is prefilled in
            # chunks; long prompts and multi-turn contexts get chunked. Whole-prompt prefill avoids it.
            cpu_only = {
                "enable_chunked_prefill": False,
                "max_num_batched_tokens": max(4096, max_model_len),
                "kv_cache_memory_bytes": int(r.kv_cache_gb * 2**30),
            }
        self.llm = LLM(
            model=cfg.model.path,
            dtype=cfg.model.dtype,
            seed=cfg.trainer.seed,
            max_model_len=max_model_len,
            enforce_eager=r.enforce_eager,
            gpu_memory_utilization=r.gpu_memory_utilization,
            enable_sleep_mode=self.is_cuda and r.free_cache_engine,
            worker_extension_cls=EXTENSION,
            logprobs_mode="processed_logprobs",
            tensor_parallel_size=r.tensor_parallel_size,
            # t > 1: this process is one shard; vLLM's TP groups are consecutive ranks of the actor's world.
            distributed_executor_backend="external_launcher" if r.tensor_parallel_size > 1 else None,
            **vllm_lora_kwargs(cfg.actor.lora),
            **cpu_only,
        )
        self.adapter = VLLMAdapterSlot() if vllm_lora_kwargs(cfg.actor.lora) else None
        self.tp_group = get_tp_group() if r.tensor_parallel_size > 1 else None
        if self.tp_group is not None:
            logger.info(
                "vLLM tensor-parallel shard %d/%d of the engine of actor ranks %s",
                self.tp_group.rank_in_group,
                self.tp_group.world_size,
                self.tp_group.ranks,
            )
        self.is_asleep = False

    def _gather_tp_prompts(self, batch: Batch) -> tuple[Batch, slice]:
        """The prompts of this rank's whole TP group, and which of the group's rows are this rank's own."""
        if self.tp_group is None:
            return batch, slice(0, len(batch))
        shards: list[Batch | None] = [None] * self.tp_group.world_size
        dist.all_gather_object(shards, batch, group=self.tp_group.cpu_group)
        sizes = [len(shard) for shard in shards]
        start = sum(sizes[: self.tp_group.rank_in_group])
        return Batch.concat(shards), slice(start, start + len(batch))

    def generate(self, batch: Batch, n: int, temperature: float, top_p: float, max_tokens: int) -> Batch:
        """Sample `n` responses for every prompt row of `batch`.

        Args:
            batch: non_tensors `prompt_ids` (list[int] per row) and `sample_seed` (int per row); other non-tensor
                fields are repeated for each of the n responses.
            temperature: 0 means greedy (validation).

        Returns:
            n * B rows (the n responses of a prompt are adjacent): the tensors of `assemble`, rollout_log_probs
            [nB, R] float32, and non_tensors `response_text` plus the input's fields repeated.
        """
        batch, own_rows = self._gather_tp_prompts(batch)
        expanded = batch.repeat_interleave(n)
        prompt_ids: list[list[int]] = expanded.non_tensors["prompt_ids"]
        # One request per sample with its own seed: reproducible and independent of how ranks split the batch.
        seeds = [int(s) * 1009 + i % n for i, s in enumerate(expanded.non_tensors["sample_seed"])]
        params = [
            SamplingParams(
                n=1, temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=0, seed=seed, detokenize=True
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompt_ids],
            params,
            use_tqdm=False,
            lora_request=self.lora_request(),
        )
        responses, log_probs, texts = [], [], []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)
            responses.append(ids)
            log_probs.append([step[token].logprob for step, token in zip(sample.logprobs or [], ids, strict=True)])
            texts.append(sample.text)
        result = assemble(prompt_ids, responses, self.cfg.data.max_prompt_length, max_tokens, self.pad_token_id)
        result["rollout_log_probs"] = right_pad(log_probs, max_tokens, 0.0, torch.float32)
        result.non_tensors.update(expanded.non_tensors)
        result.non_tensors["response_text"] = texts
        if self.tp_group is not None:  # the group's union was generated; keep this rank's prompts' n responses each
            result = result.index(range(own_rows.start * n, own_rows.stop * n))
        return result

    def sample(self, batch: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        """`generate` with the rollout config's settings; `temperature` / `n` override them (validation, ReMax)."""
        r = self.cfg.rollout
        return self.generate(
            batch,
            n=r.n if n is None else n,
            temperature=r.temperature if temperature is None else temperature,
            top_p=r.top_p,
            max_tokens=r.max_response_length,
        )

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load the actor's current weights (HF names, lm_head included when tied) into the engine (with TP: into
        this rank's shard, which takes its slice). An iterator is consumed lazily (split placement streams the
        received buckets through it). Returns how many tensors were loaded."""
        return self.llm.collective_rpc("load_policy_weights", args=(named_tensors,))[0]

    def lora_request(self) -> LoRARequest | None:
        """The adapter vLLM generates with (LoRA with adapter sync), else None (the engine's own weights)."""
        return self.adapter.request if self.adapter is not None else None

    def load_adapter(self, adapter: AdapterWeights) -> None:
        """LoRA with adapter sync: generate with `adapter` on the base weights the engine holds from now on."""
        if self.adapter is None:
            raise RuntimeError("this rollout was built without vLLM's LoRA (actor.lora.sync resolved to merged)")
        self.adapter.load(self.llm, adapter)

    def sleep(self) -> None:
        """Free the KV cache and weights on CUDA while the actor trains (no-op on CPU)."""
        if self.is_cuda and self.cfg.rollout.free_cache_engine and not self.is_asleep:
            self.llm.sleep(level=1)
            self.is_asleep = True

    def wake_up(self) -> None:
        if self.is_asleep:
            self.llm.wake_up()
            self.is_asleep = False
