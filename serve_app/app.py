"""The application builder: the `import_path` of every serve config.

    applications:
    - import_path: serve_app.app:build_app
      args: {model: ..., prompt_policy: ..., router: ..., node_groups: [...]}

It validates the args (serve_app.config) and wires the graph: one engine deployment per
node group, named after the group, and the router ingress holding a handle to each.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application, Deployment

from serve_app.cache_router import CLASS_PATH as CACHE_ROUTER
from serve_app.config import AppConfig, NodeGroupConfig, TracingConfig, parse_app_config
from serve_app.devmodel import resolve_source
from serve_app.engine import EngineReplica
from serve_app.router import Router

# Ray Serve LLM's convention: a tiny amount of the group's accelerator_type resource per
# bundle, so the bundle lands on (and the autoscaler scales) that node group only.
ACCELERATOR_RESOURCE_AMOUNT = 0.001


def placement_bundles(group: NodeGroupConfig) -> list[dict[str, float]]:
    """One GPU bundle per tensor-parallel rank; the replica actor's CPUs join the first."""
    tag = {f"accelerator_type:{group.accelerator_type}": ACCELERATOR_RESOURCE_AMOUNT}
    bundles = [{"GPU": 1.0, **tag} for _ in range(group.tensor_parallel_size)]
    bundles[0]["CPU"] = group.num_cpus
    return bundles


def engine_tracing_env(group: NodeGroupConfig, tracing: TracingConfig) -> dict[str, str]:
    """vLLM's exporter speaks gRPC unless told otherwise; ours is OTLP/HTTP everywhere."""
    if tracing.otlp_endpoint is None:
        return {}
    return {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": f"athene-engine-{group.name}",
    }


def engine_deployment_options(group: NodeGroupConfig, tracing: TracingConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": group.name,
        "autoscaling_config": group.autoscaling_config.model_dump(exclude_unset=True),
        "max_ongoing_requests": group.max_ongoing_requests,
        "max_queued_requests": group.max_queued_requests,
        "health_check_period_s": group.health_check_period_s,
        "health_check_timeout_s": group.health_check_timeout_s,
        "graceful_shutdown_timeout_s": group.graceful_shutdown_timeout_s,
        "ray_actor_options": {
            "num_cpus": group.num_cpus,
            "runtime_env": {"env_vars": {**engine_tracing_env(group, tracing), **group.env}},
        },
    }
    if group.request_router == "cache_aware":
        options["request_router_config"] = {
            "request_router_class": CACHE_ROUTER,
            "request_router_kwargs": {"block_size": group.kv_block_size},
        }
    if group.uses_gpus:
        # A TP group never spans nodes: all its GPUs in one STRICT_PACK placement group.
        options["placement_group_bundles"] = placement_bundles(group)
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def build_graph(config: AppConfig) -> Application:
    source = resolve_source(config.model.source)
    engines = {
        group.name: serve.deployment(EngineReplica)
        .options(**engine_deployment_options(group, config.tracing))
        .bind(config.model, source, group, config.tracing)
        for group in config.node_groups
    }
    return router_deployment(config).bind(config, engines)


def router_deployment(config: AppConfig) -> Deployment:
    return Router.options(
        name="router",
        num_replicas=config.router.num_replicas,
        max_ongoing_requests=config.router.max_ongoing_requests,
        # A replica being replaced (redeploy, scale-down) finishes its answers first; none
        # runs longer than the request timeout.
        graceful_shutdown_timeout_s=config.router.request_timeout_s,
        ray_actor_options={
            "num_cpus": config.router.num_cpus,
            "resources": config.router.resources,
        },
    )


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve's application builder hook (`import_path: serve_app.app:build_app`)."""
    return build_graph(parse_app_config(args))
