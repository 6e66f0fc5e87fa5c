"""The application's configuration: one set of pydantic models for every serve config.

`serve_config.yaml` (GPUs, production) and `serve_config.cpu.yaml` (the CPU default) both
hold these models under `applications[0].args`; Ray Serve hands that mapping to the
application builder, which validates it here. Unknown keys are errors, so a typo fails at
start with the path of the bad field instead of being silently ignored.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ray.serve.config import AutoscalingConfig

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Engine arguments that the model section owns: one value for every node group.
MODEL_OWNED_ENGINE_ARGS = frozenset(
    {
        "model",
        "tokenizer",
        "served_model_name",
        "max_model_len",
        "tensor_parallel_size",
        "otlp_traces_endpoint",  # the tracing section's, for the router and every engine
    }
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    """The model every node group serves, and how the router talks about it."""

    id: str = Field("athene-v2-chat", description="Model id clients send and /v1/models lists.")
    source: str = Field(
        description="Hugging Face repo id or local directory of the weights; "
        "`builtin:tiny-qwen2` builds the tiny CPU dev model (serve_app.devmodel)."
    )
    tokenizer: str | None = Field(None, description="Tokenizer repo or directory; default: source.")
    chat_template: str | None = Field(
        None,
        description="Jinja chat template file; a relative name is looked up in "
        "serve_app/templates/. Default: the tokenizer's own template.",
    )
    max_model_len: int = Field(gt=0, description="Context length: prompt plus output tokens.")

    def chat_template_path(self) -> Path | None:
        if self.chat_template is None:
            return None
        path = Path(self.chat_template)
        return path if path.is_absolute() else TEMPLATES_DIR / path

    @field_validator("chat_template")
    @classmethod
    def _template_exists(cls, value: str | None) -> str | None:
        if value is not None:
            path = Path(value) if Path(value).is_absolute() else TEMPLATES_DIR / value
            if not path.is_file():
                raise ValueError(f"chat template file not found: {path}")
        return value


class StepByStepConfig(Strict):
    mode: Literal["off", "always", "auto"] = "auto"
    instruction: str = Field(
        "Think through the problem step by step, then give the final answer.",
        min_length=1,
    )


class PromptPolicyConfig(Strict):
    step_by_step: StepByStepConfig = StepByStepConfig()


class ServeAutoscaling(AutoscalingConfig):
    """Ray Serve's own autoscaling config, with unknown keys refused."""

    model_config = ConfigDict(extra="forbid")


class RouterConfig(Strict):
    """The FastAPI ingress: CPU only, cheap, so a few replicas carry any traffic."""

    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(1024, ge=1)
    num_cpus: float = Field(0, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each replica holds; on Kubernetes {router: 1} "
        "(serve_app/kube.py adds it), which only the router node group's pods offer: one "
        "router per pod, owning the pod's direct-ingress port (k8s/base/rayservice.yaml)",
    )
    request_timeout_s: float = Field(
        900, gt=0, description="a request still unfinished after this is aborted: 504"
    )
    log_prompts: bool = Field(
        False, description="debugging only: the request log line carries the messages"
    )
    chunk_channel: bool = Field(
        True,
        description="streamed chunks come from each engine replica over one connection, a "
        "frame per engine step (serve_app.chunk_channel); off: one Serve message per chunk",
    )
    exclude_tools_when_tool_choice_none: bool = Field(
        False,
        description="vLLM's option: with tool_choice none, leave the tools out of the prompt "
        "(by default they stay, as in vLLM and OpenAI: the model sees them but may not call)",
    )


class AccessConfig(Strict):
    """Who may call the API (serve_app.access). Keys are SHA-256 digests in a YAML list, from
    a file and/or an environment variable (a Kubernetes Secret), never in this config. With
    no key configured, auth is off, and the router says so at start."""

    keys_file: str | None = Field(None, description="YAML list of keys (id, sha256, quotas)")
    keys_env: str = Field("ATHENE_API_KEYS", description="variable holding the same YAML list")


class RequestLimits(Strict):
    """What one request may ask for; past a limit the router answers 400 (413 for the body)
    naming it."""

    max_body_bytes: int = Field(2 * 1024 * 1024, gt=0)
    max_messages: int = Field(512, gt=0)
    max_n: int = Field(8, gt=0)
    max_prompts: int = Field(32, gt=0, description="prompts in one /v1/completions batch")
    max_tokens: int | None = Field(None, gt=0, description="cap on max_tokens; none: the context")
    max_stop_sequences: int = Field(4, ge=0)
    max_tools: int = Field(128, ge=0)
    max_tools_bytes: int = Field(256 * 1024, gt=0, description="JSON size of all tool schemas")


