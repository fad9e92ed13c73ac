"""Shared fixtures: the locally built tiny model (built once per session) and GPU-test skipping."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from rlhf.models.tiny import build_tiny_model

sys.path.insert(0, str(Path(__file__).parent))  # tests/recipes.py, shared by the test folders

# JIT-built ops (DeepSpeed's CPU shared-memory allreduce) live beside this environment, as rlhf.ray_setup sets for
# Ray workers; test subprocesses that build DeepSpeed engines directly inherit it.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
# ... and are built by this environment's ninja, as in the workers (rlhf.ray_setup.environment_bin_first): a system
# ninja of another version would see the command as changed and rebuild the op (~45 s) under every waiting test.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# vLLM torch.compiles small sampler helpers (`batched_count_greater_than`) on an engine's first generate: ~3 s of
# dynamo tracing in every rollout process, paid by each of the suite's many engine starts and restarts. Eager gives
# the same values; runs outside the tests keep vLLM's default. (Nothing of this project uses torch.compile.)
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
# Workers and tests must never wait on a wandb login.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 + character tokenizer folder, loadable by transformers and vLLM."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")
