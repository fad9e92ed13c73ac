"""DAPO's dynamic sampling: keep generating until enough prompt groups carry a learning signal.

A group whose n responses all got the same reward has zero advantage under group-relative estimators: it costs an
update and teaches nothing. DAPO drops such groups and generates more prompts until `data.train_batch_size` groups
with a signal are kept, or `algorithm.dynamic_sampling.max_num_gen_batches` generations were made (0: no limit);
a batch still short is topped up with dropped groups, so the update always sees whole groups.
"""

from __future__ import annotations

from collections.abc import Callable

from rlhf.algorithms import select_informative_groups
from rlhf.batch import Batch, group_ids


def fill_with_informative_groups(
    first: Batch, generate_more: Callable[[], Batch], target: int, max_num_gen_batches: int
) -> tuple[Batch, dict[str, float]]:
    """Whole groups for one update: informative ones first, from `first` and as many scored `generate_more()`
    batches as needed.

    Args:
        first: a scored batch (token_level_scores, and non_tensors["uid"] naming each row's prompt group).
        generate_more: generates and scores the next prompts.
        target: groups wanted (prompts per step).
        max_num_gen_batches: most generations per step, `first` included (0: no limit).

    Returns:
        The first `target` groups (informative before dropped, each in generation order), and dapo/num_gen_batches,
        dapo/num_dropped_groups and dapo/num_filled_groups (dropped groups used to fill a short batch).
    """
    kept, spare, num_gen, num_dropped = [], [], 1, 0
    batch = first
    while True:
        informative = select_informative_groups(
            batch["token_level_scores"].sum(-1), group_ids(batch.non_tensors["uid"])
        )
        dropped = batch.index(~informative)
        kept.append(batch.index(informative))
        spare.append(dropped)
        num_dropped += len(set(dropped.non_tensors["uid"]))
        num_kept = sum(len(set(b.non_tensors["uid"])) for b in kept)
        if num_kept >= target or (max_num_gen_batches > 0 and num_gen >= max_num_gen_batches):
            break
        num_gen += 1
        batch = generate_more()
    merged = Batch.concat([b for b in kept + spare if len(b)])
    chosen = set(list(dict.fromkeys(merged.non_tensors["uid"]))[:target])
    rows = [i for i, u in enumerate(merged.non_tensors["uid"]) if u in chosen]
    metrics = {
        "dapo/num_gen_batches": float(num_gen),
        "dapo/num_dropped_groups": float(num_dropped),
        "dapo/num_filled_groups": float(max(0, target - num_kept)),
    }
    return merged.index(rows), metrics
