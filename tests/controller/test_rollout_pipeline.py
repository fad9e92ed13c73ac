"""RolloutPipeline's schedule: which weights sample each batch, when the engines sync, and the staleness bound.

The client here is an in-process stand-in that records the order of submissions and syncs (the real rollout runs in
tests/e2e/test_async_e2e.py); it returns each generation's engine version so the test can check what sampled what.
"""

from __future__ import annotations

import pytest
import torch

from rlhf.batch import Batch
from rlhf.rollout_pipeline import RolloutPipeline


class Done:
    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def result(self) -> Batch:
        return self.batch


class RecordingClient:
    """Generates one row holding the engine's weights version; sync copies the trainer's version."""

    def __init__(self) -> None:
        self.engine_weights = 0
        self.trainer_weights = 0
        self.events: list[str] = []

    def submit(self, prompts: Batch) -> Done:
        self.events.append(f"gen{prompts.meta['index']}@{self.engine_weights}")
        return Done(Batch({"sampled_by": torch.tensor([self.engine_weights])}))

    def sync_weights(self) -> dict[str, float]:
        self.events.append(f"sync@{self.trainer_weights}")
        self.engine_weights = self.trainer_weights
        return {"perf/update_weights_bytes": 1.0}


def run(max_staleness: int, num_steps: int) -> tuple[RecordingClient, list[dict[str, float]]]:
    client = RecordingClient()
    drawn = iter(range(1, 100))
    step = 0
    pipeline = RolloutPipeline(
        client, lambda: Batch(meta={"index": next(drawn)}), max_staleness, steps_left=lambda: num_steps - step
    )
    rows = []
    for step in range(1, num_steps + 1):  # noqa: B007 (steps_left reads it)
        _, batch, metrics = pipeline.take({})
        # The version stamped on the batch is the one that really sampled it.
        assert batch["policy_version"].tolist() == batch["sampled_by"].tolist()
        assert metrics["async/staleness/max"] <= max_staleness
        client.trainer_weights += 1  # the update
        pipeline.finish_step(True, {})
        rows.append(metrics)
    return client, rows


def test_staleness_zero_is_the_synchronous_loop() -> None:
    client, rows = run(0, 3)
    assert client.events == ["gen1@0", "sync@1", "gen2@1", "sync@2", "gen3@2", "sync@3"]
    assert [r["async/staleness/max"] for r in rows] == [0, 0, 0]


def test_staleness_one_generates_the_next_batch_during_the_update() -> None:
    client, rows = run(1, 4)
    # gen2 is submitted before update 1 (it overlaps it); the sync after each update waits for it. After the last
    # update nothing is left to generate, so nothing needs the new weights (validation would sync them).
    assert client.events == ["gen1@0", "gen2@0", "sync@1", "gen3@1", "sync@2", "gen4@2", "sync@3"]
    assert [r["async/staleness/max"] for r in rows] == [0, 1, 1, 1]


@pytest.mark.parametrize("max_staleness", [2, 3])
def test_larger_bounds_hold(max_staleness: int) -> None:
    client, rows = run(max_staleness, 8)
    assert max(r["async/staleness/max"] for r in rows) <= max_staleness
    assert sum(e.startswith("gen") for e in client.events) == 8  # nothing generated past the run's end


def test_sync_brings_lagging_engines_to_the_trainer() -> None:
    client = RecordingClient()
    pipeline = RolloutPipeline(client, lambda: Batch(meta={"index": 1}), 1, steps_left=lambda: 0)
    pipeline.take({})
    client.trainer_weights = 1
    pipeline.finish_step(True, {})
    assert client.events == ["gen1@0"]  # the last step: no sync needed for generation
    assert pipeline.sync({}) == {"perf/update_weights_bytes": 1.0} and client.events[-1] == "sync@1"
    assert pipeline.sync({}) == {}  # already current


def test_a_checkpoint_keeps_the_generations_ahead_and_a_resume_trains_on_them() -> None:
    resumed_client = RecordingClient()
    drawn = iter(range(1, 100))
    pipeline = RolloutPipeline(
        resumed_client, lambda: Batch(meta={"index": next(drawn)}), 1, steps_left=lambda: 2 - len(taken)
    )
    taken: list[Batch] = []
    _, batch, _ = pipeline.take({})
    taken.append(batch)
    resumed_client.trainer_weights = 1
    pipeline.finish_step(True, {})
    state = pipeline.state_dict()  # checkpoint after step 1: generation 2 (by weights 0) is ahead
    assert [(p.meta["index"], b["sampled_by"].tolist(), v) for p, b, v in state["in_flight"]] == [(2, [0], 0)]

    fresh = RolloutPipeline(RecordingClient(), lambda: Batch(meta={"index": 99}), 1, steps_left=lambda: 0)
    fresh.load_state_dict(state)
    prompts, batch, metrics = fresh.take({})
    assert prompts.meta["index"] == 2 and batch["sampled_by"].tolist() == [0]  # not regenerated
    assert metrics["async/staleness/max"] == 1.0  # as in the uninterrupted run's step 2
    assert fresh.client.events == []


@pytest.mark.parametrize("max_staleness", [1, 2, 3])
@pytest.mark.parametrize("checkpoint_step", [1, 2, 3, 4])
def test_a_resume_from_any_step_samples_what_the_uninterrupted_run_does(
    max_staleness: int, checkpoint_step: int
) -> None:
    """Each batch's prompts and the weights that sampled it, resumed at `checkpoint_step` vs uninterrupted: the same
    at every bound (a resumed run's engines start from the checkpoint's weights, which the uninterrupted run's
    engines hold whenever they still have a generation to sample)."""

    def trained(resume: bool) -> list[tuple[int, int]]:
        num_steps, client, seen = 6, RecordingClient(), []
        state = {"drawn": 0, "step": 0}  # the loader's position and the trainer's step (both in a checkpoint)

        def next_prompts() -> Batch:
            state["drawn"] += 1
            return Batch(meta={"index": state["drawn"]})

        def new_pipeline(client: RecordingClient) -> RolloutPipeline:
            return RolloutPipeline(client, next_prompts, max_staleness, steps_left=lambda: num_steps - state["step"])

        pipeline = new_pipeline(client)
        for step in range(1, num_steps + 1):
            state["step"] = step  # the trainer counts the step before it takes the batch
            prompts, batch, _ = pipeline.take({})
            seen.append((prompts.meta["index"], batch["sampled_by"].item()))
            client.trainer_weights += 1
            pipeline.finish_step(True, {})
            if resume and step == checkpoint_step:  # a new process: engines loaded from the checkpoint's weights
                checkpoint = pipeline.state_dict()
                client = RecordingClient()
                client.engine_weights = client.trainer_weights = step
                pipeline = new_pipeline(client)
                pipeline.load_state_dict(checkpoint)
        return seen

    assert trained(resume=True) == trained(resume=False)
