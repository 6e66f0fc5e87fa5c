"""A tensor-parallel engine replica through the real graph: TP=2 on the CPU.

On these 2-core machines TP > 1 proves the code path (vLLM's multiprocess executor with one
worker per rank inside a Serve replica), not speed. It deploys a second application into
the session's Ray cluster and removes it afterwards.
"""

from __future__ import annotations

import httpx
import pytest
from ray import serve

from loadtest.local_stack import cpu_app_args

pytestmark = pytest.mark.e2e

APP = "tp2"


@pytest.fixture(scope="module")
def tp2_url(stack):
    args = cpu_app_args()
    group = args["node_groups"][0]
    group.update(name="cpu-tp2", tensor_parallel_size=2)
    # One core list per rank: without it vLLM refuses to start two CPU workers here.
    group["env"]["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"
    with stack.app(APP, args) as url:
        yield url


def test_tp2_replica_serves_a_chat_completion(stack, tp2_url):
    handle = serve.get_deployment_handle("cpu-tp2", app_name=APP)
    assert handle.live_workers.remote().result() == 2  # one worker process per rank
    response = httpx.post(
        f"{tp2_url}/v1/chat/completions",
        json={
            "model": "athene-v2-chat",
            "messages": [{"role": "user", "content": "What is 6 times 7?"}],
            "max_tokens": 8,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] == 8
    assert response.headers["x-prompt-policy"] == "step-by-step"
