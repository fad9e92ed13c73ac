"""rlhf: readable reinforcement-learning post-training for language models.

The controller side lives here (trainer, config, algorithms, data, rewards); the device side installs as
`rlhf.workers` and the fused kernels as `rlhf.kernels`.
"""

__version__ = "0.1.0"
