"""The SFT worker on one rank with a real DeepSpeed engine (gloo): the loss, learning, and the saved model."""

from __future__ import annotations

import os

os.environ["DS_ACCELERATOR"] = "cpu"  # before DeepSpeed is imported

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from rlhf.workers.base import free_port  # noqa: E402
from rlhf.workers.sft import SFTWorker  # noqa: E402
from sft_recipes import compose_sft  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from rlhf.algorithms import make_loss_aggregator  # noqa: E402
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
            "optim.lr=3e-3",
            "optim.warmup_steps=0",
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


def test_loss_is_cross_entropy_on_response_tokens_only(worker: SFTWorker, batch: Batch) -> None:
    """The worker's micro-batch loss (token-mean NLL) equals HF's cross-entropy with every prompt and padding label
    set to -100."""
    labels = batch["input_ids"].clone()
    response_len = batch["responses"].shape[1]
    labels[:, :-response_len] = -100  # prompt tokens are not trained on
    labels[:, -response_len:][batch["response_mask"] == 0] = -100
    with torch.no_grad():
        hf = worker.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            labels=labels,
        ).loss
        agg = make_loss_aggregator("token-mean", global_num_tokens=batch["response_mask"].sum().item())
        ours = worker.micro_batch_loss(batch, agg).loss
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)


def test_sft_steps_lower_the_loss_on_a_fixed_batch(worker: SFTWorker, batch: Batch) -> None:
    losses = [worker.sft_step(batch)["train/loss"] for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses
    nll, count = worker.eval_loss(batch)
    assert count == batch["response_mask"].sum().item()
    assert nll / count < losses[0]


def test_saved_model_loads_in_transformers(worker: SFTWorker, batch: Batch, tmp_path: Path) -> None:
    worker.save_hf_model(str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).eos_token_id == worker.tokenizer.eos_token_id
    inputs = dict(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, worker.model(**inputs).logits)


VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
llm = LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=64)
prompts = [TokensPrompt(prompt_token_ids=p) for p in json.loads(sys.argv[2])]
outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8))
print("RESULT" + json.dumps([o.outputs[0].text for o in outs]))
"""


@pytest.mark.slow
def test_saved_model_loads_in_vllm_and_generates_as_the_trainer(worker: SFTWorker, tmp_path: Path) -> None:
    """vLLM (in-process engine, CPU) loads the saved folder; its greedy answers equal the trainer's HF generate."""
    worker.save_hf_model(str(tmp_path))
    prompts = [worker.tokenizer(f"{a}+{b}=", add_special_tokens=False)["input_ids"] for a, b in ((1, 2), (30, 4))]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, str(tmp_path), json.dumps(prompts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    texts = json.loads(result.stdout.split("RESULT")[-1])
    ours = worker.generate(Batch(non_tensors={"prompt_ids": prompts})).non_tensors["response_text"]
    assert texts == ours
