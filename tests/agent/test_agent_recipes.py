"""The agent recipes compose and validate; agent.* mistakes fail in the driver at start-up, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes import RECIPES, compose_recipe
from rlhf.config_checks import validate
from rlhf.schema import ConfigError

FNS = str(Path(__file__).with_name("tool_fns.py"))
AGENT_RECIPES = ["agent_calc_tiny", "agent_guess_tiny"]


def agent_cfg(name: str, tiny_model_dir: Path, *overrides: str):
    return compose_recipe(name, [f"model.path={tiny_model_dir}", "model.build_tiny=false", *overrides])


@pytest.mark.parametrize("name", AGENT_RECIPES)
def test_agent_recipes_compose_validate_and_start_with_their_command(name: str, tiny_model_dir: Path) -> None:
    cfg = agent_cfg(name, tiny_model_dir)
    validate(cfg)
    assert cfg.agent.enable
    head = (RECIPES / f"{name}.yaml").read_text().splitlines()[:3]
    assert any(f"python -m rlhf.main --config-name {name}" in line for line in head), head


def test_recipe_settings(tiny_model_dir: Path) -> None:
    calc = agent_cfg("agent_calc_tiny", tiny_model_dir)
    assert (calc.agent.env, calc.agent.tools, calc.data.builtin_task) == ("tool", ["calculator"], "calc")
    guess = agent_cfg("agent_guess_tiny", tiny_model_dir)
    assert (guess.agent.env, guess.agent.stop, guess.data.builtin_task) == ("guess_number", ["\n"], "guess_number")
    assert guess.reward.rule_weight > 0 and guess.agent.env_reward_weight > 0  # both reward sources


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("agent.tools=[calculator,/missing/tools.py:fn]", r"agent.tools\[1\]='/missing/tools.py:fn': file"),
        (f"agent.tools=[{FNS}:no_docstring]", r"agent.tools\[0\]: tool 'no_docstring' needs type hints"),
        (f"agent.tools=[{FNS}:no_hint]", r"agent.tools\[0\]: tool 'no_hint' needs type hints"),
        ("agent.tool_parser=mistral", "agent.tool_parser='mistral' is not a known tool parser"),
        ("agent.env=chess", "agent.env='chess' is not a known environment"),
        ("agent.tools=[]", "agent.env='tool' needs at least one tool in agent.tools"),
        ("agent.max_turns=0", "agent.max_turns=0 must be >= 1"),
        ("agent.observation_mode=xml", "agent.observation_mode='xml' is not valid"),
        ("agent.tools=[python] agent.sandbox.timeout_s=60", "agent.sandbox.timeout_s=60.0 must be below"),
    ],
)
def test_agent_mistakes_fail_at_start_up_naming_the_key(tiny_model_dir: Path, override: str, message: str) -> None:
    cfg = agent_cfg("agent_calc_tiny", tiny_model_dir, *override.split(" "))
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_env_rewards_alone_can_score(tiny_model_dir: Path) -> None:
    validate(agent_cfg("agent_guess_tiny", tiny_model_dir, "reward.rule_weight=0"))
    with pytest.raises(ConfigError, match="nothing would score the responses"):
        validate(agent_cfg("agent_guess_tiny", tiny_model_dir, "reward.rule_weight=0", "agent.env_reward_weight=0"))
    with pytest.raises(ConfigError, match="nothing would score the responses"):
        validate(agent_cfg("agent_guess_tiny", tiny_model_dir, "reward.rule_weight=0", "agent.enable=false"))
