"""The benchmark's memory sampler on a real child process: it sees the child's memory, and reads PSS (costly) only
when the resident set grows, not on every tick."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts, not a package

from run import TreeMemorySampler  # noqa: E402

MIB = 2**20
# Touches 64 MiB, waits, touches 64 MiB more, waits: two growth steps, then a plateau.
CHILD = "import time; a = bytearray(64 << 20); time.sleep(0.6); b = bytearray(64 << 20); time.sleep(2.0)"


def test_sampler_takes_peak_rss_and_pss_of_the_tree_reading_pss_only_on_growth() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD])
    sampler = TreeMemorySampler(proc.pid, interval_s=0.05)
    sampler.start()
    try:
        proc.wait(timeout=30)
    finally:
        time.sleep(0.05)
        sampler.stop_event.set()
        sampler.join()
    assert proc.returncode == 0
    assert sampler.peak_rss >= 128 * MIB  # both buffers are zero-filled, so resident
    assert 100 * MIB <= sampler.peak_pss <= sampler.peak_rss
    assert sampler.ticks >= 30  # ~2.6 s at 0.05 s
    assert 1 <= sampler.pss_reads <= sampler.ticks // 4  # the plateaus cost no PSS read
