"""Methods injected into vLLM's worker (``worker_extension_cls``) so the trainer can push new weights in-process.

vLLM's worker already has ``update_weights`` (its own transfer API), so ours is named ``load_policy_weights``.
``model_runner.reload_weights`` re-runs vLLM's post-load processing; on CPU that re-packs the weights (including the
pre-packed LM head, which is why tied embeddings must send ``lm_head.weight`` too).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class by vLLM itself; ``self`` is the vLLM worker."""

    def load_policy_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Replace the model weights with `named_tensors` (HF names; consumed lazily, so an in-process caller can
        stream them). Returns how many tensors were loaded."""
        count = 0

        def weights():
            nonlocal count
            for name, t in named_tensors:
                count += 1
                # Through a multi-process engine tensors may arrive as nested lists; rebuild them.
                yield name, t if isinstance(t, torch.Tensor) else torch.tensor(t)

        self.model_runner.reload_weights(weights_iterator=weights())
        return count
