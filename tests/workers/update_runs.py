"""Launch a worker script on 1 or more ranks (one process each, a gloo world on a free port) and read back results:
`actor_update_worker.py` for lists of update cases, `zero_variant_worker.py` for ZeRO-3 / offload variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from rlhf.workers.base import free_port

WORKER = Path(__file__).with_name("actor_update_worker.py")


def updated_weights(
    model_dir: Path, tmp_path: Path, world: int, cases: list[tuple[int, str, list[str]]]
) -> list[dict[str, torch.Tensor]]:
    """Weights after one update per case (micro-batch size, loss_agg_mode, overrides), all on `world` ranks in one
    launch: one process per rank, one fresh actor per case."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"w{world}_", dir=tmp_path))  # one folder per launch
    outs = [run_dir / f"case{i}.pt" for i in range(len(cases))]
    spec = run_dir / "cases.json"
    specs = [
        {"out": str(o), "micro": m, "mode": mode, "overrides": ov} for o, (m, mode, ov) in zip(outs, cases, strict=True)
    ]
    spec.write_text(json.dumps(specs))
    launch_ranks(WORKER, world, [str(model_dir), str(world), str(free_port())], [str(spec)])
    return [torch.load(o) for o in outs]


def launch_ranks(script: Path, world: int, before_rank: list[str], after_rank: list[str]) -> None:
    """Run `script <before_rank...> <rank> <after_rank...>` on ranks 0..world-1 at once; every one must succeed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(script.parent), str(script.parents[1]), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *before_rank, str(rank), *after_rank],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-4000:] for log in logs)
