"""LoRA settings (actor.lora, sft.lora) fail in the driver, naming the keys, before any worker starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from recipes import compose_recipe
from rlhf.config_checks import validate
from rlhf.lora_config import ActorLoRAConfig, linear_module_names, model_config_for, vllm_max_lora_rank
from rlhf.schema import ConfigError
from rlhf.sft_config import validate_sft

sys.path.insert(0, str(Path(__file__).parents[1] / "sft"))
from sft_recipes import compose_sft  # noqa: E402

LINEAR_NAMES = "['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']"


def rl(tiny_model_dir: Path, *overrides: str) -> None:
    validate(compose_recipe("grpo_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides]))


def sft(tiny_model_dir: Path, *overrides: str) -> None:
    validate_sft(compose_sft("sft_arith_tiny", [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides]))


@pytest.mark.parametrize(
    "targets", ["all-linear", "[q_proj,v_proj]", "[self_attn.o_proj,mlp.down_proj]", "model.layers.1.mlp.up_proj"]
)
def test_valid_lora_settings_pass(tiny_model_dir: Path, targets: str) -> None:
    rl(tiny_model_dir, "actor.lora.rank=8", f"actor.lora.target_modules={targets}")
    sft(tiny_model_dir, "sft.lora.rank=8", f"sft.lora.target_modules={targets}")


def test_an_unknown_target_module_lists_the_models_linear_layers(tiny_model_dir: Path) -> None:
    message = (
        "actor.lora.target_modules has 'query', which is no linear layer of the model (qwen2); its linear layers are "
        f"named {LINEAR_NAMES} (or use all-linear)"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        rl(tiny_model_dir, "actor.lora.rank=8", "actor.lora.target_modules=[q_proj,query]")
    with pytest.raises(ConfigError, match=re.escape(message.replace("actor.lora", "sft.lora"))):
        sft(tiny_model_dir, "sft.lora.rank=8", "sft.lora.target_modules=[query]")


def test_targets_are_not_checked_when_lora_is_off(tiny_model_dir: Path) -> None:
    rl(tiny_model_dir, "actor.lora.target_modules=[query]")


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_the_lm_head_and_embeddings_are_refused(tiny_model_dir: Path, target: str) -> None:
    with pytest.raises(ConfigError, match=f"actor.lora.target_modules has '{target}': LoRA on the LM head or the emb"):
        rl(tiny_model_dir, "actor.lora.rank=8", f"actor.lora.target_modules=[{target}]")


def test_zero3_with_lora_is_refused_naming_both_keys(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"actor\.lora\.rank=8 with actor\.zero_stage=3 is not supported"):
        rl(tiny_model_dir, "actor.lora.rank=8", "actor.zero_stage=3", "actor.fused_kernels=false")
    with pytest.raises(ConfigError, match=r"sft\.lora\.rank=4 with sft\.zero_stage=3 is not supported"):
        sft(tiny_model_dir, "sft.lora.rank=4", "sft.zero_stage=3", "sft.fused_kernels=false")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["actor.lora.rank=-1"], "actor.lora.rank=-1 must be >= 0"),
        (["actor.lora.rank=8", "actor.lora.alpha=0"], "actor.lora.alpha=0.0 must be > 0"),
        (["actor.lora.rank=8", "actor.lora.dropout=1.0"], "actor.lora.dropout=1.0 must be < 1"),
        (
            ["actor.lora.rank=8", "actor.lora.sync=tensor"],
            "actor.lora.sync='tensor' is not valid; choose from ['auto', 'adapter', 'merged']",
        ),
        (["actor.lora.rank=8", "actor.lora.target_modules=[all-linear,q_proj]"], "all-linear stands alone"),
        (["actor.lora.rank=8", "actor.lora.target_modules=[]"], "actor.lora.target_modules is empty"),
        (["actor.lora.rank=600", "actor.lora.sync=adapter"], "vLLM's LoRA holds ranks up to 512"),
    ],
)
def test_bad_lora_values_name_the_key(tiny_model_dir: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        rl(tiny_model_dir, *overrides)


def test_auto_sync_takes_the_adapter_when_vllm_has_a_buffer_for_the_rank() -> None:
    assert ActorLoRAConfig(rank=8).resolved_sync() == "adapter"
    assert ActorLoRAConfig(rank=1024).resolved_sync() == "merged"
    assert ActorLoRAConfig(rank=8, sync="merged").resolved_sync() == "merged"
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]


def test_the_tiny_models_module_names_are_read_without_weights(tmp_path: Path) -> None:
    """model.build_tiny with nothing built yet: the names come from the tiny config, on the meta device."""
    adaptable, refused = linear_module_names(model_config_for(str(tmp_path / "not-built"), build_tiny=True))
    assert len(adaptable) == 2 * 7 and "model.layers.0.self_attn.q_proj" in adaptable
    assert refused == ["model.embed_tokens", "lm_head"]
