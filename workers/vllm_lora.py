"""The policy's LoRA adapter inside the in-process vLLM engine (`actor.lora.sync=adapter`).

Each sync writes the adapter (a few MB: only the low-rank tensors) to a folder in shared memory and hands it to
vLLM through its public LoRA API (`add_lora`), under a new name and id; the previous version is then removed. A new
name per version matters: vLLM's prefix cache keys KV blocks by the adapter's name and path, so blocks computed
under an older adapter are never reused. Generation passes `request` with every prompt.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from rlhf.workers.lora import AdapterWeights
from vllm import LLM
from vllm.lora.request import LoRARequest

from rlhf.lora_config import ActorLoRAConfig, vllm_max_lora_rank

logger = logging.getLogger(__name__)

SHARED_MEMORY = Path("/dev/shm")  # RAM-backed on Linux: the adapter never touches a disk


def vllm_lora_kwargs(lora: ActorLoRAConfig) -> dict[str, Any]:
    """`LLM(...)` arguments for adapter sync: LoRA on, one adapter slot of the smallest vLLM rank that fits."""
    if not lora.enabled or lora.resolved_sync() != "adapter":
        return {}
    return {"enable_lora": True, "max_lora_rank": vllm_max_lora_rank(lora.rank), "max_loras": 1}


class VLLMAdapterSlot:
    """The one adapter version vLLM generates with; `load` replaces it."""

    def __init__(self) -> None:
        parent = SHARED_MEMORY if SHARED_MEMORY.is_dir() else None
        self.directory = Path(tempfile.mkdtemp(prefix="rlhf-lora-", dir=parent))
        weakref.finalize(self, shutil.rmtree, self.directory, True)
        self.version = 0
        self.request: LoRARequest | None = None

    def load(self, llm: LLM, adapter: AdapterWeights) -> None:
        """Make `adapter` the one vLLM applies from the next `generate` on."""
        self.version += 1
        path = self.directory / f"v{self.version}"
        adapter.save(path)
        request = LoRARequest(lora_name=f"policy-v{self.version}", lora_int_id=self.version, lora_path=str(path))
        if not llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM did not load the policy adapter {request.lora_name} from {path}")
        if self.request is not None:
            llm.llm_engine.remove_lora(self.request.lora_int_id)
            shutil.rmtree(self.request.lora_path, ignore_errors=True)
        self.request = request
