"""`start_together`: the worker groups of a run start at the same time, and a failed start is not lost."""

from __future__ import annotations

import os
import threading

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported (through the worker modules)

import pytest  # noqa: E402

from rlhf.cluster import start_together  # noqa: E402


def test_every_start_runs_at_the_same_time_and_results_keep_their_names() -> None:
    barrier = threading.Barrier(3, timeout=10)  # breaks (BrokenBarrierError) unless all three run at once

    def start(name: str):
        def run() -> str:
            barrier.wait()
            return f"group {name}"

        return run

    assert start_together({n: start(n) for n in ("policy", "reward", "rollout")}) == {
        "policy": "group policy",
        "reward": "group reward",
        "rollout": "group rollout",
    }


def test_a_failed_start_is_raised_after_every_other_start_has_ended() -> None:
    ended = []

    def fails() -> None:
        raise RuntimeError("reward rank 0 could not start")

    def slow() -> str:
        threading.Event().wait(0.2)
        ended.append("policy")
        return "policy"

    with pytest.raises(RuntimeError, match="reward rank 0 could not start"):
        start_together({"policy": slow, "reward": fails})
    assert ended == ["policy"]
