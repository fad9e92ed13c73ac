"""Token log-probs (and entropy) of the response under a causal LM, shared by the actor, the reference and SFT.

With `fused=True` the model runs without its LM head and the fused kernel (`rlhf.kernels`) turns the last hidden
states into log-probs chunk by chunk, so no [tokens, vocab] logits tensor is ever held. Temperature divides the
logits exactly as vLLM's sampler does, which keeps trainer and rollout log-probs in agreement (contract 2).

ZeRO-3 partitions every weight, and gathers a module's weights only while that module runs (its forward, and its
backward). The fused path reads the LM head's weight outside the LM head module, so it runs inside its own
parameterless module, `FusedLogProbHead`, attached to the model before DeepSpeed wraps it; `register_zero3_head`
then tells DeepSpeed that this module uses the head's weight (`deepspeed.zero.register_external_parameter`), and
DeepSpeed gathers it for the module's forward and again for its backward, exactly as for the LM head itself.
"""

from __future__ import annotations

from collections.abc import Callable

import deepspeed
import torch
from rlhf.kernels import fused_log_probs
from torch import nn

from rlhf.batch import Batch

FUSED_HEAD = "fused_log_prob_head"  # the attribute under which the head module sits on the model


class FusedLogProbHead(nn.Module):
    """Log-probs (+ entropy) from hidden states with the model's LM head weight; holds no parameters itself."""

    def __init__(self, output_embeddings: Callable[[], nn.Module]) -> None:
        """`output_embeddings` is the model's `get_output_embeddings` (a method, so the head's weight is not
        registered twice: the model's state_dict and its HF checkpoint stay unchanged)."""
        super().__init__()
        self.output_embeddings = output_embeddings

    def forward(
        self, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, compute_entropy: bool, backend: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden [B, R, d], targets [B, R] -> log_probs [B, R] float32 and entropy [B, R] float32 (or None)."""
        head = self.output_embeddings()
        return fused_log_probs(
            hidden, head.weight, targets, temperature, head.bias, compute_entropy=compute_entropy, backend=backend
        )


def attach_fused_head(model: nn.Module) -> None:
    """Give `model` its `FusedLogProbHead` (call before `deepspeed.initialize`, which hooks every submodule)."""
    model.add_module(FUSED_HEAD, FusedLogProbHead(model.get_output_embeddings))


def register_zero3_head(model: nn.Module) -> None:
    """Under ZeRO-3 (after `deepspeed.initialize`): the fused head module uses the LM head's weight and bias."""
    head_module, head = getattr(model, FUSED_HEAD), model.get_output_embeddings()
    for param in (head.weight, head.bias):
        if param is not None:
            deepspeed.zero.register_external_parameter(head_module, param)


def response_log_probs(
    model: nn.Module,
    batch: Batch,
    temperature: float,
    *,
    fused: bool,
    backend: str = "auto",
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token given everything before it.

    Args:
        model: a Hugging Face causal LM (`get_decoder()` / `get_output_embeddings()`), possibly DeepSpeed-wrapped's
            `.module`; under ZeRO-3 with `fused`, prepared by `attach_fused_head` and `register_zero3_head`.
        batch: holds input_ids/attention_mask/position_ids [B, P+R] and responses [B, R].
        temperature: the rollout's sampling temperature.
        fused: use the fused kernel from the last hidden state (no full logits).
        backend: kernel backend for the fused path ("auto", "torch", "triton", "naive").
        compute_entropy: also return the entropy of each position's distribution.

    Returns:
        log_probs [B, R] float32 and entropy [B, R] float32 (or None).
    """
    input_ids, responses = batch["input_ids"], batch["responses"]
    num_response = responses.shape[1]
    inputs = dict(input_ids=input_ids, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
    if fused:
        hidden = model.get_decoder()(**inputs, use_cache=False).last_hidden_state  # [B, P+R, d]
        # Position t's hidden state predicts token t+1: the response is predicted by positions [-R-1, -1).
        hidden = hidden[:, -num_response - 1 : -1].contiguous()  # [B, R, d]
        head_module = getattr(model, FUSED_HEAD, None) or FusedLogProbHead(model.get_output_embeddings)
        return head_module(hidden, responses, temperature, compute_entropy, backend)
    logits = model(**inputs, use_cache=False).logits[:, -num_response - 1 : -1].float() / temperature  # [B, R, V]
    log_softmax = torch.log_softmax(logits, dim=-1)
    log_probs = log_softmax.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1) if compute_entropy else None
    return log_probs, entropy
