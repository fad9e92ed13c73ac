"""Checkpoint directories: written under a temporary name, listed in a manifest, marked complete, renamed into place.

A crash while saving leaves only a `.tmp-*` directory, which resume skips (saying so) and the next save removes, so
a checkpoint that looks complete always was. On resume every candidate is checked before any worker loads it: its
files against the manifest (a truncated or missing file is caught), its driver state by loading it, and what it
was written for (number of data-parallel ranks, model shape) against this run. A damaged checkpoint is skipped with
a warning naming the file at fault, falling back to the previous complete one; one written for another model or
another number of ranks stops the run with the reason and what to pass instead. Layout of `step_00000010/`:

    COMPLETE               {"step": 10}, written last, before the rename
    MANIFEST.json          size of every file, and what the checkpoint was written for (ranks, model shape)
    trainer_state.json     global step, loader position, KL controller, prompt-batch counter
    controller_rng.pt      the driver's Python / NumPy / torch random states
    step_metrics.json      the step's metrics row (logged again on resume if the run died before logging it)
    actor/                 DeepSpeed checkpoint (model, optimizer, LR schedule) + per-rank RNG and shuffle state
    critic/                the same for the critic, when there is one
    hf/                    the policy in Hugging Face format (transformers and vLLM load it directly); with LoRA
                           the adapter merged in, and hf/adapter/ the adapter in PEFT format
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.schema import ConfigError

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
MANIFEST = "MANIFEST.json"
TRAINER_STATE = "trainer_state.json"
CONTROLLER_RNG = "controller_rng.pt"
STEP_METRICS = "step_metrics.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# Model config fields that must match for a checkpoint's weights to fit this run's model.
MODEL_SHAPE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "vocab_size")  # fmt: skip


class CheckpointError(ConfigError):
    """A checkpoint cannot be resumed from; the message names it, what is wrong and what to pass instead."""


class DamagedCheckpointError(CheckpointError):
    """A file of a complete checkpoint is missing, truncated or unreadable."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint was written for; resuming needs the same."""

    num_ranks: int
    """Data-parallel ranks of the trained model(s): ZeRO shards optimizer state per rank."""
    model_shape: dict[str, Any] = field(default_factory=dict)
    """MODEL_SHAPE_KEYS of the policy's config.json."""
    lora_rank: int = 0
    """LoRA rank of the policy (0: full fine-tuning); a LoRA engine checkpoint holds only the adapter."""

    @staticmethod
    def of_model(model_path: str | Path, num_ranks: int, lora_rank: int = 0) -> CheckpointMeta:
        config = json.loads((Path(model_path) / "config.json").read_text())
        return CheckpointMeta(num_ranks, {k: config[k] for k in MODEL_SHAPE_KEYS if k in config}, lora_rank)

    def mismatch(self, other: CheckpointMeta) -> str | None:
        """Why a checkpoint written for `other` cannot resume this run (None if it can)."""
        if other.num_ranks != self.num_ranks:
            return (
                f"it was written by {other.num_ranks} data-parallel ranks and this run has {self.num_ranks}: each rank "
                "holds its own ZeRO shard of the optimizer state, and converting shards to another rank count "
                "(DeepSpeed's universal checkpoint) is not supported here; run with the checkpoint's rank count "
                "(trainer.nnodes x trainer.num_devices_per_node)"
            )
        differing = {k: (other.model_shape[k], v) for k, v in self.model_shape.items() if other.model_shape.get(k) != v}
        if differing:
            detail = ", ".join(f"{k} {a!r} in the checkpoint vs {b!r} now" for k, (a, b) in differing.items())
            return f"it holds a different model ({detail}); check model.path"
        if other.lora_rank != self.lora_rank:
            return (
                f"it was written with LoRA rank {other.lora_rank} and this run has {self.lora_rank} (0: full "
                f"fine-tuning); set the LoRA rank (actor.lora.rank, sft.lora.rank) to {other.lora_rank}"
            )
        return None


@dataclass
class ResumePoint:
    """A verified checkpoint and the driver state read from it."""

    path: Path
    trainer_state: dict[str, Any]
    controller_rng: dict[str, Any]


