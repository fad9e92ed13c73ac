"""LoRA on the actor, one rank with a real DeepSpeed engine: what trains, what the optimizer holds, the reference
from the disabled adapter, the fused log-probs through PEFT, and the exports (merged model + adapter)."""

from __future__ import annotations

import os

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from actor_update_worker import fixed_batch  # noqa: E402
from peft import PeftModel  # noqa: E402
from rlhf.workers.actor import Actor  # noqa: E402
from rlhf.workers.base import free_port, leave_distributed  # noqa: E402
from rlhf.workers.engine import save_engine, save_hf_model  # noqa: E402
from rlhf.workers.logprob import response_log_probs  # noqa: E402
from rlhf.workers.lora import adapter_weights, merged_weights, num_bytes  # noqa: E402
from rlhf.workers.reference import AdapterDisabledReference  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from recipes import compose_recipe  # noqa: E402
from rlhf.batch import Batch  # noqa: E402

RANK = 4


@pytest.fixture(scope="module")
def actor(tiny_model_dir: Path) -> Iterator[Actor]:
    """An actor with LoRA rank 4 on q_proj/v_proj/down_proj, after one AdamW step on a fixed batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = compose_recipe(
        "grpo_arith_tiny",
        [
            f"model.path={tiny_model_dir}",
            "model.build_tiny=false",
            "trainer.num_devices_per_node=1",
            "rollout.n=1",
            "data.train_batch_size=8",
            "actor.ppo_mini_batch_size=8",
            "actor.micro_batch_size_per_device=4",
            "actor.optim.lr=1e-2",
            "algorithm.use_kl_loss=false",
            "rollout.max_response_length=6",
            f"actor.lora.rank={RANK}",
            "actor.lora.alpha=8",
            "actor.lora.target_modules=[q_proj,v_proj,down_proj]",
        ],
    )
    torch.manual_seed(0)
    a = Actor(cfg, 0, 1, torch.device("cpu"))
    a.initial_lora = {n: p.detach().clone() for n, p in a.model.named_parameters()}  # type: ignore[attr-defined]
    a.metrics, _ = a.update(fixed_batch(a.model.config.vocab_size))  # type: ignore[attr-defined]
    yield a
    leave_distributed()


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def batch(actor: Actor) -> Batch:
    return fixed_batch(actor.model.config.vocab_size)


def test_only_the_adapters_train_and_the_optimizer_holds_only_them(actor: Actor, base: torch.nn.Module) -> None:
    model = actor.model
    assert isinstance(model, PeftModel)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # 2 layers x 3 target modules x (A, B)
    assert len(trainable) == 12 and all(".lora_A." in n or ".lora_B." in n for n in trainable), sorted(trainable)
    # ZeRO-2's optimizer holds exactly the adapters' parameters (by identity), nothing of the base.
    held = [p for group in actor.engine.optimizer.bit16_groups for p in group]
    assert {id(p) for p in held} == {id(p) for p in model.parameters() if p.requires_grad}
    a_numel = 2 * RANK * (128 + 128 + 512)  # A: [r, in] of q_proj, v_proj (in 128), down_proj (in 512), 2 layers
    b_numel = 2 * (128 * RANK + 64 * RANK + 128 * RANK)  # B: [out, r]: q_proj 128, v_proj 64 (2 KV heads), down 128
    assert sum(p.numel() for p in held) == a_numel + b_numel

    assert actor.metrics["actor/grad_norm"] > 0  # type: ignore[attr-defined]
    moved = {
        n
        for n, p in model.named_parameters()
        if not torch.equal(p, actor.initial_lora[n])  # type: ignore[attr-defined]
    }
    assert moved and moved <= trainable, sorted(moved - trainable)
    # The base weights are bit-for-bit the model on disk.
    base_weights = base.state_dict()
    for name, value in model.get_base_model().state_dict().items():
        if ".lora_" not in name:
            torch.testing.assert_close(value, base_weights[name.replace(".base_layer.", ".")], rtol=0, atol=0)


def test_reference_is_the_base_model_with_the_adapter_disabled(
    actor: Actor, base: torch.nn.Module, batch: Batch
) -> None:
    ref = AdapterDisabledReference(actor.cfg, actor.model, torch.device("cpu"), 1).compute_log_prob(batch)[
        "ref_log_probs"
    ]
    with torch.no_grad():
        want, _ = response_log_probs(base, batch, actor.cfg.rollout.temperature, fused=True)
    mask = batch["response_mask"].bool()
    torch.testing.assert_close(ref[mask], want[mask], atol=1e-5, rtol=0)
    # ... while the trained policy, same model object, differs from it: the adapter is back on afterwards.
    policy = actor.compute_log_prob(batch)["old_log_probs"]
    assert (policy - ref)[mask].abs().max() > 1e-3


def test_fused_log_probs_through_peft_equal_the_merged_model(actor: Actor, base: torch.nn.Module, batch: Batch) -> None:
    """The fused path (decoder + LM head read from the PEFT model) applies the adapters: it equals the unfused path
    and a plain HF model holding the merged weights."""
    fused = actor.compute_log_prob(batch)["old_log_probs"]
    with torch.no_grad():
        unfused, _ = response_log_probs(actor.model, batch, actor.cfg.rollout.temperature, fused=False)
        merged_model = AutoModelForCausalLM.from_pretrained(actor.cfg.model.path, dtype=torch.float32).eval()
        merged_model.load_state_dict(dict(merged_weights(actor.model, adapted_only=False)))
        merged, _ = response_log_probs(merged_model, batch, actor.cfg.rollout.temperature, fused=True)
    mask = batch["response_mask"].bool()
    torch.testing.assert_close(fused[mask], unfused[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused[mask], merged[mask], atol=1e-5, rtol=0)


def test_what_each_sync_mode_sends(actor: Actor) -> None:
    adapter = adapter_weights(actor.model)
    assert len(adapter.tensors) == 12 and all(".lora_" in k for k in adapter.tensors)
    assert num_bytes(adapter.tensors) == sum(p.numel() * 4 for p in actor.model.parameters() if p.requires_grad)
    merged = actor.state_dict_for_sync()
    modules = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    assert sorted(n for n, _ in merged) == sorted(f"model.layers.{i}.{m}.weight" for i in (0, 1) for m in modules)
    assert num_bytes(merged) == 4 * 2 * (128 * 128 + 64 * 128 + 128 * 512)


def test_exports_hold_the_merged_model_and_the_adapter(actor: Actor, batch: Batch, tmp_path: Path) -> None:
    save_hf_model(actor.model, AutoTokenizer.from_pretrained(actor.cfg.model.path), str(tmp_path), 2, rank=0)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    inputs = dict(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    with torch.no_grad():
        want = actor.model(**inputs).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)(**inputs).logits
        fresh_base = AutoModelForCausalLM.from_pretrained(actor.cfg.model.path, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(fresh_base, tmp_path / "adapter")(**inputs).logits
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapted, want, atol=1e-6, rtol=0)


def test_engine_checkpoint_leaves_the_frozen_base_out(actor: Actor, tmp_path: Path) -> None:
    save_engine(actor.engine, tmp_path, 0, actor.generator)
    (states,) = (tmp_path / "ds").glob("mp_rank_00_model_states.pt")
    module = torch.load(states, weights_only=False)["module"]
    # DeepSpeed drops frozen parameters by name; a tied LM head is named once (as embed_tokens), so its state_dict
    # alias stays. Everything else it keeps is the adapter.
    assert {k for k in module if ".lora_" not in k} == {"base_model.model.lm_head.weight"}, sorted(module)[:5]
    assert sum(".lora_" in k for k in module) == 12
    assert states.stat().st_size < 0.25 * sum(p.numel() * 4 for p in actor.model.parameters())
