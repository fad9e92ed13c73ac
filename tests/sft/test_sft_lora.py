"""SFT with LoRA on one rank (real DeepSpeed, gloo, gradient checkpointing on): the adapters learn the targets, the
base stays frozen, and the checkpoint and export hold the adapter (and, for the export, the merged model)."""

from __future__ import annotations

import os

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from rlhf.workers.base import free_port  # noqa: E402
from rlhf.workers.sft import SFTWorker  # noqa: E402
from sft_recipes import compose_sft  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from rlhf.batch import Batch  # noqa: E402
from rlhf.data import make_arith_rows  # noqa: E402
from rlhf.sft_trainer import collate, encode_examples  # noqa: E402


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path) -> Iterator[SFTWorker]:
    cfg = compose_sft(
        "sft_arith_tiny",
        [
            f"model.path={tiny_model_dir}",
            "model.build_tiny=false",
            "trainer.num_devices_per_node=1",
            "sft.batch_size=8",
            "sft.micro_batch_size_per_device=4",
            "optim.lr=1e-2",
            "optim.warmup_steps=0",
            "sft.lora.rank=8",
            "sft.lora.alpha=16",
            # Checkpointed blocks with a frozen embedding: the adapters must still get gradients.
            "model.gradient_checkpointing=true",
        ],
    )
    torch.manual_seed(0)
    w = SFTWorker("sft", 0, 1, cfg, "cpu")
    w.init_distributed("127.0.0.1", free_port(), "gloo")
    w.init_model(cfg.sft.total_steps)
    yield w
    w.shutdown()


@pytest.fixture(scope="module")
def batch(worker: SFTWorker) -> Batch:
    rows = make_arith_rows(8, seed=0, min_digits=1, max_digits=2)
    return collate(encode_examples(rows, worker.tokenizer, worker.cfg), worker.tokenizer.pad_token_id)


def test_lora_sft_lowers_the_loss_training_only_the_adapters(
    worker: SFTWorker, batch: Batch, tiny_model_dir: Path
) -> None:
    losses = [worker.sft_step(batch)["train/loss"] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses
    held = [p for group in worker.engine.optimizer.bit16_groups for p in group]
    assert {id(p) for p in held} == {id(p) for n, p in worker.model.named_parameters() if ".lora_" in n}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    for name, value in worker.model.get_base_model().state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(value, base[name.replace(".base_layer.", ".")]), name


def test_lora_sft_checkpoint_and_export_hold_the_adapter(
    worker: SFTWorker, batch: Batch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    worker.save_checkpoint(str(tmp_path / "checkpoint"))
    assert (tmp_path / "checkpoint" / "adapter" / "adapter_config.json").is_file()
    worker.save_hf_model(str(tmp_path / "export"))
    inputs = dict(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    with torch.no_grad():
        want = worker.model(**inputs).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32)(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, tmp_path / "export" / "adapter")(**inputs).logits
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapted, want, atol=1e-6, rtol=0)

    # Greedy generation goes through the adapters (PEFT's generate): it answers as the exported merged model does.
    prompt = worker.tokenizer("12+7=", add_special_tokens=False)["input_ids"]
    ours = worker.generate(Batch(non_tensors={"prompt_ids": [prompt]})).non_tensors["response_text"][0]
    tokens = (
        AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32)
        .generate(
            torch.tensor([prompt]),
            max_new_tokens=worker.cfg.sft.max_new_tokens,
            do_sample=False,
            eos_token_id=worker.tokenizer.eos_token_id,
            pad_token_id=worker.tokenizer.pad_token_id,
        )[0, len(prompt) :]
        .tolist()
    )
    eos = worker.tokenizer.eos_token_id
    assert ours == worker.tokenizer.decode(tokens[: tokens.index(eos)] if eos in tokens else tokens)
