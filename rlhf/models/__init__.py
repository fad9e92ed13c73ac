"""Model helpers: the locally built tiny model used by the default recipe and the tests."""

from rlhf.models.tiny import TinyModelSpec, build_tiny_model

__all__ = ["TinyModelSpec", "build_tiny_model"]
