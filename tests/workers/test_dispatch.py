"""Dispatch is declared once, on the worker method; every group wrapper calls exactly that method with its signature."""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported (through the worker modules)

import pytest  # noqa: E402
from rlhf.workers.base import Collect, Mode, dispatch_spec  # noqa: E402
from rlhf.workers.group import WorkerGroup  # noqa: E402

from rlhf.batch import Batch  # noqa: E402
from rlhf.cluster import ActorRolloutRefGroup, CriticGroup, RewardGroup, RewardModelGroup, RolloutGroup  # noqa: E402
from rlhf.sft_trainer import SFTGroup  # noqa: E402

GROUPS = [ActorRolloutRefGroup, CriticGroup, RewardGroup, RewardModelGroup, RolloutGroup, SFTGroup]


def wrappers(group: type[WorkerGroup]) -> dict[str, object]:
    return {name: fn for name, fn in vars(group).items() if inspect.isfunction(fn) and not name.startswith("_")}


def dispatched(worker: type) -> dict[str, object]:
    found = {}
    for name, fn in inspect.getmembers(worker, inspect.isfunction):
        try:
            dispatch_spec(fn)
        except TypeError:
            continue
        found[name] = fn
    return found


def expected_return(worker_return: str, collect: Collect) -> str:
    return {
        Collect.CONCAT: "Batch",
        Collect.LIST: f"list[{worker_return}]",
        Collect.NONE: "None",
    }.get(collect, worker_return)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_every_dispatched_method_has_one_matching_wrapper(group: type[WorkerGroup]) -> None:
    worker = group.worker_cls
    assert set(wrappers(group)) == set(dispatched(worker)), f"{group.__name__} wrappers vs {worker.__name__} methods"
    for name, wrapper in wrappers(group).items():
        method = getattr(worker, name)
        spec = dispatch_spec(method)
        ours, theirs = inspect.signature(wrapper), inspect.signature(method)
        # ray.remote(cls) adds a `_ray_trace_ctx` keyword to the class's own methods once a group was built here.
        their_params = [p for p in list(theirs.parameters.values())[1:] if p.name != "_ray_trace_ctx"]
        assert list(ours.parameters.values())[1:] == their_params, f"{name}: parameters differ"
        assert ours.return_annotation == expected_return(theirs.return_annotation, spec.collect), (
            f"{name}: returns {ours.return_annotation}, the worker returns {theirs.return_annotation} "
            f"collected by {spec.collect}"
        )
        if spec.mode is Mode.DP:
            first = list(theirs.parameters.values())[1]
            assert first.annotation == "Batch", f"{name} is split over ranks (DP): its first argument must be a Batch"


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.__name__)
def test_every_wrapper_calls_its_own_worker_method(group: type[WorkerGroup]) -> None:
    calls: list[object] = []
    instance = object.__new__(group)
    instance.call = lambda method, *args, **kwargs: calls.append(method)  # type: ignore[method-assign]
    for name, wrapper in wrappers(group).items():
        params = list(inspect.signature(wrapper).parameters.values())[1:]
        args = [Batch() if p.annotation == "Batch" else object() for p in params if p.default is p.empty]
        calls.clear()
        wrapper(instance, *args)
        assert calls == [getattr(group.worker_cls, name)], f"{group.__name__}.{name} calls {calls}"


def test_collect_modes() -> None:
    assert Collect.FIRST.apply([3, 4]) == 3
    assert Collect.MAX.apply([3.0, 5.0, 4.0]) == 5.0
    assert Collect.SUM.apply([(1.0, 2.0), (3.0, 4.0)]) == (4.0, 6.0)
    assert Collect.SUM.apply([1, 2]) == 3
    assert Collect.LIST.apply([1, 2]) == [1, 2]
    assert Collect.NONE.apply([None, None]) is None
    merged = Collect.CONCAT.apply([Batch(non_tensors={"x": [1]}), Batch(non_tensors={"x": [2, 3]})])
    assert merged.non_tensors["x"] == [1, 2, 3]


def test_call_refuses_a_method_of_another_worker() -> None:
    instance = object.__new__(CriticGroup)
    instance.role = "critic"
    with pytest.raises(TypeError, match="is not a method of CriticWorker"):
        WorkerGroup.call(instance, SFTGroup.worker_cls.init_model)
