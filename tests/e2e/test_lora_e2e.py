"""GRPO with LoRA end to end on CPU (real Ray + vLLM + DeepSpeed, 2 ranks): vLLM generates through the synced
adapter and agrees with the trainer, the reference is the disabled adapter, checkpoints and exports hold the adapter
and a merged model that transformers and vLLM load, and a resumed run continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from runs import loads_in_vllm, metrics, run_to_end
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow

LORA = [
    "actor.lora.rank=8",
    "actor.lora.alpha=16",
    "actor.optim.lr=1e-2",  # adapters take larger steps than full fine-tuning
    "trainer.num_devices_per_node=2",
    "trainer.deterministic=true",
    "trainer.save_freq=2",
]
# Rank 8 on the tiny model's 7 linear layers x 2 layers, fp32: A [8, in] + B [out, 8].
ADAPTER_BYTES = 4 * 2 * 8 * sum(i + o for i, o in [(128, 128), (128, 64), (128, 64), (128, 128), (128, 512),
                                                    (128, 512), (512, 128)])  # fmt: skip
COMPARED = ["critic/score/mean", "actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "response_length/mean",
            "rollout/logprob_diff_max"]  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 GRPO steps with LoRA, checkpoints at steps 2 and 3; returns the output dir."""
    tmp = tmp_path_factory.mktemp("lora")
    proc = run_to_end(tiny_model_dir, tmp / "out", tmp / "data", "trainer.total_steps=3", *LORA, log=tmp / "run.log")
    assert proc.returncode == 0, (tmp / "run.log").read_text()[-3000:]
    return tmp / "out"


def step_rows(out_dir: Path) -> list[dict]:
    """The steps' metric rows (a checkpoint adds its own row with timing_s/save_checkpoint at the same step)."""
    return [row for row in metrics(out_dir) if "critic/score/mean" in row]


def test_grpo_with_lora_syncs_the_adapter_and_agrees_with_vllm(lora_run: Path, tiny_model_dir: Path) -> None:
    rows = step_rows(lora_run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        # Contract 2 after each adapter sync: steps 2 and 3 generate with the adapter trained at steps 1 and 2.
        assert row["rollout/logprob_diff_max"] < 1e-3, row["rollout/logprob_diff_max"]
        assert row["perf/update_weights_bytes"] == ADAPTER_BYTES
        assert row["actor/grad_norm"] > 0
    # The reference (adapter disabled) stays at the base while the policy moves away from it: the KL grows.
    assert 0 <= rows[0]["actor/kl_loss"] < rows[-1]["actor/kl_loss"], [r["actor/kl_loss"] for r in rows]

    run_dir = lora_run / "rlhf" / "grpo_arith_tiny"
    final = run_dir / "final_model"
    assert (final / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), final / "adapter"
    )
    ids = torch.tensor([[17, 18, 11, 19, 20, 28, 17, 18]])
    with torch.no_grad():
        want = merged(ids).logits.log_softmax(-1)
        assert (want - initial(ids).logits.log_softmax(-1)).abs().max() > 1e-2  # the policy moved
        torch.testing.assert_close(adapted(ids).logits.log_softmax(-1), want, atol=1e-5, rtol=0)
    assert loads_in_vllm(final)

    checkpoint = run_dir / "checkpoints" / "step_00000002"
    assert (checkpoint / "hf" / "adapter" / "adapter_config.json").is_file()
    shards = list((checkpoint / "actor" / "ds").glob("*model_states.pt"))
    assert shards and all(s.stat().st_size < 0.25 * initial.num_parameters() * 4 for s in shards)  # no frozen base


def test_resuming_a_lora_run_continues_exactly(lora_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """From the step-2 checkpoint, step 3 reproduces the uninterrupted run's step 3 (adapter, optimizer, RNG)."""
    checkpoint = lora_run / "rlhf" / "grpo_arith_tiny" / "checkpoints" / "step_00000002"
    proc = run_to_end(
        tiny_model_dir,
        tmp_path / "out",
        lora_run.parent / "data",
        "trainer.total_steps=3",
        *LORA,
        f"trainer.resume={checkpoint}",
        log=tmp_path / "run.log",
    )
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "resumed from" in log
    (resumed,) = step_rows(tmp_path / "out")
    expected = step_rows(lora_run)[2]
    assert resumed["step"] == expected["step"] == 3
    for key in COMPARED:
        assert resumed[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
