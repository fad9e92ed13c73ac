"""Checkpoint directories: written under a temporary name, marked complete, renamed into place, the last K kept.

A crash while saving leaves only a `.tmp-*` directory, which resume ignores (and the next save removes), so a
checkpoint that looks complete always is. Layout of `<run_dir>/checkpoints/step_00000010/`:

    COMPLETE               {"step": 10}, written last, before the rename
    trainer_state.json     global step, loader position, KL controller, prompt-batch counter
    controller_rng.pt      the driver's Python / NumPy / torch random states
    actor/                 DeepSpeed checkpoint (model, optimizer, LR schedule) + per-rank RNG and shuffle state
    critic/                the same for the critic, when there is one
    hf/                    the policy in Hugging Face format (transformers and vLLM load it directly)
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointManager:
    """Owns `<root>/step_XXXXXXXX` directories."""

    def __init__(self, root: Path, keep_last: int) -> None:
        self.root, self.keep_last = Path(root), keep_last

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Create the checkpoint of `step`: `write(tmp_dir)` fills it, then it is marked complete and renamed."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step_{step:08d}"
        final = self.root / f"step_{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        (tmp / COMPLETE).write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        logger.info("saved checkpoint %s", final)
        return final

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first (incomplete or half-written ones are skipped)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and is_complete(path):
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    def latest(self) -> Path | None:
        checkpoints = self.complete_checkpoints()
        return checkpoints[-1] if checkpoints else None

    def resolve(self, resume: str) -> Path | None:
        """`trainer.resume`: "never" -> None, "auto" -> the newest complete checkpoint (or None), else a path."""
        if resume == "never":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not is_complete(path):
            raise ValueError(f"trainer.resume={resume!r} is not a complete checkpoint directory (no {COMPLETE} marker)")
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for old in self.complete_checkpoints()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def checkpoint_step(path: Path) -> int:
    return int(json.loads((Path(path) / COMPLETE).read_text())["step"])


def capture_rng_state() -> dict[str, Any]:
    """Every random stream of this process: Python, NumPy, torch CPU (and CUDA when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
