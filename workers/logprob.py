"""Token log-probs (and entropy) of the response under a causal LM, shared by the actor and the reference.

With `fused=True` the model runs without its LM head and the fused kernel (`rlhf.kernels`) turns the last hidden
states into log-probs chunk by chunk, so no [tokens, vocab] logits tensor is ever held. Temperature divides the
logits exactly as vLLM's sampler does, which keeps trainer and rollout log-probs in agreement (contract 2).
"""

from __future__ import annotations

import torch
from rlhf.kernels import fused_log_probs
from torch import nn

from rlhf.batch import Batch


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
            `.module`, or a PEFT LoRA model (it forwards both; the adapters sit inside the decoder's linear layers,
            and the LM head is never adapted, which `rlhf.lora_config.check_lora` enforces).
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
        head = model.get_output_embeddings()
        return fused_log_probs(
            hidden,
            head.weight,
            responses,
            temperature,
            head.bias,
            compute_entropy=compute_entropy,
            backend=backend,
        )
    logits = model(**inputs, use_cache=False).logits[:, -num_response - 1 : -1].float() / temperature  # [B, R, V]
    log_softmax = torch.log_softmax(logits, dim=-1)
    log_probs = log_softmax.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1) if compute_entropy else None
    return log_probs, entropy
