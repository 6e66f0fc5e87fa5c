"""The router ingress: the OpenAI API in front of the node groups' engine deployments.

Per request: the API key and the body's size (ASGI middleware, serve_app.access and
serve_app.limits) -> validate (protocol, request limits, the key's request quota: `_admit`)
-> the prompt's token ids (chat: decide and apply the step-by-step policy, render the chat
template and tokenize once; completions: the prompt as is) -> check the context budget and
the key's token quota, pick the least loaded node group, start the engine (`_run`) -> the
route's writer streams the engine's deltas back as SSE or one JSON body, within the request
timeout. Each API keeps its wire shapes in its own module (protocol, completions_protocol,
tokenize_protocol).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import ray
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.access import ApiKey, KeyRing, Quotas, RequireApiKey
from serve_app.chat_writer import OutputSpec, ResponseWriter
from serve_app.chunk_channel import ChannelClient
from serve_app.completions_protocol import CompletionRequest
from serve_app.completions_writer import CompletionWriter, PromptEcho
from serve_app.config import AppConfig, NodeGroupConfig
from serve_app.devmodel import resolve_source
from serve_app.engine_api import (
    EngineChunk,
    EngineRequest,
    EngineRequestError,
    EngineUnavailableError,
)
from serve_app.limits import BodySizeLimit, check_request, max_tokens_cap
from serve_app.metrics import RouterMetrics
from serve_app.prompt.step_by_step import StepByStepPolicy
from serve_app.prompt.template import ChatTemplate, to_template_messages
from serve_app.protocol import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    GenerationRequest,
    ModelCard,
    ModelList,
    StepByStepSwitch,
    ToolDefinition,
)
from serve_app.replica_watch import watch_running_replicas
from serve_app.request_log import RequestLog, count_chunks
from serve_app.responses_protocol import PARAMS_FROM_CHAT, ResponseObject, ResponsesRequest
from serve_app.responses_writer import ResponsesWriter
from serve_app.sampling import plan_output, prompt_tools, sampling_fields
from serve_app.tokenize_protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeRequest,
    TokenizeResponse,
)
from serve_app.tracing import Tracing

logger = logging.getLogger("ray.serve")

POLICY_HEADER = "X-Prompt-Policy"
RETRY_AFTER_S = 1  # what a 503 at capacity tells clients to wait (OpenAI's SDKs honour it)
DOWN_CHECK_S = 0.5  # how often a request waiting for its first token checks its group is up

# Probes stay open: Kubernetes and load balancers call them without a key.
OPEN_PATHS = frozenset({"/health", "/ready"})

app = FastAPI(title="Athene-V2-Chat router", version="0.1.0")
# Added innermost first. The request log wraps everything, so refusals get their line; the
# key is checked before the body is read, the body's size before parsing. The two checks
# read their settings from app.state, which Router.__init__ fills from the config.
app.add_middleware(BodySizeLimit)
app.add_middleware(RequireApiKey, open_paths=OPEN_PATHS)
app.add_middleware(RequestLog, quiet_paths=OPEN_PATHS)


@app.exception_handler(APIError)
async def _api_error(request: Request, error: APIError) -> JSONResponse:
    request.state.error = error.outcome
    return JSONResponse(
        error.body(),
        status_code=error.status,
        headers={**_policy_headers(request), **error.headers},
    )


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return await _api_error(request, APIError(400, "request body is not valid JSON"))
    param = ".".join(str(part) for part in first["loc"] if part != "body") or None
    reason = "unsupported field" if first["type"] == "extra_forbidden" else first["msg"]
    message = f"{param}: {reason}" if param else reason
    return await _api_error(request, APIError(400, message, param=param))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own refusals (unknown route, wrong method, unparsable body) in OpenAI's
    shape too, instead of its `{"detail": ...}`."""
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    headers = dict(error.headers or {})  # Allow, on a 405
    return await _api_error(
        request, APIError(error.status_code, str(error.detail), type=kind, headers=headers)
    )


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return await _api_error(
        request, APIError(500, "internal server error", type="server_error", code="internal_error")
    )


def _policy_headers(request: Request) -> dict[str, str]:
    return {POLICY_HEADER: getattr(request.state, "prompt_policy", "none")}


