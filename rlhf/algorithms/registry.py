"""Name -> function registries behind `algorithm.advantage` and `algorithm.policy_loss`, and plugin loading.

The registries live here, below both the config and the estimators, so that `AlgorithmConfig.validate` can list
the registered names without importing the estimator modules (layering, not local imports).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Mapping[str, F], Generic[F]):
    """A read-only mapping from short names to functions, filled by the `register` decorator.

    Args:
        config_key: the config path that selects an entry (e.g. "algorithm.advantage"), named in errors.
    """

    def __init__(self, config_key: str) -> None:
        self.config_key = config_key
        self._entries: dict[str, F] = {}
        self._on_policy_only: set[str] = set()

    def register(self, name: str, *, override: bool = False, on_policy_only: bool = False) -> Callable[[F], F]:
        """Decorator adding `fn` under `name`; re-using a name raises unless `override=True`.

        `on_policy_only`: the entry's maths needs samples of the current policy (e.g. ReMax's greedy baseline), so
        asynchronous training with a staleness bound refuses it at start-up.
        """

        def decorator(fn: F) -> F:
            if name in self._entries and not override:
                raise ValueError(
                    f"{self.config_key} name {name!r} is already registered (by {self._entries[name].__module__}); "
                    "pick another name or pass override=True"
                )
            self._entries[name] = fn
            if on_policy_only:
                self._on_policy_only.add(name)
            else:
                self._on_policy_only.discard(name)
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove `name` (for tests, and for plugins that re-register after a reload); KeyError if absent."""
        del self._entries[name]
        self._on_policy_only.discard(name)

    def is_on_policy_only(self, name: str) -> bool:
        """Whether `name` was registered with `on_policy_only=True` (it cannot train on stale samples)."""
        return name in self._on_policy_only

    def lookup(self, name: str) -> F:
        """The function registered as `name`; ValueError naming the config key and the choices otherwise.

        (Mapping's own `get` keeps its usual meaning: None for an unknown name.)
        """
        if name not in self._entries:
            raise ValueError(
                f"{self.config_key}={name!r} is not registered; choose one of {sorted(self._entries)} "
                "(or register your own and list its module in algorithm.plugin_modules)"
            )
        return self._entries[name]

    def __getitem__(self, name: str) -> F:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


ADVANTAGE_ESTIMATORS: Registry = Registry("algorithm.advantage")
POLICY_LOSSES: Registry = Registry("algorithm.policy_loss")


def load_plugin_modules(module_names: list[str]) -> None:
    """Import user modules so their `@register_advantage` / `@register_policy_loss` decorators run.

    Call it in every process that looks names up: the driver (before `validate`) and each worker. Importing an
    already-imported module is a no-op, so calling it twice is safe.

    Raises:
        ValueError: a module cannot be imported; names `algorithm.plugin_modules`.
    """
    for module_name in module_names:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"algorithm.plugin_modules entry {module_name!r} cannot be imported ({err}); "
                "give a dotted module path importable from the working directory or the installed packages"
            ) from err
