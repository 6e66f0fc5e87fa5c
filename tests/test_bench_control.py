"""`make bench --control`: the A/A control is vLLM's own server started again, so its ratio to
the first is what two identical servers give on this host, next to the stack's."""

from __future__ import annotations

from pathlib import Path

from benchmarks.serving import CONTROL, contender, vllm_server


def _without_port(command: list[str]) -> list[str]:
    at = command.index("--port")
    return command[:at] + command[at + 2 :]


def test_the_control_is_vllms_server_with_the_same_flags_on_a_port_of_its_own(tmp_path: Path):
    model = tmp_path / "model"
    command, ready, env, port = contender(CONTROL, {}, tmp_path, model)
    first, _, first_env = vllm_server(1, model)
    assert _without_port(command) == _without_port(first)
    assert command[command.index("--port") + 1] == str(port) != "1"
    assert ready == f"http://127.0.0.1:{port}/health"
    assert env == first_env


def test_the_stack_is_called_at_its_routers_own_port(tmp_path: Path):
    command, ready, env, port = contender("stack", {}, tmp_path, tmp_path / "model")
    assert command[1:2] == ["run"]
    assert ready.endswith("/ready")  # the stack's readiness, not vLLM's /health
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == str(port)
