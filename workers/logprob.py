"""Token log-probs (and entropy) of the response under a causal LM, shared by the actor and the reference.

With `fused=True` the model runs without its LM head and the fused kernel (`rlhf.kernels`) turns the last hidden
states into log-probs chunk by chunk, so no [tokens, vocab] logits tensor is ever held. Temperature divides the
logits exactly as vLLM's sampler does, which keeps trainer and rollout log-probs in agreement (contract 2).
With `padding_free` "trim" or "pack" the forward skips padding (`rlhf.padding_free`, issue 13).
"""

from __future__ import annotations

import torch
from rlhf.kernels import fused_log_probs
from torch import nn

from rlhf.batch import Batch
from rlhf.padding_free import ensure_packing_supported, padding_free_view


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
            and the LM head is never adapted, which `rlhf.lora_config.check_lora` enforces).
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
        head = model.get_output_embeddings()
        log_probs, entropy = fused_log_probs(
            view.select(hidden),  # [n, d]: the positions predicting each response token
            head.weight,
            targets,
            temperature,
            head.bias,
            compute_entropy=compute_entropy,
            backend=backend,
        )
    else:
        logits = model(**view.model_inputs, use_cache=False).logits  # [rows, width, V]
        log_softmax = torch.log_softmax(view.select(logits).float() / temperature, dim=-1)  # [n, V]
        log_probs = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_softmax.exp() * log_softmax).sum(-1) if compute_entropy else None
    return view.scatter(log_probs), (None if entropy is None else view.scatter(entropy))