async def _until(
    deadline: float, limit_s: float, stream: AsyncIterator[EngineChunk]
) -> AsyncIterator[EngineChunk]:
    """The engine's chunks until the request's deadline (loop time); then 504, before the
    answer started, or an error event mid-stream. The deadline cancels the wait for the
    engine, which cancels the engine call. One timer per request: an asyncio.timeout_at per
    chunk cost 17 µs of a token's ~20 µs in the router's pipeline (a micro-benchmark; this
    way 2 µs)."""
    loop = asyncio.get_running_loop()
    waiting: asyncio.Task[Any] | None = None  # the task awaiting the engine, while it waits
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if waiting is not None:
            waiting.cancel()

    timer = loop.call_at(deadline, expire)
    try:
        while not expired:
            task = waiting = asyncio.current_task()
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                # Ours alone (asyncio.Timeout's rule): the deadline; else the caller left.
                if not (expired and task is not None and task.uncancel() == 0):
                    raise
                break
            finally:
                waiting = None
            yield chunk
        raise APIError(
            504,
            f"the request took longer than router.request_timeout_s ({limit_s:g} s)",
            type="server_error",
            code="timeout",
        )
    finally:
        timer.cancel()


async def _first_chunk(stream: AsyncIterator[EngineChunk]) -> EngineChunk:
    """Waits for the engine's first chunk before answering, so a refusal (overload,
    validation in the engine) still gets its proper HTTP status instead of a 200 stream."""
    return await anext(stream)


async def _chain(
    first: EngineChunk, rest: AsyncIterator[EngineChunk]
) -> AsyncIterator[EngineChunk]:
    yield first
    async for chunk in rest:
        yield chunk


