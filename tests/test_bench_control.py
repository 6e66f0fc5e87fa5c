"""`make bench --control`: the A/A control is vLLM's own server started again, so its ratio to
the first is what two identical servers give on this host, next to the stack's."""

from __future__ import annotations

from pathlib import Path

from benchmarks.serving import CONTROL, contender, paired_lines, vllm_server


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


def test_each_contender_is_paired_with_the_vllm_run_beside_it_not_another():
    def run(system: str, beside: str, throughput: float, ttft: float) -> dict:
        return {
            "client": "bench serve random",
            "concurrency": 1,
            "system": system,
            "round": 0,
            "beside": beside,
            "request_throughput": throughput,
            "median_ttft_ms": ttft,
        }

    # One round: vLLM's server runs beside the stack, then again beside the control, and the
    # host slowed down in between: each ratio must use its own vLLM run.
    rows = [
        run("vllm", "stack", 1.0, 30.0),
        run("stack", "stack", 0.9, 34.0),
        run("vllm", CONTROL, 0.5, 40.0),
        run(CONTROL, CONTROL, 0.6, 41.0),
    ]
    assert paired_lines(rows, ["stack", CONTROL]).splitlines() == [
        "- random c=1 stack / vllm: **0.900x** req/s (0.900), TTFT p50 **+4.0 ms** (+4.0)",
        f"- random c=1 {CONTROL} / vllm: **1.200x** req/s (1.200), TTFT p50 **+1.0 ms** (+1.0)",
    ]
