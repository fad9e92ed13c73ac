"""A real 2-node Ray cluster on this machine: two raylets started with `ray start --head --block` and
`ray start --address=... --block` (each its own `--num-cpus` and custom resource), ended by their pids.

A GRPO run of 2 steps places its 2 actor ranks on the 2 nodes (read from the driver's placement log), writes a
checkpoint, and a second run resumes from it on the same cluster. Asking for more nodes or CPUs than the cluster has
fails in seconds, naming the key or the group and what is missing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from runs import ROOT, metrics, tiny_overrides

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
NODES = {"head": "node_a", "worker": "node_b"}  # a custom resource on each node, to tell them apart
PLACEMENT = re.compile(r"actor_rollout_ref rank (\d+)/2: node ([0-9a-f]+) ")
NODE_IDS = """
import json, ray
ray.init(address="{address}", logging_level="ERROR")
print(json.dumps({{n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The test cluster's own token (token authentication, as Ray clusters run): nothing is written to ~/.ray.
CLUSTER_TOKEN = secrets.token_hex(32)


def cluster_env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=CLUSTER_TOKEN)
    env.pop("RAY_ADDRESS", None)  # the runs name the cluster with trainer.ray_address
    return env


def stop(proc: subprocess.Popen) -> None:
    """End a `ray start --block` we started: it stops its node's processes on SIGTERM; leftovers get SIGKILL."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=60)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=30)


def alive_nodes(address: str) -> dict[str, list[str]]:
    """node id -> its resource names, from a short-lived driver (the test process itself never joins Ray)."""
    done = subprocess.run(
        [sys.executable, "-c", NODE_IDS.format(address=address)],
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_nodes(address: str, count: int, procs: list[subprocess.Popen], logs: Path) -> dict[str, list[str]]:
    """Poll until `count` nodes are alive (a loaded machine takes a while to start a raylet)."""
    deadline = time.monotonic() + 300
    while len(nodes := alive_nodes(address)) < count:
        assert all(p.poll() is None for p in procs), f"a raylet exited: see {logs}"
        assert time.monotonic() < deadline, f"{count} nodes not up after 300 s: see {logs}"
        time.sleep(3)
    return nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """(GCS address, {custom resource: node id}) of a 2-node cluster on loopback."""
    logs = tmp_path_factory.mktemp("cluster")
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    try:
        for role, args in (
            ("head", ["--head", f"--port={port}", "--include-dashboard=false"]),
            ("worker", [f"--address={address}"]),
        ):
            # `python -m ray.scripts.scripts` rather than the `ray` script: its shebang may name another venv's python,
            # whose workers would then import another checkout of this project.
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ray.scripts.scripts", "start", *args, *common,
                     f'--resources={{"{NODES[role]}": 1}}'],
                    env=cluster_env(),
                    cwd=logs,
                    stdout=(logs / f"{role}.log").open("w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
            nodes = wait_for_nodes(address, len(procs), procs, logs)
        by_resource = {res: node for node, names in nodes.items() for res in names if res in NODES.values()}
        yield address, by_resource
    finally:
        for proc in reversed(procs):
            stop(proc)


def step_rows(out_dir: Path) -> list[dict]:
    """The rows of metrics.jsonl that a training step wrote (a checkpoint's timing is a row of its own)."""
    return [row for row in metrics(out_dir) if "critic/score/mean" in row]


def run_driver(tiny_model_dir: Path, tmp_path: Path, address: str, *overrides: str, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "rlhf.main", "--config-name", "grpo_arith_tiny"]
    args += [*tiny_overrides(tiny_model_dir, tmp_path / "out", tmp_path / "data"), f"trainer.ray_address={address}"]
    args += ["trainer.nnodes=2", "trainer.num_devices_per_node=1", *overrides]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=cluster_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.wait(timeout=900)
    return proc


def test_grpo_across_two_nodes_then_resume(
    cluster: tuple[str, dict[str, str]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    address, node_of = cluster
    first = run_driver(tiny_model_dir, tmp_path, address, "trainer.total_steps=2", "trainer.save_freq=2",
                       log=tmp_path / "first.log")  # fmt: skip
    log = (tmp_path / "first.log").read_text()
    assert first.returncode == 0, log[-4000:]
    placed = dict(PLACEMENT.findall(log))
    assert set(placed) == {"0", "1"}, log[-4000:]
    # Node-major layout over the 2 nodes: each actor rank on its own node, both nodes of the cluster used.
    assert placed["0"] != placed["1"]
    assert {placed["0"], placed["1"]} == set(node_of.values())
    rows = step_rows(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["rollout/logprob_diff_max"] < 1e-3 and r["actor/grad_norm"] > 0 for r in rows)
    checkpoint = tmp_path / "out" / "rlhf" / "grpo_arith_tiny" / "checkpoints" / "step_00000002"
    assert (checkpoint / "COMPLETE").exists()
    assert sorted(p.name for p in (checkpoint / "actor").glob("rank*_state.pt")) == ["rank0_state.pt", "rank1_state.pt"]

    second = run_driver(tiny_model_dir, tmp_path, address, "trainer.total_steps=3", log=tmp_path / "second.log")
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, log[-4000:]
    assert f"resumed from {checkpoint} at step 2" in log
    assert set(dict(PLACEMENT.findall(log)).values()) == set(node_of.values())
    rows = step_rows(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["rollout/logprob_diff_max"] < 1e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # 4 ranks divide the batch sizes, so the node count is what fails
        (["trainer.nnodes=4"], "trainer.nnodes=4 but the Ray cluster has 2 alive node(s)"),
        (
            ["trainer.cpus_per_worker=3"],
            "the actor_rollout_ref group needs 2 node(s) with {CPU: 3} each, and the Ray cluster has 0 such node(s) "
            "of 2; no node has {CPU: 3}",
        ),
    ],
    ids=["too_many_nodes", "too_many_cpus"],
)
def test_missing_resources_fail_fast_naming_them(
    cluster: tuple[str, dict[str, str]], tiny_model_dir: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    address, _ = cluster
    start = time.monotonic()
    proc = run_driver(tiny_model_dir, tmp_path, address, "trainer.total_steps=1", *overrides, log=tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode != 0
    assert message in log, log[-3000:]
    assert "trainer.nnodes" in log or "trainer.cpus_per_worker" in log
    print(f"failed after {time.monotonic() - start:.1f} s")  # reported, not asserted: the machine is shared
