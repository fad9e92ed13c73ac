"""RewardRunner: scores responses with one reward function, in worker processes with a timeout per item.

A reward function that raises (or returns NaN / inf) scores 0.0 and is counted; one that hangs is killed after `timeout_s` and its
process replaced, so one bad sample never stalls training.
"""

import logging
import math
from dataclasses import dataclass, field

from rlhf.rewards.pool import ScoringPool
from rlhf.rewards.registry import RewardFn, load_reward_fn, reward_fn_spec
from rlhf.rewards.scoring import Outcome, RewardItem, score_one

logger = logging.getLogger(__name__)


@dataclass
class RewardResult:
    """Scores for a list of RewardItems, in order, plus what went wrong."""

    scores: list[float]
    """One score per item; 0.0 where the function raised or timed out."""
    extra: dict[str, list[float]] = field(default_factory=dict)
    """Extra numeric values from dict returns, one list per key aligned with scores; NaN where an item lacks it."""
    error_flags: list[bool] = field(default_factory=list)
    """Per item: the function raised, returned a non-number or a NaN / inf value, or killed its worker process."""
    timeout_flags: list[bool] = field(default_factory=list)
    """Per item: it ran past timeout_s (its worker was killed and replaced)."""
    first_traceback: str | None = None
    """Traceback of the first failed item of this call, if any."""

    @property
    def num_errors(self) -> int:
        return sum(self.error_flags)

    @property
    def num_timeouts(self) -> int:
        return sum(self.timeout_flags)


class RewardRunner:
    """Scores RewardItems with one reward function, in a pool of worker processes with per-item timeouts.

    Example:
        with RewardRunner("my_pkg.rewards:score", num_workers=4, timeout_s=10.0) as runner:
            result = runner.score([RewardItem("gsm8k", "... #### 42", "42")])
            result.scores  # [1.0]

    The pool starts on the first `score()` and is reused; `close()` (or leaving the `with` block) stops it.
    `num_workers=0` scores inline in the calling process: no start-up cost and no IPC, but no timeout either (a
    hanging function hangs the caller). Workers start with multiprocessing's forkserver (spawn where there is
    none), so, as for any such pool, the caller's `__main__` must be import-safe (`if __name__ == "__main__":`).
    Workers are daemon processes: a reward function may run subprocesses but not start multiprocessing children.
    Not thread-safe: call `score()` from one thread at a time.
    """

    def __init__(self, fn: RewardFn | str | None = None, *, num_workers: int, timeout_s: float) -> None:
        """
        Args:
            fn: a module-level reward function, its spec ("package.module:function" or "/path/file.py:function"),
                or None for the built-in function of each item's data source (default_reward_fn).
            num_workers: worker processes; 0 scores inline (no timeout enforcement).
            timeout_s: seconds one item may take in a worker before it scores 0.0 and its worker is replaced.

        Raises:
            ValueError: num_workers < 0, timeout_s <= 0, a bad spec, or (with workers) a function that a worker
                cannot load by module and name (a lambda or a nested function).
        """
        if num_workers < 0:
            raise ValueError(f"reward.num_workers={num_workers} must be >= 0 (0 scores inline)")
        if not timeout_s > 0:
            raise ValueError(f"reward.timeout_s={timeout_s} must be > 0")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        # Loaded here too, so that a bad spec fails now, in the caller, with a clear message.
        self._fn: RewardFn | None = load_reward_fn(fn) if isinstance(fn, str) else fn
        self._pool: ScoringPool | None = None
        if num_workers > 0:
            # Workers get a spec, never the function object: a file plugin is not importable by pickle's reference.
            spec = fn if isinstance(fn, str) or fn is None else reward_fn_spec(fn)
            self._pool = ScoringPool(spec, num_workers, timeout_s)
        self._has_logged_error = False
        self._has_logged_timeout = False

    def __enter__(self) -> "RewardRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes; a later score() starts new ones."""
        if self._pool is not None:
            self._pool.close()

    def score(self, items: list[RewardItem]) -> RewardResult:
        """Score every item; a failing or hanging reward function scores 0.0 and is counted, never raised.

        Returns:
            RewardResult with one score per item, in order.

        Raises:
            RuntimeError: a worker could not load the reward function or did not start.
        """
        if not items:
            return RewardResult(scores=[])
        if self._pool is None:
            outcomes, timed_out = [score_one(self._fn, item) for item in items], set()
        else:
            outcomes, timed_out = self._pool.run(items)
        result = _gather(outcomes, timed_out)
        self._log_first_problems(items, outcomes, result)
        return result

    def _log_first_problems(self, items: list[RewardItem], outcomes: list[Outcome], result: RewardResult) -> None:
        if result.first_traceback is not None and not self._has_logged_error:
            self._has_logged_error = True
            data_source = next(item.data_source for item, o in zip(items, outcomes, strict=True) if o[2] is not None)
            logger.warning(
                "reward function failed on a %s item (scored 0.0; later failures are only counted):\n%s",
                data_source,
                result.first_traceback,
            )
        if result.num_timeouts and not self._has_logged_timeout:
            self._has_logged_timeout = True
            logger.warning(
                "reward function ran past reward.timeout_s=%s on %d item(s): scored 0.0, worker replaced (later "
                "timeouts are only counted)",
                self.timeout_s,
                result.num_timeouts,
            )


def _gather(outcomes: list[Outcome], timed_out: set[int]) -> RewardResult:
    keys = list(dict.fromkeys(key for _, extra, _ in outcomes for key in extra))
    tracebacks = [tb for _, _, tb in outcomes if tb is not None]
    return RewardResult(
        scores=[score for score, _, _ in outcomes],
        extra={key: [extra.get(key, math.nan) for _, extra, _ in outcomes] for key in keys},
        error_flags=[tb is not None for _, _, tb in outcomes],
        timeout_flags=[i in timed_out for i in range(len(outcomes))],
        first_traceback=tracebacks[0] if tracebacks else None,
    )
