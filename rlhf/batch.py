"""The Batch that flows between the controller and the workers.

Tensors share a leading batch dimension; per-sample Python values (prompt text, ground truth, data source, the uid
of the prompt group) ride along in `non_tensors`; `meta` holds scalars (step, temperature, ...). A Batch splits into
chunks and concatenates back losslessly, which is all the dispatch layer needs.

Standard tensor keys: prompts, responses, input_ids, attention_mask, position_ids, response_mask, rollout_log_probs,
old_log_probs, ref_log_probs, values, token_level_scores, token_level_rewards, advantages, returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Batch:
    """A column store of equal-length fields.

    Attributes:
        tensors: name -> Tensor whose first dimension is the batch size.
        non_tensors: name -> list with one Python value per sample.
        meta: scalars and small objects that describe the whole batch.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    non_tensors: dict[str, list[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.tensors.items()}
        sizes.update({k: len(v) for k, v in self.non_tensors.items()})
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Batch fields disagree on the batch size: {sizes}")
        self.non_tensors = {k: list(v) for k, v in self.non_tensors.items()}

    def __len__(self) -> int:
        for v in self.tensors.values():
            return v.shape[0]
        for v in self.non_tensors.values():
            return len(v)
        return 0

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.non_tensors

    def __getitem__(self, key: str) -> torch.Tensor:
        """Shorthand for `batch.tensors[key]` with an error that lists what the batch holds."""
        if key not in self.tensors:
            raise KeyError(f"Batch has no tensor {key!r}; tensors: {sorted(self.tensors)}")
        return self.tensors[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if self.tensors or self.non_tensors:
            if value.shape[0] != len(self):
                raise ValueError(f"tensor {key!r} has batch size {value.shape[0]}, batch has {len(self)}")
        self.tensors[key] = value

    def select(self, keys: Iterable[str]) -> Batch:
        """A new Batch with only `keys` (tensors or non-tensors); meta is kept."""
        keys = list(keys)
        missing = [k for k in keys if k not in self]
        if missing:
            raise KeyError(f"Batch has no fields {missing}; it holds {sorted(self.tensors) + sorted(self.non_tensors)}")
        return Batch(
            {k: v for k, v in self.tensors.items() if k in keys},
            {k: v for k, v in self.non_tensors.items() if k in keys},
            dict(self.meta),
        )

    def update(self, other: Batch) -> Batch:
        """Add `other`'s fields (same batch size) to this Batch in place and return it."""
        if len(other) != len(self) and (self.tensors or self.non_tensors):
            raise ValueError(f"cannot merge batches of size {len(self)} and {len(other)}")
        self.tensors.update(other.tensors)
        self.non_tensors.update(other.non_tensors)
        self.meta.update(other.meta)
        return self

    def index(self, indices: torch.Tensor | Sequence[int]) -> Batch:
        """Rows `indices` (a 1-D index tensor, list, or bool mask) as a new Batch."""
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool:
            idx = idx.nonzero(as_tuple=True)[0]
        rows = idx.tolist()
        return Batch(
            {k: v[idx] for k, v in self.tensors.items()},
            {k: [v[i] for i in rows] for k, v in self.non_tensors.items()},
            dict(self.meta),
        )

    def split(self, num_chunks: int) -> list[Batch]:
        """Split into `num_chunks` consecutive parts whose sizes differ by at most one (larger parts first)."""
        if num_chunks < 1:
            raise ValueError(f"num_chunks={num_chunks} must be >= 1")
        base, extra = divmod(len(self), num_chunks)
        chunks, start = [], 0
        for i in range(num_chunks):
            stop = start + base + (1 if i < extra else 0)
            chunks.append(self.index(range(start, stop)))
            start = stop
        return chunks

    def chunk_by_size(self, chunk_size: int) -> list[Batch]:
        """Consecutive chunks of `chunk_size` rows (the last one may be smaller)."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        return [self.index(range(i, min(i + chunk_size, len(self)))) for i in range(0, len(self), chunk_size)]

    def repeat_interleave(self, repeats: int) -> Batch:
        """Each row `repeats` times in a row: [a, b] -> [a, a, b, b]."""
        return Batch(
            {k: v.repeat_interleave(repeats, dim=0) for k, v in self.tensors.items()},
            {k: [x for x in v for _ in range(repeats)] for k, v in self.non_tensors.items()},
            dict(self.meta),
        )

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Concatenate along the batch dimension; meta is taken from the first batch."""
        if not batches:
            raise ValueError("Batch.concat needs at least one batch")
        first = batches[0]
        for b in batches[1:]:
            if set(b.tensors) != set(first.tensors) or set(b.non_tensors) != set(first.non_tensors):
                raise ValueError(
                    f"cannot concatenate batches with different fields: {sorted(first.tensors)} vs {sorted(b.tensors)}"
                )
        return Batch(
            {k: torch.cat([b.tensors[k] for b in batches]) for k in first.tensors},
            {k: [x for b in batches for x in b.non_tensors[k]] for k in first.non_tensors},
            dict(first.meta),
        )

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to `device` (returns a new Batch sharing non-tensor lists)."""
        return Batch({k: v.to(device) for k, v in self.tensors.items()}, self.non_tensors, self.meta)


def group_ids(uids: list[str]) -> torch.Tensor:
    """[B] long: one integer per distinct prompt uid (a prompt's group of n responses), in order of first appearance."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(u, len(index)) for u in uids], dtype=torch.long)
