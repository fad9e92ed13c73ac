"""Log levels, set the same way in the driver and in every worker: ours at `trainer.log_level`, the chatty libraries
(vLLM, DeepSpeed, Ray, torch.distributed) at WARNING, so the console shows one line per step."""

from __future__ import annotations

import logging

# The worker environment carries the level to every Ray worker (rlhf.ray_setup.worker_env).
LOG_LEVEL_ENV = "RLHF_LOG_LEVEL"
QUIET_LOGGERS = ("vllm", "deepspeed", "DeepSpeed", "ray", "torch.distributed", "httpx", "urllib3", "filelock")


def configure_logging(level: str, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Our loggers at `level`, the libraries at WARNING; a console handler only if nobody (Hydra) installed one."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format=fmt)
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("rlhf", "__main__"):
        logging.getLogger(name).setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
