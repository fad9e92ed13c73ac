"""Token log-probs (and entropy) of the response under a causal LM, shared by the actor, the reference and SFT.

With `fused=True` the model runs without its LM head and the fused kernel (`rlhf.kernels`) turns the last hidden
states into log-probs chunk by chunk, so no [tokens, vocab] logits tensor is ever held. Temperature divides the
logits exactly as vLLM's sampler does, which keeps trainer and rollout log-probs in agreement (contract 2).
With `padding_free` "trim" or "pack" the forward skips padding (`rlhf.padding_free`, issue 13).

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
from rlhf.padding_free import ensure_packing_supported, padding_free_view

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
        """hidden [..., d], targets [...] -> log_probs [...] float32 and entropy [...] float32 (or None)."""
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
    padding_free: str = "none",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token given everything before it.

    Args:
        model: a Hugging Face causal LM (`get_decoder()` / `get_output_embeddings()`), possibly DeepSpeed-wrapped's
            `.module`, or a PEFT LoRA model (it forwards both; the adapters sit inside the decoder's linear layers,
            and the LM head is never adapted, which `rlhf.lora_config.check_lora` enforces); under ZeRO-3 with
            `fused`, prepared by `attach_fused_head` and `register_zero3_head`.
        batch: holds input_ids/attention_mask/position_ids [B, P+R] and responses [B, R].
        temperature: the rollout's sampling temperature.
        fused: use the fused kernel from the last hidden state (no full logits).
        backend: kernel backend for the fused path ("auto", "torch", "triton", "naive").
        compute_entropy: also return the entropy of each position's distribution.
        padding_free: "none" (the padded [B, P+R] forward), "trim" (rows cut to the longest real sequence) or
            "pack" (one packed row; the first such call checks that the model's attention keeps packed sequences
            apart, `rlhf.padding_free.ensure_packing_supported`).

    Returns:
        log_probs [B, R] float32 and entropy [B, R] float32 (or None). With "trim" / "pack" both are 0 at response
        padding (where attention_mask is 0); with "none" padding slots hold the model's (meaningless) values.

    Raises:
        ValueError: an unknown `padding_free`, or "pack" with an attention implementation that lets packed
            sequences attend to each other.
    """
    if padding_free == "pack":
        ensure_packing_supported(model)
    responses = batch["responses"]
    view = padding_free_view(
        batch["input_ids"], batch["attention_mask"], batch["position_ids"], responses.shape[1], padding_free
    )
    targets = view.response_tokens(responses)  # [n]
    if fused:
        hidden = model.get_decoder()(**view.model_inputs, use_cache=False).last_hidden_state  # [rows, width, d]
        head_module = getattr(model, FUSED_HEAD, None) or FusedLogProbHead(model.get_output_embeddings)
        # [n, d]: the positions predicting each response token
        log_probs, entropy = head_module(view.select(hidden), targets, temperature, compute_entropy, backend)
    else:
        logits = model(**view.model_inputs, use_cache=False).logits  # [rows, width, V]
        log_softmax = torch.log_softmax(view.select(logits).float() / temperature, dim=-1)  # [n, V]
        log_probs = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_softmax.exp() * log_softmax).sum(-1) if compute_entropy else None
    return view.scatter(log_probs), (None if entropy is None else view.scatter(entropy))
