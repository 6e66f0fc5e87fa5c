"""The engine replica: one vLLM `AsyncLLM` per Serve replica, for one node group.

It takes prompt token ids (the router tokenized them once) and streams text deltas.
A GPU group's replica owns a STRICT_PACK placement group of `tensor_parallel_size` GPU
bundles (built in serve_app.app). On CUDA, vLLM's Ray executor runs the tensor-parallel
ranks inside it; vLLM's CPU build has no Ray executor, so there (a CPU group, or a GPU
group on the fake GPU nodes of the autoscaling test) it runs its multiprocess executor in
the replica's process tree, as Ray Serve LLM does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray.util import get_current_placement_group, get_node_ip_address
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMValidationError
from vllm.inputs.engine import tokens_input
from vllm.logprobs import Logprob
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from serve_app.chunk_channel import ChannelOpen, ChannelServer
from serve_app.config import ModelConfig, NodeGroupConfig, TracingConfig
from serve_app.cpu_cores import keep_off_worker_cores, node_processes
from serve_app.engine_api import (
    EngineChunk,
    EngineRequest,
    EngineRequestError,
    EngineUnavailableError,
    TokenLogprob,
)
from serve_app.engine_metrics import RouterQueueTime, engine_stat_logger, keep_gauges_fresh

logger = logging.getLogger("ray.serve")


def uses_ray_executor(group: NodeGroupConfig) -> bool:
    return group.uses_gpus and not current_platform.is_cpu()


def engine_args_for(
    model: ModelConfig, source: str, group: NodeGroupConfig, tracing: TracingConfig
) -> AsyncEngineArgs:
    return AsyncEngineArgs(
        model=source,
        tokenizer=model.tokenizer or source,
        served_model_name=[model.id],
        max_model_len=group.max_model_len or model.max_model_len,
        tensor_parallel_size=group.tensor_parallel_size,
        distributed_executor_backend="ray" if uses_ray_executor(group) else "mp",
        otlp_traces_endpoint=tracing.otlp_endpoint,
        **group.engine_args,
    )


class EngineReplica:
    """A Serve deployment class; serve_app.app gives it its name and resources per group."""

    def __init__(
        self, model: ModelConfig, source: str, group: NodeGroupConfig, tracing: TracingConfig
    ) -> None:
        logger.info("loading the engine for node group %r (%s)", group.name, source)
        vllm_config = engine_args_for(model, source, group, tracing).create_engine_config()
        if uses_ray_executor(group):
            # vLLM's Ray workers must land in the replica's own TP bundles (vllm#30016).
            vllm_config.parallel_config.placement_group = get_current_placement_group()
        stat_logger = engine_stat_logger(group.name)
        self.engine = AsyncLLM.from_vllm_config(vllm_config, stat_loggers=[stat_logger])
        if current_platform.is_cpu():
            # The replica's cores are the node's: the raylet, which started it, is not bound.
            keep_off_worker_cores(node_processes(), os.sched_getaffinity(0))
        self._gauges = asyncio.get_running_loop().create_task(keep_gauges_fresh(stat_logger))
        self.router_queue_time = RouterQueueTime()
        self.channel = ChannelServer(get_node_ip_address())
        # The model's generation_config.json defaults (Qwen2.5: temperature 0.7, ...).
        self.sampling_defaults = vllm_config.model_config.get_diff_sampling_param()
        self.sampling_defaults.pop("max_tokens", None)
        logger.info("engine for node group %r ready", group.name)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk | ChannelOpen]:
        """The request's chunks: yielded, or through the router's chunk channel when it
        asks for it (serve_app.chunk_channel)."""
        self.router_queue_time.observe(request.dispatched_at)
        params = self._sampling_params(request)
        async for item in self.channel.stream(request, self._chunks(request, params)):
            yield item

    def _sampling_params(self, request: EngineRequest) -> SamplingParams:
        structured = request.structured_outputs
        try:
            return SamplingParams(
                **{**self.sampling_defaults, **request.sampling},
                max_tokens=request.max_tokens,
                structured_outputs=StructuredOutputsParams(**structured) if structured else None,
                output_kind=RequestOutputKind.DELTA
                if request.stream
                else RequestOutputKind.FINAL_ONLY,
            )
        except VLLMValidationError as error:
            raise EngineRequestError(error.args[0], error.parameter) from None

    async def _chunks(
        self, request: EngineRequest, params: SamplingParams
    ) -> AsyncIterator[EngineChunk]:
        want_logprobs = params.logprobs is not None
        # A cancelled call (client gone) raises CancelledError in here; AsyncLLM.generate
        # aborts the request in the engine before re-raising it.
        outputs = self.engine.generate(
            tokens_input(request.prompt_token_ids),
            params,
            request.request_id,
            trace_headers=request.trace_headers,
        )
        prompt_logprobs: list[TokenLogprob | None] | None = None
        started: set[int] = set()  # choices that had their first chunk
        try:
            async for output in outputs:
                if params.prompt_logprobs is not None and output.prompt_logprobs:
                    prompt_logprobs = _token_logprobs(
                        request.prompt_token_ids, output.prompt_logprobs, params.prompt_logprobs
                    )
                for completion in output.outputs:
                    first = completion.index not in started
                    started.add(completion.index)
                    yield EngineChunk(
                        completion.index,
                        completion.text,
                        len(completion.token_ids),
                        completion.finish_reason,
                        _token_logprobs(completion.token_ids, completion.logprobs, params.logprobs)
                        if want_logprobs
                        else None,
                        prompt_logprobs if first else None,
                    )
        except EngineDeadError as error:  # the router, which has no vLLM, answers 503
            raise EngineUnavailableError(str(error)) from None

    def generation_defaults(self) -> dict[str, Any]:
        """The sampling defaults read from the model's generation_config.json."""
        return dict(self.sampling_defaults)

    def num_unfinished_requests(self) -> int:
        """Requests the engine still holds (running or waiting): 0 when idle."""
        return self.engine.get_num_unfinished_requests()

    async def live_workers(self) -> int:
        """How many tensor-parallel workers answer a health call (one per rank)."""
        return len(await self.engine.collective_rpc("check_health"))

    async def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising (EngineDeadError) marks the
        replica unhealthy, and Serve replaces it."""
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _token_logprobs(
    token_ids: Sequence[int], positions: Sequence[dict[int, Logprob] | None] | None, top: int
) -> list[TokenLogprob | None]:
    """vLLM's per-position {token id: Logprob} maps as plain tuples: the token, its logprob,
    then the `top` most likely ones (vLLM adds the token when it ranks lower). A position
    without a map (the prompt's first token) stays None."""
    entries: list[TokenLogprob | None] = []
    for token_id, position in zip(token_ids, positions or (), strict=False):
        if position is None:
            entries.append(None)
            continue
        chosen = position[token_id]
        ranked = sorted(position.values(), key=lambda lp: lp.rank or 0)[:top]
        entries.append(
            (
                chosen.decoded_token or "",
                chosen.logprob,
                [(lp.decoded_token or "", lp.logprob) for lp in ranked],
            )
        )
    return entries
