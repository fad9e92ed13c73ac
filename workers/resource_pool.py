"""ResourcePool: the Ray placement group a worker group runs in, one bundle per node, ranks laid out node-major.

A pool of N ranks over k nodes is one placement group of k bundles with strategy STRICT_SPREAD (each bundle on its
own node), each bundle holding N/k ranks' CPUs, GPUs and memory; rank r runs in bundle r // (N/k). Before reserving,
the cluster's nodes are checked: a request no set of alive nodes can ever satisfy fails at once, naming the group and
what is missing, and one that exists but is in use fails after a timeout instead of waiting silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup

GIB = 1024**3


@dataclass(frozen=True)
class ResourcePool:
    """A placement group with one bundle per node, each holding `ranks_per_node` ranks' resources.

    Ranks are laid out node-major: rank r runs in bundle r // ranks_per_node, so ranks 0..k-1 share the first node,
    k..2k-1 the second, and so on (consecutive ranks, e.g. one vLLM tensor-parallel group, share a node). The
    bundles use STRICT_SPREAD: each on a different node. `device` is "cpu" or "cuda".
    """

    placement_group: PlacementGroup
    num_nodes: int
    ranks_per_node: int
    cpus_per_rank: float
    gpus_per_rank: float
    memory_bytes_per_rank: int
    device: str

    @property
    def num_ranks(self) -> int:
        return self.num_nodes * self.ranks_per_node

    def bundle_of(self, rank: int) -> int:
        """The bundle (= node) index that rank `rank` runs in."""
        return rank // self.ranks_per_node

    @staticmethod
    def create(
        num_ranks: int,
        cpus_per_rank: float,
        device: str,
        *,
        num_nodes: int = 1,
        gpus_per_rank: float = 1.0,
        memory_gb_per_rank: float = 0.0,
        role: str = "workers",
        timeout_s: float = 30.0,
        hint: str = "",
    ) -> ResourcePool:
        """Reserve `num_ranks` ranks' resources as `num_nodes` per-node bundles, or fail naming what is missing.

        Args:
            num_ranks: ranks in all; a multiple of `num_nodes`.
            cpus_per_rank, gpus_per_rank, memory_gb_per_rank: what each rank reserves (GPUs only on "cuda").
            role: the group's name, for the error messages.
            timeout_s: how long to wait for resources that exist in the cluster but are in use.
            hint: the config keys that set these numbers, appended to the error messages.

        Raises:
            ValueError: `num_ranks` is not a multiple of `num_nodes`.
            RuntimeError: fewer than `num_nodes` alive nodes could ever hold one bundle (at once), or the bundles
                were not reserved within `timeout_s` (the placement group is removed again).
        """
        if num_nodes < 1 or num_ranks % num_nodes:
            raise ValueError(f"{role}: {num_ranks} ranks cannot be split evenly over {num_nodes} nodes")
        ranks_per_node = num_ranks // num_nodes
        memory_bytes = int(memory_gb_per_rank * GIB)
        per_rank = {"CPU": cpus_per_rank, "GPU": gpus_per_rank if device == "cuda" else 0.0, "memory": memory_bytes}
        bundle = {k: v * ranks_per_node for k, v in per_rank.items() if v > 0}
        suffix = f" ({hint})" if hint else ""
        check_cluster_can_hold(role, bundle, num_nodes, suffix)
        pg = ray.util.placement_group([dict(bundle) for _ in range(num_nodes)], strategy="STRICT_SPREAD")
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if not ready:
            ray.util.remove_placement_group(pg)
            raise RuntimeError(
                f"Ray could not reserve the {role} group within {timeout_s:g} s: {num_nodes} node(s) x "
                f"{describe(bundle)} are in the cluster but in use; free now: {describe(ray.available_resources())}"
                f"{suffix}"
            )
        return ResourcePool(pg, num_nodes, ranks_per_node, cpus_per_rank, per_rank["GPU"], memory_bytes, device)


def describe(resources: dict[str, float]) -> str:
    """{"CPU": 2, "memory": 2 GiB in bytes} -> "{CPU: 2, memory: 2 GiB}" (node-id resources left out)."""
    parts = []
    for key, value in sorted(resources.items()):
        if key.startswith("node:") or key.startswith("accelerator_type"):
            continue
        parts.append(f"{key}: {value / GIB:g} GiB" if key in ("memory", "object_store_memory") else f"{key}: {value:g}")
    return "{" + ", ".join(parts) + "}"


def check_cluster_can_hold(role: str, bundle: dict[str, float], num_nodes: int, suffix: str = "") -> None:
    """Fail at once when fewer than `num_nodes` alive nodes have `bundle`'s resources in total (Ray would wait forever).

    Raises:
        RuntimeError: naming the group, what each node needs, how many nodes have it and what every node has.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if all(n["Resources"].get(k, 0.0) >= v for k, v in bundle.items())]
    if len(fits) >= num_nodes:
        return
    have = "; ".join(f"node {n['NodeID'][:12]} ({n['NodeManagerAddress']}): {describe(n['Resources'])}" for n in nodes)
    short = {
        k: v for k, v in bundle.items() if not any(n["Resources"].get(k, 0.0) >= v for n in nodes)
    }  # what no node has at all
    missing = f"; no node has {describe(short)}" if short else ""
    raise RuntimeError(
        f"the {role} group needs {num_nodes} node(s) with {describe(bundle)} each, and the Ray cluster has "
        f"{len(fits)} such node(s) of {len(nodes)}{missing}. Nodes: {have}{suffix}"
    )
