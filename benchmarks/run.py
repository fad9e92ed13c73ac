"""The cross-framework GRPO benchmark driver (runs in our .venv): ours vs TRL's GRPOTrainer on one workload.

    .venv/bin/python benchmarks/run.py --workload 25m --dtype fp32 --rounds 3 --steps 4

Interleaves the frameworks A B A B: `--rounds` rounds, each a fresh process per framework running `--steps` RL
steps, the first step of every process excluded as warm-up. While a process runs, the resident memory of its whole
process tree (Ray's daemons and workers included) is sampled. Prints per-stage medians [min, max], tokens/s, peak
memory, ours / TRL, and the floor (benchmarks/floor.py); writes everything to a JSON file under .bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ours
import psutil
import report
from workload import build_workload
from workloads import BENCH_DIR, RESULTS_DIR, ROOT, WORKLOADS, Workload, get_workload

TRL_SCRIPT = ROOT / "benchmarks" / "trl_grpo.py"
FLOOR_SCRIPT = ROOT / "benchmarks" / "floor.py"


class TreeMemorySampler(threading.Thread):
    """Peak summed RSS (and PSS, which splits shared pages fairly) of a process and all its descendants.

    RSS is cheap to read and is read every `interval_s`. PSS is not: psutil walks every mapping of every process
    (~150-230 ms of CPU per read of our 18-process, ~6 GiB tree, 2026-12-08), which on a 2-core machine would slow
    the framework being measured, and the larger tree more. So PSS is read only when the summed RSS tops its
    highest value so far by `pss_growth` (and on the first tick): the PSS peak is taken where memory peaks.
    """

    def __init__(self, pid: int, interval_s: float = 0.5, pss_growth: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root, self.interval_s, self.pss_growth = psutil.Process(pid), interval_s, pss_growth
        self.peak_rss = self.peak_pss = 0
        self.ticks = self.pss_reads = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        rss_at_last_pss = -1
        while not self.stop_event.wait(self.interval_s if self.ticks else 0.0):
            self.ticks += 1
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = _sum_memory(procs, "rss")
            self.peak_rss = max(self.peak_rss, rss)
            if rss > rss_at_last_pss * (1 + self.pss_growth):
                rss_at_last_pss = rss
                self.peak_pss = max(self.peak_pss, _sum_memory(procs, "pss"))
                self.pss_reads += 1


def _sum_memory(procs: list[psutil.Process], kind: str) -> int:
    """Summed "rss" (memory_info) or "pss" (memory_full_info) of the processes still alive."""
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss if kind == "rss" else p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a process that ended between listing and reading
    return total


def run_process(cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> dict[str, float]:
    """Run `cmd` in its own process group, sampling its tree's memory; kill the group if it overruns.

    Raises:
        RuntimeError: non-zero exit or timeout (names the log file).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = TreeMemorySampler(proc.pid)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this driver created for it
            proc.wait()
            raise RuntimeError(f"{cmd[:4]} ran past --timeout={timeout_s:.0f} s; see {log}") from None
        finally:
            sampler.stop_event.set()
            sampler.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {code}; see {log}")
    return {
        "wall_s": time.perf_counter() - start,
        "peak_rss_gib": sampler.peak_rss / 2**30,
        "peak_pss_gib": sampler.peak_pss / 2**30,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def clean_env(threads: int | None) -> dict[str, str]:
    """This environment without OMP_NUM_THREADS (ours sets it per worker), or with it set to `threads`."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"})
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_round(framework: str, workload: Workload, args: argparse.Namespace, out: Path) -> dict:
    """One fresh process of `framework` for args.steps steps; its process stats and its measured steps."""
    if framework == "ours":
        cmd = ours.command(
            workload, args.dtype, args.steps, out, python=str(args.ours_python), overrides=tuple(args.ours_override)
        )
        # A private Ray temp dir: ray.init() joins any cluster `ray start` left recorded in /tmp/ray (another
        # user's on a shared machine); the benchmark always starts its own. Short path: Ray's sockets live there.
        ray_tmp = tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")
        try:
            stats = run_process(cmd, {**clean_env(None), "RAY_TMPDIR": ray_tmp}, out / "log.txt", args.timeout)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        records = ours.read_steps(ours.metrics_file(out), workload.num_samples)
    else:
        cmd = [str(args.trl_python), str(TRL_SCRIPT), f"--workload={workload.name}", f"--dtype={args.dtype}"]
        cmd += [f"--steps={args.steps}", f"--out={out}"]
        cmd += [f"--vllm-dtype={args.trl_vllm_dtype}", "--vllm"] if args.trl_vllm else []
        stats = run_process(cmd, clean_env(args.trl_threads), out / "log.txt", args.timeout)
        records = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    if len(records) != args.steps:
        raise RuntimeError(f"{framework} logged {len(records)} steps, expected {args.steps}; see {out / 'log.txt'}")
    return {**stats, "steps": records[args.warmup :]}


def run_floor(workload: Workload, args: argparse.Namespace, out: Path) -> dict:
    """benchmarks/floor.py in a fresh process (after the rounds, so that it never overlaps them)."""
    cmd = [str(args.ours_python), str(FLOOR_SCRIPT), f"--workload={workload.name}", f"--dtype={args.dtype}"]
    cmd += [f"--steps={max(args.floor_steps, 2)}", f"--out={out / 'floor.json'}"]
    run_process(cmd, clean_env(None), out / "floor-log.txt", args.timeout)
    return json.loads((out / "floor.json").read_text())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="25m")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (each a fresh process per framework)")
    parser.add_argument("--steps", type=int, default=4, help="RL steps per process, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each process left out")
    parser.add_argument("--frameworks", default="ours,trl", help="comma-separated, run in this order each round")
    parser.add_argument("--no-floor", action="store_true", help="skip the GEMM probe and vLLM-alone run")
    parser.add_argument("--floor-steps", type=int, default=4, help="prompt batches vLLM alone generates")
    parser.add_argument("--trl-threads", type=int, help="OMP_NUM_THREADS for TRL (default: torch's, = cores)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one process may run")
    parser.add_argument(
        "--trl-vllm", action="store_true", help="TRL's colocated vLLM generation (bash benchmarks/setup.sh --vllm)"
    )
    parser.add_argument(
        "--trl-vllm-dtype",
        choices=("match", "auto"),
        default="match",
        help="with --trl-vllm: vLLM in --dtype (match) or TRL's default (auto: bf16 for this fp32 checkpoint)",
    )
    parser.add_argument("--ours-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument(
        "--ours-override",
        action="append",
        default=[],
        help="extra Hydra key=value for ours, e.g. its layout (repeatable; recorded in the result file's args)",
    )
    parser.add_argument(
        "--trl-python", type=Path, help="default: .bench/trl-venv (.bench/trl-vllm-venv with --trl-vllm)"
    )
    parser.add_argument("--out", type=Path, help="result JSON (default .bench/results/<workload>-<dtype>-<time>.json)")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    if not frameworks or any(f not in ("ours", "trl") for f in frameworks):
        parser.error(f"--frameworks={args.frameworks!r}: choose from ours, trl (comma-separated)")
    if args.steps <= args.warmup:
        parser.error(f"--steps={args.steps} must exceed --warmup={args.warmup}: no step would be measured")
    args.frameworks = frameworks
    if args.trl_python is None:
        args.trl_python = BENCH_DIR / ("trl-vllm-venv" if args.trl_vllm else "trl-venv") / "bin" / "python"
    return args


Rounds = dict[str, list[dict]]  # per framework: each successful process's stats and measured steps


def run_rounds(workload: Workload, args: argparse.Namespace, run_dir: Path) -> tuple[Rounds, list[dict]]:
    """A B A B: `args.rounds` rounds, each a fresh process per framework.

    Returns:
        (per framework with at least one successful round, its rounds' results; the failed processes).

    Raises:
        RuntimeError: every process failed.
    """
    rounds: Rounds = {f: [] for f in args.frameworks}
    failures: list[dict] = []
    for k in range(args.rounds):
        for framework in args.frameworks:
            print(f"round {k + 1}/{args.rounds}: {framework} ({args.steps} steps) ...", flush=True)
            try:
                result = run_round(framework, workload, args, run_dir / f"{framework}-{k}")
            except RuntimeError as e:  # a failed process (e.g. out of memory) must not lose the other rounds
                print(f"  FAILED: {e}", flush=True)
                failures.append({"framework": framework, "round": k, "error": str(e)})
                continue
            rounds[framework].append(result)
            step_s = [round(s["timing_s/step"], 2) for s in result["steps"]]
            print(
                f"  wall {result['wall_s']:.0f} s, measured steps {step_s} s, peak RSS "
                f"{result['peak_rss_gib']:.2f} GiB, 1-min load {result['load_before']:.1f} -> "
                f"{result['load_after']:.1f}",
                flush=True,
            )
    if failures:
        print(f"{len(failures)} process(es) failed: {[(f['framework'], f['round']) for f in failures]}", flush=True)
    rounds = {f: rs for f, rs in rounds.items() if rs}
    if not rounds:
        raise RuntimeError(f"every process failed; first error: {failures[0]['error']}")
    return rounds, failures


def report_floor(floor: dict, summaries: dict, dtype: str) -> dict[str, dict[str, float]]:
    """Print the floor and each framework's step / floor; returns them per framework."""
    peak = floor["gemm_gflops"][dtype]["peak"]
    vllm_s = floor["vllm_alone"]["seconds_per_batch"]
    peaks = ", ".join(f"{d} {g['peak']:.1f}" for d, g in floor["gemm_gflops"].items())
    print(
        f"GEMM peak at {floor['gemm_threads']} threads (GFLOP/s): {peaks}; vLLM alone {vllm_s:.3f} s per batch "
        f"({floor['vllm_alone']['procs']} engines x {floor['vllm_alone']['threads']} thread)"
    )
    out = {}
    for f, summary in summaries.items():
        fl = report.floor_seconds(floor["num_params"], summary["tokens"]["median"], peak, vllm_s)
        fl["ratio"] = summary["step"]["median"] / fl["step_s"]
        out[f] = fl
        print(
            f"floor at {f}'s real tokens: {fl['step_s']:.3f} s/step (train {fl['train_s']:.3f} + gen "
            f"{fl['gen_s']:.3f}); {f} / floor = {fl['ratio']:.2f}x"
        )
    return out


def main() -> None:
    args = parse_args()
    workload = get_workload(args.workload)
    build_workload(workload)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = BENCH_DIR / "runs" / f"{workload.name}-{args.dtype}-{stamp}"
    rounds, failures = run_rounds(workload, args, run_dir)
    summaries = {f: report.summarize([s for r in rs for s in r["steps"]]) for f, rs in rounds.items()}
    memory = {
        f: {k: max(r[k] for r in rs) for k in ("peak_rss_gib", "peak_pss_gib", "wall_s")} for f, rs in rounds.items()
    }
    result = {
        "workload": workload.name,
        "dtype": args.dtype,
        "trl_generation": f"vLLM colocate ({args.trl_vllm_dtype}), sync via reload_weights"
        if args.trl_vllm
        else "transformers generate",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "summaries": summaries,
        "memory": memory,
        "rounds": rounds,
        "failures": failures,
    }
    print(f"\n## {workload.name}, {args.dtype}: {args.rounds} round(s) x {args.steps - args.warmup} measured step(s)\n")
    print(report.format_table(summaries))
    for f, m in memory.items():
        print(
            f"{f}: peak RSS {m['peak_rss_gib']:.2f} GiB (PSS {m['peak_pss_gib']:.2f} GiB); "
            f"process wall <= {m['wall_s']:.0f} s"
        )
    if "ours" in summaries and "trl" in summaries:
        result["ratios"] = report.ratios(summaries["ours"], summaries["trl"])
        print("ours / TRL (medians; best vs best): " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()))
    if not args.no_floor:
        result["floor"] = run_floor(workload, args, run_dir)
        result["vs_floor"] = report_floor(result["floor"], summaries, args.dtype)
    out = args.out or RESULTS_DIR / f"{workload.name}-{args.dtype}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nresult: {out}\nlogs: {run_dir}")


if __name__ == "__main__":
    main()