class TracingConfig(Strict):
    """OpenTelemetry traces (serve_app.tracing): off unless an endpoint is given."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces; the "
        "router and every engine replica send their spans there",
    )
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of new traces kept (a caller's decision wins)"
    )


class NodeGroupConfig(Strict):
    """One GPU node group: one engine deployment whose replicas run on it."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type of the group's GPUs (H100, A100...); none: CPU."
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(
        None,
        gt=0,
        description="the group's context window; none: model.max_model_len. A group with a "
        "larger window is a long-context group (YaRN through engine_args.hf_overrides): the "
        "router sends it only requests that fit no group with a smaller window",
    )
    num_cpus: float = Field(1, ge=0, description="CPUs for the replica actor (first bundle).")
    engine_args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the replica.")
    autoscaling_config: ServeAutoscaling = ServeAutoscaling()
    cold_start_timeout_s: float | None = Field(
        None,
        gt=0,
        description="with min_replicas 0: how long a request sent while the group has no "
        "running replica waits for the first token (node + engine start) before a 503 "
        "with Retry-After; none: the router's request_timeout_s",
    )
    request_router: Literal["power_of_two", "cache_aware"] = Field(
        "power_of_two",
        description="how Serve picks a replica of the group: its default (power of two "
        "choices on queue length), or serve_app.cache_router (the replica holding the "
        "prompt's longest cached prefix, then the caller's session, under a load guard)",
    )
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(-1, ge=-1)
    health_check_period_s: float = Field(10, gt=0)
    health_check_timeout_s: float = Field(60, gt=0)
    graceful_shutdown_timeout_s: float = Field(300, ge=0)

    @property
    def uses_gpus(self) -> bool:
        return self.accelerator_type is not None

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV-cache block, as the engine will cut prompts: engine_args' or vLLM's
        default (16 on CUDA, 128 on its CPU build). Only whole blocks are prefix-cache hits."""
        return self.engine_args.get("block_size") or (16 if self.uses_gpus else 128)

    @field_validator("engine_args")
    @classmethod
    def _no_model_owned_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(MODEL_OWNED_ENGINE_ARGS & value.keys())
        if owned:
            raise ValueError(
                f"{', '.join(owned)} belong in the node group or model section, not engine_args"
            )
        return value


class AppConfig(Strict):
    """Everything `serve_app.app:build_app` needs to wire the graph."""

    model: ModelConfig
    prompt_policy: PromptPolicyConfig = PromptPolicyConfig()
    router: RouterConfig = RouterConfig()
    access: AccessConfig = AccessConfig()
    limits: RequestLimits = RequestLimits()
    tracing: TracingConfig = TracingConfig()
    node_groups: list[NodeGroupConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_group_names(self) -> AppConfig:
        names = [group.name for group in self.node_groups]
        if len(names) != len(set(names)):
            raise ValueError(f"node group names must be unique, got {names}")
        return self

    def window(self, group: NodeGroupConfig) -> int:
        """The group's context window: its own, else the model's."""
        return group.max_model_len or self.model.max_model_len

    @property
    def longest_window(self) -> int:
        return max(self.window(group) for group in self.node_groups)


class ConfigError(ValueError):
    """An invalid serve config; the message names every bad field."""


def parse_app_config(args: dict[str, Any]) -> AppConfig:
    try:
        return AppConfig.model_validate(args)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigError(f"invalid serve config: {problems}") from None


def _only_application(document: dict[str, Any]) -> dict[str, Any]:
    applications = document.get("applications") or []
    if len(applications) != 1:
        raise ConfigError(f"expected exactly one application, got {len(applications)}")
    return applications[0]


def app_config_of(document: dict[str, Any]) -> AppConfig:
    """The application's config from a serve config, as written (bounds in the node
    groups) or as deployed (bounds under `deployments:`, see `serve_document`)."""
    application = _only_application(document)
    args = copy.deepcopy(application.get("args") or {})
    options = {entry.get("name"): entry for entry in application.get("deployments") or []}
    for group in args.get("node_groups") or []:
        bounds = (options.get(group.get("name")) or {}).get("autoscaling_config")
        if bounds is not None:
            group["autoscaling_config"] = bounds
    return parse_app_config(args)


def serve_document(document: dict[str, Any]) -> dict[str, Any]:
    """The serve config as it is deployed (`make serve`, KubeRay's serveConfigV2): each node
    group's autoscaling bounds move from the application's args to Serve's `deployments:`
    options. Serve rebuilds an application, restarting every replica, whenever its args
    change, but applies a deployment's options to its running replicas: so a new
    max_replicas, target or delay is an in-place update instead of a 72B restart. The
    router needs only to know which groups may scale to zero; such a group keeps
    `min_replicas: 0` in its args (changing that one rebuilds)."""
    deployed = copy.deepcopy(document)
    application = _only_application(deployed)
    options = {entry["name"]: entry for entry in application.get("deployments") or []}
    for group in (application.get("args") or {}).get("node_groups") or []:
        bounds = group.pop("autoscaling_config", None)
        if bounds is None:
            continue
        if bounds.get("min_replicas") == 0:
            group["autoscaling_config"] = {"min_replicas": 0}
        options.setdefault(group["name"], {"name": group["name"]})["autoscaling_config"] = bounds
    if options:
        application["deployments"] = list(options.values())
    return deployed


def load_serve_config(path: str | Path) -> tuple[dict[str, Any], AppConfig]:
    """Read a `serve run` config file; return the whole document and its app's config."""
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    try:
        return document, app_config_of(document)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def main(argv: list[str]) -> int:
    """`python -m serve_app.config FILE...`: validate serve configs before deploying them."""
    status = 0
    for path in argv:
        try:
            _, config = load_serve_config(path)
        except ConfigError as error:
            print(f"{path}: {error}", file=sys.stderr)
            status = 1
        else:
            groups = ", ".join(
                f"{g.name} (TP {g.tensor_parallel_size}, {g.accelerator_type or 'CPU'})"
                for g in config.node_groups
            )
            print(f"==> {path}: valid; model {config.model.id}; node groups: {groups}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
