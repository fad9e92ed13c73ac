"""Agentic, multi-turn, tool-using rollouts: tools, a sandbox, tool-call parsing, environments and the agent loop.

Modules (import from them directly):
    config.py      AgentConfig, SandboxConfig, validate_agent_config (the agent.* keys; stdlib only)
    runtime.py     build_agent -> AgentRuntime, trajectories_to_batch
    loop.py        AgentLoop, Trajectory, SamplingRequest, TurnOutput, GenerateFn, agent_metrics
    env.py         Env, StepResult, EnvContext, ToolEnv, GuessNumberEnv, make_env_factory, row_tool_names
    observation.py ObservationFormatter, has_tool_role
    executor.py    ToolExecutor, ToolResult
    tools.py       Tool, ToolRegistry, tool_from_function, load_tools
    parsing.py     ToolCall, ParsedTurn, HermesToolParser, make_tool_parser
    builtin_tools.py  calculator, python, make_python_tool
    sandbox.py     run_python, SandboxLimits, SandboxResult
    tool_pool.py   ToolProcessPool (killable worker processes)
    errors.py      ToolError

This file imports nothing on purpose: tool worker processes import rlhf.agent.tool_pool, and an eager import of
the package's public names would load transformers in every worker.
"""
