"""Runs VLLMRollout.generate on prompts whose total length exceeds vLLM's per-step token budget (for
test_rollout_long_prompts): seeded samples whose prompts would be prefilled in chunks. The rollout's KV cache is
sized by rollout.kv_cache_gb (a fraction of a GiB here); the cache vLLM allocated is reported in bytes.

    python tests/workers/rollout_long_prompts.py MODEL_DIR OUT.json
"""

import json
import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override rollout.kv_cache_gb

import torch  # noqa: E402
from rlhf.workers.rollout import VLLMRollout  # noqa: E402

from rlhf.batch import Batch  # noqa: E402
from rlhf.config import RLHFConfig  # noqa: E402

NUM_PROMPTS, PROMPT_LENGTH = 48, 150  # x 2 samples: 14,400 prompt tokens, over the 4,096 tokens of one step
KV_CACHE_GB = 0.25


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = RLHFConfig()
    cfg.model.path, cfg.data.max_prompt_length, cfg.rollout.max_response_length = model_dir, PROMPT_LENGTH, 8
    cfg.rollout.kv_cache_gb = KV_CACHE_GB
    rollout = VLLMRollout(cfg, torch.device("cpu"), pad_token_id=0)
    cache = rollout.llm.llm_engine.vllm_config.cache_config
    model = rollout.llm.llm_engine.vllm_config.model_config.hf_config
    head_dim = model.hidden_size // model.num_attention_heads
    bytes_per_token = 2 * model.num_hidden_layers * model.num_key_value_heads * head_dim * 4  # K and V, fp32
    prompts = [[(7 * i + j) % 90 + 3 for j in range(PROMPT_LENGTH)] for i in range(NUM_PROMPTS)]
    batch = Batch(non_tensors={"prompt_ids": prompts, "sample_seed": list(range(NUM_PROMPTS))})
    result = rollout.generate(batch, n=2, temperature=1.0, top_p=1.0, max_tokens=8)
    with open(out, "w") as f:
        json.dump(
            {
                "num_rows": len(result),
                "num_tokens": int(result["response_mask"].sum()),
                "kv_cache_gb": KV_CACHE_GB,
                "kv_cache_bytes": cache.num_gpu_blocks * cache.block_size * bytes_per_token,
            },
            f,
        )


if __name__ == "__main__":
    main()
