"""rlhf.rewards.registry: built-in choice per data source and user functions by spec."""

import pytest

from rlhf.rewards import (
    arith_score,
    builtin_data_sources,
    check_data_sources,
    default_reward_fn,
    load_reward_fn,
    math_answer_score,
    reward_fn_spec,
)


def test_default_by_data_source():
    assert default_reward_fn("arith") is arith_score
    assert default_reward_fn("openai/gsm8k") is math_answer_score
    assert default_reward_fn("gsm8k") is math_answer_score
    assert default_reward_fn("lighteval/MATH") is math_answer_score
    with pytest.raises(ValueError, match=r"data_source \['something/else'\] has no built-in reward function"):
        default_reward_fn("something/else")


def test_check_data_sources():
    check_data_sources({"arith", "openai/gsm8k"}, None)
    check_data_sources({"my/source", "arith"}, "pkg.module:score")  # a configured function scores every source
    with pytest.raises(ValueError) as info:
        check_data_sources(["arith", "my/source", "other", "other"], None)
    message = str(info.value)
    assert "['my/source', 'other']" in message  # the unknown ones, each once
    assert f"built-in: {builtin_data_sources()}" in message and "'arith'" in message
    assert "set reward.function" in message


def test_load_from_module():
    assert load_reward_fn("rlhf.rewards.math_answer:arith_score") is arith_score
    assert reward_fn_spec(arith_score) == "rlhf.rewards.math_answer:arith_score"


def test_load_from_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text("def score(data_source, solution_str, ground_truth, extra_info=None):\n    return 0.25\n")
    spec = f"{path}:score"
    fn = load_reward_fn(spec)
    assert fn("x", "y", "z") == 0.25
    assert load_reward_fn(spec) is fn  # the file is loaded once per process
    assert reward_fn_spec(fn) == spec  # the spec that a worker process loads it by


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rlhf.rewards.math_answer", "must look like"),
        (":score", "must look like"),
        ("rlhf.rewards.math_answer:", "must look like"),
        ("no_such_package_xyz.mod:score", "cannot import module 'no_such_package_xyz.mod'"),
        ("rlhf.rewards.math_answer:no_such_fn", "has no attribute 'no_such_fn'"),
        ("rlhf.rewards.math_answer:MATH_TOLERANCE", "is a float, not a function"),
        ("/no/such/file.py:score", "does not exist"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        load_reward_fn(spec)
    assert repr(spec) in str(info.value)


def test_file_that_fails_on_import(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import no_such_package_xyz\n")
    with pytest.raises(ValueError, match="running .*broken.py failed"):
        load_reward_fn(f"{path}:score")


def test_spec_of_unloadable_functions():
    def nested(*args):
        return 0.0

    with pytest.raises(ValueError, match="module-level function"):
        reward_fn_spec(nested)
    with pytest.raises(ValueError, match="module-level function"):
        reward_fn_spec(lambda *args: 0.0)
