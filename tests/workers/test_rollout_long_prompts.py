"""vLLM-CPU crashed ("CPU Generator does not use offset") when a seeded request's prompt was prefilled in chunks,
which long prompts and multi-turn agent contexts trigger; the rollout prefills whole prompts on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).with_name("rollout_long_prompts.py")


def test_seeded_sampling_of_long_prompts(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(tiny_model_dir), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["num_rows"] == 96 and result["num_tokens"] > 96