class CheckpointManager:
    """Owns `<root>/step_XXXXXXXX` directories."""

    def __init__(self, root: Path, keep_last: int) -> None:
        self.root, self.keep_last = Path(root), keep_last

    def save(self, step: int, write: Callable[[Path], None], meta: CheckpointMeta | None = None) -> Path:
        """Create the checkpoint of `step`: `write(tmp_dir)` fills it, then it is listed, marked complete, renamed."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step_{step:08d}"
        final = self.root / f"step_{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"files": files, "meta": asdict(meta) if meta is not None else None}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (tmp / COMPLETE).write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        logger.info("saved checkpoint %s", final)
        return final

    def complete_checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first (incomplete or half-written ones are left out)."""
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

    def resolve(self, resume: str, meta: CheckpointMeta | None = None) -> ResumePoint | None:
        """`trainer.resume`: "never" -> None; "auto" -> the newest checkpoint that verifies (falling back past damaged
        ones with a warning), or None; else that directory, which must verify.

        Raises:
            CheckpointError: an explicit checkpoint is incomplete or damaged, or a checkpoint was written for another
                number of ranks or another model.
        """
        if resume == "never":
            return None
        if resume != "auto":
            path = Path(resume)
            if not is_complete(path):
                raise CheckpointError(
                    f"trainer.resume={resume!r} is not a complete checkpoint directory (no {COMPLETE} marker)"
                )
            return self._verified(path, meta)
        self._warn_about_incomplete()
        candidates = self.complete_checkpoints()
        for index in range(len(candidates) - 1, -1, -1):
            path = candidates[index]
            try:
                return self._verified(path, meta)
            except DamagedCheckpointError as e:
                fallback = f"falling back to {candidates[index - 1].name}" if index > 0 else "starting from scratch"
                logger.warning("checkpoint %s cannot be used: %s; %s", path, e, fallback)
        return None

    def _verified(self, path: Path, meta: CheckpointMeta | None) -> ResumePoint:
        check_manifest(path)
        written_for = read_meta(path)
        if meta is not None and written_for is not None and (why := meta.mismatch(written_for)):
            raise CheckpointError(
                f"cannot resume from {path}: {why}; or pass trainer.resume=never to start a fresh run"
            )
        try:
            state = json.loads((path / TRAINER_STATE).read_text())
        except (OSError, ValueError) as e:
            raise DamagedCheckpointError(f"{TRAINER_STATE} is unreadable ({e})") from e
        try:
            rng = torch.load(path / CONTROLLER_RNG, weights_only=False)
        except Exception as e:  # torch raises RuntimeError, EOFError or pickle errors on a damaged file
            raise DamagedCheckpointError(f"{CONTROLLER_RNG} is unreadable ({type(e).__name__}: {e})") from e
        return ResumePoint(path, state, rng)

    def load_failure(self, path: Path, error: Exception) -> str:
        """What to tell the user when the workers could not load `path`: the error and which checkpoint to pass."""
        older = [p for p in self.complete_checkpoints() if p.name < Path(path).name]
        hint = f"pass trainer.resume={older[-1]} (the previous complete one)" if older else "pass trainer.resume=never"
        return f"the workers could not load checkpoint {path}: {error}; {hint} to go on"

    def _warn_about_incomplete(self) -> None:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".tmp-") or (_STEP_DIR.match(path.name) and not is_complete(path)):
                logger.warning("skipping incomplete checkpoint %s (a save that did not finish)", path)

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for old in self.complete_checkpoints()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def check_manifest(path: Path) -> None:
    """Every file the manifest lists exists with its recorded size (checkpoints without a manifest pass).

    Raises:
        DamagedCheckpointError: naming the first file that is missing or has another size.
    """
    manifest_file = Path(path) / MANIFEST
    if not manifest_file.is_file():
        return
    try:
        files = json.loads(manifest_file.read_text())["files"]
    except (ValueError, KeyError) as e:
        raise DamagedCheckpointError(f"{MANIFEST} is unreadable ({e})") from e
    for name, size in files.items():
        file = Path(path) / name
        if not file.is_file():
            raise DamagedCheckpointError(f"{name} is missing")
        if file.stat().st_size != size:
            raise DamagedCheckpointError(f"{name} has {file.stat().st_size} bytes, {size} were written")


def read_meta(path: Path) -> CheckpointMeta | None:
    manifest_file = Path(path) / MANIFEST
    if not manifest_file.is_file():
        return None
    meta = json.loads(manifest_file.read_text()).get("meta")
    return CheckpointMeta(**meta) if meta else None


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
