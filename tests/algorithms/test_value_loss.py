"""rlhf.algorithms.value: the clipped value loss against hand computations."""

import torch

from rlhf.algorithms import compute_value_loss, make_loss_aggregator


def test_clipped_value_loss():
    values = torch.tensor([[0.8, 2.0, 0.0, 1.0, 5.0]], requires_grad=True)
    old_values = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 1.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss, metrics = compute_value_loss(values, old_values, returns, mask, 0.5, make_loss_aggregator("token-mean"))
    # clip(V, old +- 0.5) = [0.8, 1.0, 0.0, 0.5]
    # unclipped (V - R)^2 = [1.44, 4, 1, 1]; clipped = [1.44, 1, 1, 2.25]; max = [1.44, 4, 1, 2.25]
    # loss = 0.5 * (1.44 + 4 + 1 + 2.25) / 4 = 1.08625; the clipped error is larger only at t3
    torch.testing.assert_close(loss, torch.tensor(1.08625))
    torch.testing.assert_close(metrics["critic/vf_clipfrac"], torch.tensor(0.25))
    loss.backward()
    # d/dV 0.5 * (V - R)^2 / 4 = (V - R) / 4 where the active branch depends on V; t3 is clipped (constant)
    torch.testing.assert_close(values.grad, torch.tensor([[-0.3, 0.5, -0.25, 0.0, 0.0]]))
