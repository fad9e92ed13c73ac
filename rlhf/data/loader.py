"""PromptDataLoader: batches of rows, epoch after epoch, in an order fixed by (seed, epoch) so resume is exact."""

import logging
import random
from typing import Any

logger = logging.getLogger(__name__)


class PromptDataLoader:
    """Endless batches of verl rows; `state_dict()` / `load_state_dict()` resume the exact same order.

    Each epoch visits every row once, in a permutation that depends only on (seed, epoch), so a loader restored
    from a state yields exactly the batches the original would have, with nothing to replay.

    Example:
        loader = PromptDataLoader(rows, batch_size=64, shuffle=True, seed=1)
        batch = loader.next_batch()          # list of 64 row dicts
        state = loader.state_dict()          # saved with the checkpoint
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool = True,
    ) -> None:
        """
        Args:
            rows: the (filtered) dataset.
            batch_size: prompts per batch (`data.train_batch_size`).
            shuffle: a fresh permutation every epoch; False keeps file order.
            seed: seeds the permutations (with the epoch number).
            drop_last: skip the last, short batch of an epoch (so every batch has batch_size rows).

        Raises:
            ValueError: batch_size < 1, no rows, or batch_size > number of rows with drop_last.
        """
        if batch_size < 1:
            raise ValueError(f"data.train_batch_size={batch_size} must be >= 1")
        if not rows:
            raise ValueError("PromptDataLoader got no rows; the dataset is empty")
        if drop_last and batch_size > len(rows):
            raise ValueError(
                f"data.train_batch_size={batch_size} is larger than the dataset ({len(rows)} rows), so an epoch "
                "has no full batch; lower data.train_batch_size or use more data"
            )
        self.rows = rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.index = 0  # batches already taken from the current epoch
        self._order_epoch: int | None = None  # epoch that _order belongs to
        self._order: list[int] = []

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return len(self.rows) // self.batch_size
        return -(-len(self.rows) // self.batch_size)

    def _epoch_order(self, epoch: int) -> list[int]:
        if self._order_epoch != epoch:
            order = list(range(len(self.rows)))
            if self.shuffle:
                # A string seed is hashed with SHA-512 by `random`: stable across processes and Python runs
                # (unlike hash()), and (seed, epoch) pairs never collide the way seed + epoch would.
                random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._order, self._order_epoch = order, epoch
        return self._order

    def next_batch(self) -> list[dict[str, Any]]:
        """The next batch of rows, moving to the next epoch when this one is used up."""
        if self.index >= len(self):
            self.epoch += 1
            self.index = 0
        order = self._epoch_order(self.epoch)
        start = self.index * self.batch_size
        self.index += 1
        return [self.rows[i] for i in order[start : start + self.batch_size]]

    def state_dict(self) -> dict[str, int]:
        """Where the loader stands: `{"epoch", "index" (batches taken this epoch), "seed"}`."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved `state_dict()`; the saved seed wins, so the resumed order matches the original.

        Raises:
            ValueError: the state has missing keys or an index beyond this epoch's batches.
        """
        missing = {"epoch", "index", "seed"} - set(state)
        if missing:
            raise ValueError(f"data loader state {state} is missing keys {sorted(missing)}")
        if not 0 <= state["index"] <= len(self) or state["epoch"] < 0:
            raise ValueError(
                f"data loader state {state} does not fit this dataset ({len(self)} batches per epoch); "
                "did data.train_batch_size or the data file change since the checkpoint?"
            )
        if state["seed"] != self.seed:
            logger.warning(
                "data loader: resuming with the checkpoint's seed %d (configured %d)", state["seed"], self.seed
            )
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
        self._order_epoch = None
