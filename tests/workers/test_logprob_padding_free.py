"""Padding-free forwards ("trim", "pack") equal the padded one on the tiny Qwen2 in fp32 (issue 13).

Compared at every real response token: log-probs, entropy, the PPO loss, the value loss, and the gradient of every
parameter. Tolerance (fp32): log-probs / entropy / values / losses within atol 1e-5; each parameter's gradient within
2e-5 of that gradient's largest magnitude. The layouts differ only in the padding the kernels skip, so what is left
is rounding: measured at most 1.4e-6 (entropy) and 7e-7 relative (gradients) with sdpa, 0 / 3e-7 with eager.
"sdpa_segments" is the segment-wise sdpa that `setup_padding_free` gives sdpa models for packing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rlhf.workers.logprob import response_log_probs
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from rlhf.algorithms import AlgorithmConfig, compute_value_loss, get_policy_loss_fn, make_loss_aggregator
from rlhf.batch import Batch
from rlhf.packing import restore_order, token_budget_micro_batches
from rlhf.padding_free import response_values
from rlhf.sequences import assemble

ATOL = 1e-5
GRAD_RTOL = 2e-5
PROMPT_LENGTH, RESPONSE_LENGTH = 12, 10


def make_batch(vocab_size: int) -> Batch:
    """Prompts of different lengths (one of a single token), an empty response, and tool tokens in a response."""
    gen = torch.Generator().manual_seed(0)
    prompt_lengths, response_lengths = [3, 12, 1, 7, 5, 9], [10, 0, 4, 7, 1, 10]

    def tokens(n: int) -> list[int]:
        return torch.randint(2, vocab_size, (n,), generator=gen).tolist()

    batch = assemble(
        [tokens(n) for n in prompt_lengths],
        [tokens(n) for n in response_lengths],
        PROMPT_LENGTH,
        RESPONSE_LENGTH,
        pad_id=0,
    )
    batch["response_mask"][3, 2:4] = 0.0  # tool output inside a multi-turn response: context, not trained on
    batch["response_mask"][5, 5] = 0.0
    batch["advantages"] = torch.randn(6, RESPONSE_LENGTH, generator=gen)
    batch["returns"] = torch.randn(6, RESPONSE_LENGTH, generator=gen)
    return batch


def policy_loss(log_probs: torch.Tensor, entropy: torch.Tensor, batch: Batch, old: torch.Tensor) -> torch.Tensor:
    """The actor's PPO clipped loss minus an entropy bonus, token-mean (as `Actor.micro_batch_loss`)."""
    mask = batch["response_mask"]
    agg = make_loss_aggregator("token-mean", global_num_tokens=mask.sum().item(), global_num_seqs=6.0)
    pg_loss, _ = get_policy_loss_fn("ppo")(old, log_probs, batch["advantages"], mask, AlgorithmConfig(), agg)
    return pg_loss - 0.01 * agg(entropy, mask)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def assert_close_grads(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and len(got) > 0
    for name, grad in expected.items():
        scale = grad.abs().max().item()
        assert scale > 0, f"{name} got no gradient"
        torch.testing.assert_close(got[name], grad, atol=GRAD_RTOL * scale, rtol=0, msg=name)


@pytest.fixture(scope="module", params=["sdpa", "sdpa_segments", "eager"])
def policy(request: pytest.FixtureRequest, tiny_model_dir: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=request.param)
    return model.train()  # dropout is 0 in Qwen2: train mode is deterministic


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "naive"])
@pytest.mark.parametrize("mode", ["trim", "pack"])
def test_log_probs_entropy_loss_and_grads_equal_the_padded_path(mode: str, fused: bool, policy) -> None:
    batch = make_batch(policy.config.vocab_size)
    real = batch["attention_mask"][:, PROMPT_LENGTH:].bool()  # response slots holding a token
    with torch.no_grad():
        old, _ = response_log_probs(policy, batch, 0.7, fused=fused, backend="torch")
    # Old log-probs a little off the current ones (ratio ~e^-0.05, inside the clip range); as fixed inputs, the
    # loss then depends on each path's own log-probs.
    old = torch.where(real, old + 0.05 * torch.randn(old.shape, generator=torch.Generator().manual_seed(1)), 0.0)

    def run(padding_free: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        log_probs, entropy = response_log_probs(
            policy, batch, 0.7, fused=fused, backend="torch", compute_entropy=True, padding_free=padding_free
        )
        loss = policy_loss(log_probs, entropy, batch, old)
        loss.backward()
        return log_probs.detach(), entropy.detach(), loss.detach(), grads(policy)

    lp_padded, ent_padded, loss_padded, grads_padded = run("none")
    lp, ent, loss, grads_free = run(mode)
    torch.testing.assert_close(lp[real], lp_padded[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(ent[real], ent_padded[real], atol=ATOL, rtol=0)
    assert (lp[~real] == 0).all() and (ent[~real] == 0).all()
    torch.testing.assert_close(loss, loss_padded, atol=ATOL, rtol=0)
    assert_close_grads(grads_free, grads_padded)


def test_none_keeps_the_padded_outputs_at_every_slot(policy) -> None:
    """The default is the old forward: log-softmax of the full logits sliced at [P-1, P+R-1), padding included."""
    batch = make_batch(policy.config.vocab_size)
    with torch.no_grad():
        log_probs, _ = response_log_probs(policy, batch, 1.0, fused=False)
        logits = policy(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            use_cache=False,
        ).logits[:, PROMPT_LENGTH - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, batch["responses"][..., None])[..., 0]
    torch.testing.assert_close(log_probs, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["trim", "pack"])
def test_token_budget_micro_batches_reproduce_one_padded_pass(mode: str, policy) -> None:
    batch = make_batch(policy.config.vocab_size)
    with torch.no_grad():
        expected, _ = response_log_probs(policy, batch, 1.0, fused=True, backend="torch", padding_free=mode)
        lengths = batch["attention_mask"].sum(-1).tolist()
        groups = token_budget_micro_batches(lengths, 24, mode=mode)
        assert len(groups) > 2  # the budget really splits this batch
        parts = [
            response_log_probs(policy, batch.index(g), 1.0, fused=True, backend="torch", padding_free=mode)[0]
            for g in groups
        ]
    torch.testing.assert_close(restore_order(parts, groups), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("implementation", ["sdpa", "sdpa_segments"])
@pytest.mark.parametrize("mode", ["trim", "pack"])
def test_critic_values_loss_and_grads_equal_the_padded_path(
    mode: str, implementation: str, tiny_model_dir: Path
) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1, attn_implementation=implementation)
    # Set after loading: transformers 5.19 drops `classifier_dropout=` as a from_pretrained kwarg for Qwen2.
    config.classifier_dropout = 0.0
    critic = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, config=config, dtype=torch.float32)
    assert critic.dropout.p == 0.0 and critic.config._attn_implementation == implementation
    critic.train()
    batch = make_batch(config.vocab_size)
    mask = batch["response_mask"]
    agg = make_loss_aggregator("token-mean", global_num_tokens=mask.sum().item(), global_num_seqs=6.0)

    def run(padding_free: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        values = response_values(critic, batch, padding_free=padding_free)
        loss, _ = compute_value_loss(values, values.detach() + 0.1, batch["returns"], mask, 0.5, agg)
        loss.backward()
        return values.detach(), loss.detach(), grads(critic)

    values_padded, loss_padded, grads_padded = run("none")
    values, loss, grads_free = run(mode)
    torch.testing.assert_close(values, values_padded, atol=ATOL, rtol=0)  # both are 0 where response_mask is 0
    torch.testing.assert_close(loss, loss_padded, atol=ATOL, rtol=0)
    assert_close_grads(grads_free, grads_padded)


def test_pack_is_refused_when_the_attention_ignores_the_packed_mask(tiny_model_dir: Path) -> None:
    def causal_only(module, query, key, value, attention_mask, **kwargs):  # drops the mask transformers built
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)

    AttentionInterface.register("causal_only_logprob", causal_only)
    ALL_MASK_ATTENTION_FUNCTIONS.register("causal_only_logprob", sdpa_mask)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="causal_only_logprob")
    batch = make_batch(model.config.vocab_size)
    with pytest.raises(ValueError, match="not supported with attention implementation 'causal_only_logprob'"):
        response_log_probs(model, batch, 1.0, fused=True, backend="torch", padding_free="pack")
    response_log_probs(model, batch, 1.0, fused=True, backend="torch", padding_free="trim")  # trim needs no check


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("implementation", "dtype", "atol"),
    [("sdpa_segments", torch.float32, 1e-4), ("flash_attention_2", torch.bfloat16, 5e-2)],
)
def test_packing_on_cuda_equals_the_padded_path(
    implementation: str, dtype: torch.dtype, atol: float, tiny_model_dir: Path
) -> None:
    """On CUDA, a packed micro-batch (varlen keywords, no per-layer boundary search) gives the padded sdpa path's
    log-probs and entropy: segment-wise sdpa in fp32, and flash-attention's varlen kernel in bf16 where installed."""
    if implementation == "flash_attention_2":
        pytest.importorskip("flash_attn")

    def load(attention: str) -> torch.nn.Module:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype, attn_implementation=attention)
        return model.to("cuda").eval()

    packed_model, padded_model = load(implementation), load("sdpa")
    batch = make_batch(padded_model.config.vocab_size).to("cuda")
    real = batch["attention_mask"][:, PROMPT_LENGTH:].bool()
    with torch.no_grad():
        lp_padded, ent_padded = response_log_probs(padded_model, batch, 1.0, fused=False, compute_entropy=True)
        lp, ent = response_log_probs(packed_model, batch, 1.0, fused=False, compute_entropy=True, padding_free="pack")
    torch.testing.assert_close(lp[real], lp_padded[real], atol=atol, rtol=0)
    torch.testing.assert_close(ent[real], ent_padded[real], atol=atol, rtol=0)