async def merged(streams: list[AsyncIterator[EngineChunk]], n: int) -> AsyncIterator[EngineChunk]:
    """The chunks of a batch's engine requests as they come, choice j of prompt i numbered
    i * n + j (vLLM's order). The first failure ends it; stopping early cancels them all
    (each engine request is then aborted)."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield chunk
        return
    queue: asyncio.Queue[EngineChunk | BaseException | None] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[EngineChunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put(chunk._replace(index=i * n + chunk.index))
            await queue.put(None)
        except Exception as error:
            await queue.put(error)

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class AnswerWriter(Protocol):
    """Turns the engine's chunks into a route's answer (serve_app.chat_writer, .completions_writer)."""

    def stream(self, chunks: AsyncIterator[EngineChunk]) -> AsyncIterator[str]: ...

    async def collect(self, chunks: AsyncIterator[EngineChunk]) -> BaseModel: ...


@dataclass(frozen=True, slots=True)
class EngineRun:
    """A request the engine has started answering: its id, its chunks and the headers."""

    request_id: str
    chunks: AsyncIterator[EngineChunk]
    headers: dict[str, str]

    async def answer(self, stream: bool, writer: AnswerWriter) -> Response:
        if stream:
            return StreamingResponse(
                writer.stream(self.chunks), media_type="text/event-stream", headers=self.headers
            )
        body = await writer.collect(self.chunks)
        return JSONResponse(body.model_dump(), headers=self.headers)


def _retry_shortly(message: str, code: str) -> APIError:
    """A 503 the caller may retry after `Retry-After` (OpenAI's SDKs do)."""
    return APIError(
        503,
        f"{message}, retry shortly",
        type="server_error",
        code=code,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _unavailable(what: str) -> APIError:
    return _retry_shortly(f"{what}; Serve is replacing it", "engine_unavailable")


def _switch(header: str | None) -> StepByStepSwitch | None:
    if header is None:
        return None
    value = header.strip().lower()
    if value not in ("on", "off", "auto"):
        raise APIError(400, "X-Step-By-Step must be on, off or auto", param="X-Step-By-Step")
    return value  # type: ignore[return-value]


class NodeGroupBalancer:
    """Spreads requests over node groups by load: the group with the fewest in-flight
    requests (from this router replica) per unit of live capacity (running replicas x
    max_ongoing_requests) wins; groups with no running replica come last, so a group
    scaling up from zero still gets traffic when it is the only one."""

    def __init__(
        self,
        groups: list[NodeGroupConfig],
        handles: dict[str, DeploymentHandle],
        windows: dict[str, int],
    ):
        self.handles = handles
        self.windows = windows  # each group's context window
        self.slots = {group.name: group.max_ongoing_requests for group in groups}
        self.in_flight = dict.fromkeys(self.handles, 0)
        self.running = dict.fromkeys(self.handles, 0)
        self.min_replicas = {g.name: g.autoscaling_config.min_replicas for g in groups}
        self.cold_start_timeout = {g.name: g.cold_start_timeout_s for g in groups}
        self.seen_up: set[str] = set()  # groups this router has seen with a running replica

    def observe(self, group: str, running: int) -> None:
        self.running[group] = running
        if running:
            self.seen_up.add(group)

    def fitting(self, needed: int) -> list[str]:
        """The groups whose window holds `needed` tokens, and of those only the ones with
        the smallest window: a long-context group (whose YaRN scaling can lower quality on
        short texts) gets only what fits nowhere else."""
        fitting = {group: window for group, window in self.windows.items() if window >= needed}
        smallest = min(fitting.values(), default=0)
        return [group for group, window in fitting.items() if window == smallest]

    def pick(self, groups: list[str] | None = None) -> str:
        """The least loaded of `groups` (by default all)."""
        return min(
            groups or self.handles,
            key=lambda g: (
                self.running[g] == 0,
                self.in_flight[g] / (max(self.running[g], 1) * self.slots[g]),
            ),
        )

    def ready(self) -> bool:
        """Every group that keeps a replica (min_replicas > 0) has one running. A group
        that scales to zero is ready without: its requests wait for the cold start."""
        return all(self.running[g] or not self.min_replicas[g] for g in self.handles)

    def down(self, group: str) -> bool:
        """A group that had a running replica has none, though it should (min_replicas >
        0): it died and Serve is replacing it. Requests would wait for the new one, so
        refuse them. A group not yet seen up (just deployed) is starting: requests wait."""
        return self.running[group] == 0 and self.min_replicas[group] > 0 and group in self.seen_up


@serve.deployment
@serve.ingress(app)
class Router:
    def __init__(self, config: AppConfig, engines: dict[str, DeploymentHandle]) -> None:
        self.config = config
        self.model_id = config.model.id
        self.template = ChatTemplate.from_config(config.model, resolve_source(config.model.source))
        self.policy = StepByStepPolicy(
            config.prompt_policy.step_by_step, self.template.default_system_prompt
        )
        self.vocab_size = len(self.template.tokenizer)  # once: it is the same every request
        windows = {group.name: config.window(group) for group in config.node_groups}
        self.balancer = NodeGroupBalancer(config.node_groups, engines, windows)
        self.quotas = Quotas(replicas=config.router.num_replicas)
        self.channel = ChannelClient() if config.router.chunk_channel else None
        app.state.metrics = RouterMetrics(frozenset(route.path for route in app.routes))
        app.state.tracing = Tracing(config.tracing) if config.tracing.otlp_endpoint else None
        app.state.limits = config.limits
        app.state.key_ring = KeyRing.load(config.access)
        if app.state.key_ring.enabled:
            logger.info("auth on: %d API keys", len(app.state.key_ring.keys))
        else:
            logger.warning("auth is OFF: no API keys configured, every caller is let in")
        self.started = int(time.time())
        self._announced = False
        self._replica_watch = watch_running_replicas(
            engines, self._observe, f"router:{ray.get_runtime_context().get_actor_id()}"
        )

    def __del__(self) -> None:  # Serve calls it on shutdown: a redeploy's old replica
        watch = getattr(self, "_replica_watch", None)
        if watch is not None:
            watch.stop()

    def _observe(self, group: str, running: int) -> None:
        """A group's running-replica count, as Serve's controller pushes it (routing, /ready,
        the 503 of a group that died)."""
        self.balancer.observe(group, running)
        if self.balancer.ready() and not self._announced:
            self._announced = True
            logger.info(
                "ready: every node group has a live engine replica. Try:\n  curl "
                "http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
                '-d \'{"model": "%s", "messages": [{"role": "user", "content": '
                '"Hello!"}]}\'',
                self.model_id,
            )

    # --- probes and listing ------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(self) -> JSONResponse:
        groups = dict(self.balancer.running)
        ready = self.balancer.ready()
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "running_replicas": groups},
            status_code=200 if ready else 503,
        )

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        return ModelList(data=[self._card()])

    def _card(self) -> ModelCard:
        return ModelCard(
            id=self.model_id, created=self.started, max_model_len=self.config.longest_window
        )

    @app.get("/v1/models/{model:path}")
    async def model(self, model: str) -> ModelCard:
        """OpenAI's retrieve: the served model's card, or 404 as OpenAI answers it."""
        self._check_model(model)
        return self._card()

    def _check_model(self, model: str | None) -> None:
        """The served model's id, or none where vLLM allows it (tokenize)."""
        if model is not None and model != self.model_id:
            raise APIError(
                404,
                f"The model `{model}` does not exist.",
                param="model",
                code="model_not_found",
            )

    # --- tokenize (vLLM's routes) -------------------------------------------------------

    @app.post("/tokenize", response_model=None)
    async def tokenize(
        self,
        body: TokenizeRequest,
        request: Request,
        x_step_by_step: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Token ids as the engine would get them: chat messages through the same policy and
        template as /v1/chat/completions, or a prompt as is."""
        self._check_model(body.model)
        if isinstance(body, TokenizeChatRequest):
            if body.add_generation_prompt and body.continue_final_message:
                raise APIError(
                    400,
                    "add_generation_prompt and continue_final_message cannot both be true",
                    param="continue_final_message",
                )
            tokens = self._prompt_ids(
                request,
                body.messages,
                body.tools,
                body.chat_template_kwargs,
                body.step_by_step or _switch(x_step_by_step),
                add_generation_prompt=body.add_generation_prompt,
                continue_final_message=body.continue_final_message,
                add_special_tokens=body.add_special_tokens,
            )
        else:
            tokens = self.template.encode(body.prompt, body.add_special_tokens)
        answer = TokenizeResponse(
            count=len(tokens),
            max_model_len=self.config.longest_window,
            tokens=tokens,
            token_strs=(
                self.template.tokenizer.convert_ids_to_tokens(tokens)
                if body.return_token_strs
                else None
            ),
        )
        return JSONResponse(answer.model_dump(), headers=_policy_headers(request))

    @app.post("/detokenize")
    async def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        self._check_model(body.model)
        self._check_vocabulary("tokens", body.tokens)
        return DetokenizeResponse(prompt=self.template.tokenizer.decode(body.tokens))

    # --- generation: chat and completions share one pipeline ------------------------------

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        self,
        body: ChatCompletionRequest,
        request: Request,
        x_step_by_step: Annotated[str | None, Header()] = None,
    ) -> Response:
        run, spec = await self._chat_run(request, body, x_step_by_step)
        writer = ResponseWriter(
            request_id=run.request_id,
            model=self.model_id,
            prompt_tokens=request.state.prompt_tokens,
            n=body.n,
            spec=spec,
            logprobs=body.logprobs,
            include_usage=body.include_usage,
            continuous_usage=body.continuous_usage,
        )
        return await run.answer(body.stream, writer)

    @app.post("/v1/responses", response_model=None)
    async def responses(
        self,
        body: ResponsesRequest,
        request: Request,
        x_step_by_step: Annotated[str | None, Header()] = None,
    ) -> Response:
        """OpenAI's Responses API, stateless: the chat request it amounts to, answered in
        the Responses shapes."""
        try:
            chat = body.to_chat()
        except ValidationError as invalid:  # input a chat request cannot hold
            first = invalid.errors()[0]
            raise APIError(400, f"input: {first['msg']}", param="input") from None
        try:
            run, spec = await self._chat_run(request, chat, x_step_by_step, "resp_")
        except APIError as error:  # name the Responses field, not chat's
            param = error.detail.param
            error.detail.param = PARAMS_FROM_CHAT.get(param or "", param)
            raise
        writer = ResponsesWriter(
            ResponseObject.for_request(body, run.request_id, self.model_id),
            spec,
            request.state.prompt_tokens,
        )
        return await run.answer(body.stream, writer)

    async def _chat_run(
        self,
        request: Request,
        body: ChatCompletionRequest,
        x_step_by_step: str | None,
        id_prefix: str = "chatcmpl-",
    ) -> tuple[EngineRun, OutputSpec]:
        """A chat request through the policy and the template to the engine."""
        key = self._admit(request, body)
        spec, structured_outputs = plan_output(body)
        prompt_ids = self._prompt_ids(
            request,
            body.messages,
            prompt_tools(body, spec, self.config.router.exclude_tools_when_tool_choice_none),
            body.chat_template_kwargs,
            body.step_by_step or _switch(x_step_by_step),
        )
        sampling = sampling_fields(body)
        run = await self._run(
            request, key, body, [prompt_ids], id_prefix, sampling, structured_outputs
        )
        return run, spec

    @app.post("/v1/completions", response_model=None)
    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        """The prompt as is, text or token ids, one or a batch: no template, no policy."""
        key = self._admit(request, body)
        encode = self.template.encode
        prompts = [
            p if isinstance(p, list) else encode(p, body.add_special_tokens) for p in body.prompts
        ]
        for ids in prompts:
            self._check_vocabulary("prompt", ids)
        request.state.prompt_tokens = sum(map(len, prompts))
        sampling = sampling_fields(body)
        if body.echo and body.logprobs is not None:
            sampling["prompt_logprobs"] = body.logprobs
        run = await self._run(request, key, body, prompts, "cmpl-", sampling)
        decode = self.template.tokenizer.decode
        writer = CompletionWriter(
            request_id=run.request_id,
            model=self.model_id,
            prompts=[
                PromptEcho(p if isinstance(p, str) else decode(ids), ids)
                for p, ids in zip(body.prompts, prompts, strict=True)
            ],
            n=body.n,
            echo=body.echo,
            echo_only=body.max_tokens == 0,
            logprobs=body.logprobs,
            decode=decode,
            include_usage=body.include_usage,
            continuous_usage=body.continuous_usage,
        )
        return await run.answer(body.stream, writer)

    def _admit(self, request: Request, body: GenerationRequest) -> ApiKey | None:
        """The checks every generating request passes before any work: the model, the
        request's own rules and limits, token ids it names, the key's request quota."""
        self._check_model(body.model)
        request.state.model = body.model
        if self.config.router.log_prompts:
            request.state.prompt = body.prompt_for_log()
        body.check()
        key = getattr(request.state, "api_key", None)
        check_request(body, self.config.limits, key.max_tokens if key else None)
        self._check_vocabulary("logit_bias", body.logit_bias or ())
        self._check_vocabulary("stop_token_ids", body.stop_token_ids or ())
        self.quotas.charge(key, "requests", 1)
        if body.user:
            logger.info("request from user %r", body.user)
        request.state.stream, request.state.choices = body.stream, body.n
        return key

    async def _run(
        self,
        request: Request,
        key: ApiKey | None,
        body: GenerationRequest,
        prompts: list[list[int]],
        id_prefix: str,
        sampling: dict[str, Any],
        structured_outputs: dict[str, Any] | None = None,
    ) -> EngineRun:
        """Sends the prompts (one engine request each, n choices per prompt) to the least
        loaded node group, once the output's length and the key's token quota allow, and
        waits for the first chunk, so a refusal still gets its own HTTP status."""
        request_id = request.state.response_id = f"{id_prefix}{uuid.uuid4().hex}"
        requested = body.requested_max_tokens
        group = self.balancer.pick(self._groups_for(max(map(len, prompts)), requested))
        window = self.balancer.windows[group]
        cap = max_tokens_cap(self.config.limits, key.max_tokens if key else None)
        max_tokens = [
            requested if requested is not None else min(window - len(ids), cap or window)
            for ids in prompts
        ]
        # vLLM's SamplingParams refuses it too, but names no field: refused here, named, and
        # before the quota is charged.
        if body.min_tokens > min(max_tokens):
            raise APIError(
                400,
                f"min_tokens must be less than or equal to max_tokens={min(max_tokens)}, "
                f"got {body.min_tokens}",
                param="min_tokens",
            )
        planned = zip(prompts, max_tokens, strict=True)
        self.quotas.charge(key, "tokens", sum(len(ids) + most * body.n for ids, most in planned))
        dispatched_at = time.time()
        engine_requests = [
            EngineRequest(
                request_id=request_id if len(prompts) == 1 else f"{request_id}-{i}",
                prompt_token_ids=ids,
                max_tokens=most,
                stream=body.stream,
                sampling=sampling,
                structured_outputs=structured_outputs,
                dispatched_at=dispatched_at,
                trace_headers=getattr(request.state, "trace_headers", None),
                session=body.user,
                channel=self.channel.router_id if self.channel and body.stream else None,
            )
            for i, (ids, most) in enumerate(zip(prompts, max_tokens, strict=True))
        ]
        limit_s = self.config.router.request_timeout_s
        deadline = asyncio.get_running_loop().time() + limit_s
        request.state.node_group = group
        streams = [self._generate(engine_request, group) for engine_request in engine_requests]
        stream = _until(deadline, limit_s, merged(streams, body.n))
        chunks = count_chunks(_chain(await _first_chunk(stream), stream), request.state)
        # No X-Request-Id here: Serve's proxy returns the caller's (or a new one) on every answer.
        headers = {**_policy_headers(request), **self.quotas.headers(key)}
        return EngineRun(request_id, chunks, headers)

    def _prompt_ids(
        self,
        request: Request,
        messages: list[ChatMessage],
        tools: list[ToolDefinition] | None,
        template_kwargs: dict[str, Any] | None,
        switch: StepByStepSwitch | None,
        add_special_tokens: bool = False,
        **render: bool,
    ) -> list[int]:
        """The chat prompt as token ids: the step-by-step policy (its decision noted for the
        log, the metrics and the X-Prompt-Policy header), then the template, tokenized once."""
        key = getattr(request.state, "api_key", None)
        rendered = to_template_messages(messages)
        decision = self.policy.decide(rendered, switch, key.step_by_step if key else None)
        if decision.applies:
            rendered = self.policy.apply(rendered)
        request.state.prompt_policy = "step-by-step" if decision.applies else "none"
        request.state.prompt_policy_reason = decision.reason
        prompt = self.template.render(rendered, tools, template_kwargs, **render)
        prompt_ids = self.template.encode(prompt, add_special_tokens)
        request.state.prompt_tokens = len(prompt_ids)
        return prompt_ids

    async def _first_while_up(self, chunks: AsyncIterator[EngineChunk], group: str) -> EngineChunk:
        """The engine's first chunk. If the group goes down meanwhile (its replica died and
        Serve holds the call for the replacement, which takes minutes for a 72B model), 503
        within DOWN_CHECK_S of the controller saying so, instead of the wait. A request to a
        group scaling up from zero waits for the cold start, up to its cold_start_timeout_s."""
        loop = asyncio.get_running_loop()
        cold_limit = self.balancer.cold_start_timeout[group]
        cold_until = (
            loop.time() + cold_limit
            if cold_limit is not None and not self.balancer.running[group]
            else float("inf")
        )
        first = asyncio.ensure_future(anext(chunks))
        try:
            while not (await asyncio.wait({first}, timeout=DOWN_CHECK_S))[0]:
                if self.balancer.down(group):
                    raise _unavailable(f"node group {group!r} lost its engine replica")
                if loop.time() >= cold_until:
                    raise _retry_shortly(
                        f"node group {group!r} is scaling up from zero and no replica "
                        f"started within its cold_start_timeout_s ({cold_limit:g} s)",
                        "engine_unavailable",
                    )
            return first.result()
        finally:
            first.cancel()  # a no-op once it is done

    def _check_vocabulary(self, param: str, ids: Iterable[int]) -> None:
        vocab = self.vocab_size
        unknown = sorted(i for i in ids if not 0 <= i < vocab)
        if unknown:
            raise APIError(
                400,
                f"{param} names token ids outside the vocabulary (0 to {vocab - 1}): {unknown[:5]}",
                param=param,
            )

    def _groups_for(self, prompt_tokens: int, requested: int | None) -> list[str]:
        """The node groups that hold the prompt and the requested output (one token at
        least), or the context-length error naming the longest window."""
        needed = prompt_tokens + (requested or 1)
        groups = self.balancer.fitting(needed)
        if not groups:
            limit = max(self.balancer.windows.values())
            asked = f" and requested {requested} output tokens" if requested is not None else ""
            raise APIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages are {prompt_tokens} tokens{asked} ({needed} in total). Please "
                "reduce the length of the messages or max_tokens.",
                param="messages" if requested is None else "max_tokens",
                code="context_length_exceeded",
            )
        return groups

    async def _generate(
        self, engine_request: EngineRequest, group: str
    ) -> AsyncIterator[EngineChunk]:
        if self.balancer.down(group):
            raise _unavailable(f"node group {group!r} has no running engine replica")
        self.balancer.in_flight[group] += 1
        handle = self.balancer.handles[group].options(stream=True)
        request_id = engine_request.request_id
        channel = self.channel if engine_request.channel else None
        if channel:
            channel.expect(request_id)
        response = handle.generate.remote(engine_request)
        chunks = channel.chunks(request_id, response) if channel else aiter(response)
        finished = False
        try:
            yield await self._first_while_up(chunks, group)
            async for chunk in chunks:
                yield chunk
            finished = True
        except EngineRequestError as error:
            raise APIError(400, error.message, param=error.param) from None
        except BackPressureError:
            raise _retry_shortly(f"node group {group!r} is at capacity", "overloaded") from None
        except (EngineUnavailableError, RayActorError, DeploymentUnavailableError):
            # The engine or its replica died mid-request, or the deployment failed.
            raise _unavailable(f"an engine replica of node group {group!r} failed") from None
        finally:
            self.balancer.in_flight[group] -= 1
            if channel:
                channel.release(request_id)
            if not finished:  # stopped early (timeout, client gone): abort the engine request
                response.cancel()
