"""Both serve configs load into the same models; bad config fails naming the field; the
builder gives each node group its own engine deployment with the right resources."""

from __future__ import annotations

import copy

import pytest

from serve_app.app import build_app, engine_deployment_options
from serve_app.config import (
    ConfigError,
    NodeGroupConfig,
    TracingConfig,
    app_config_of,
    load_serve_config,
    parse_app_config,
    serve_document,
)
from serve_app.router import NodeGroupBalancer

from .conftest import CPU_CONFIG, ROOT

PRODUCTION_CONFIG = ROOT / "serve_config.yaml"


def test_both_configs_load_into_the_same_models():
    _, cpu = load_serve_config(CPU_CONFIG)
    _, production = load_serve_config(PRODUCTION_CONFIG)
    assert type(cpu) is type(production)
    assert cpu.model.id == production.model.id == "athene-v2-chat"
    assert production.model.source == "Nexusflow/Athene-V2-Chat"
    assert production.model.max_model_len == 32768
    assert (
        cpu.prompt_policy.step_by_step.mode == production.prompt_policy.step_by_step.mode == "auto"
    )
    h100 = production.node_groups[0]
    assert (h100.accelerator_type, h100.tensor_parallel_size) == ("H100", 4)
    assert h100.engine_args["dtype"] == "bfloat16"
    assert h100.engine_args["enable_prefix_caching"] is True
    assert cpu.node_groups[0].accelerator_type is None


def test_both_configs_use_the_builder():
    for path in (CPU_CONFIG, PRODUCTION_CONFIG):
        document, _ = load_serve_config(path)
        assert document["applications"][0]["import_path"] == "serve_app.app:build_app"


def cpu_args() -> dict:
    document, _ = load_serve_config(CPU_CONFIG)
    return copy.deepcopy(document["applications"][0]["args"])


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda a: a["model"].update(max_model_len="long"), "model.max_model_len"),
        (lambda a: a["model"].update(sourse="x"), "model.sourse"),
        (
            lambda a: a["prompt_policy"]["step_by_step"].update(mode="sometimes"),
            "prompt_policy.step_by_step.mode",
        ),
        (
            lambda a: a["node_groups"][0].update(tensor_parallel_size=0),
            "node_groups.0.tensor_parallel_size",
        ),
        (
            lambda a: a["node_groups"][0]["engine_args"].update(max_model_len=4),
            "node_groups.0.engine_args",
        ),
        (
            lambda a: a["node_groups"][0]["autoscaling_config"].update(max_replica=3),
            "node_groups.0.autoscaling_config.max_replica",
        ),
        (lambda a: a["node_groups"].append(copy.deepcopy(a["node_groups"][0])), "unique"),
        (lambda a: a["model"].update(chat_template="missing.jinja"), "model.chat_template"),
    ],
)
def test_invalid_config_fails_at_start_naming_the_field(mutate, named):
    args = cpu_args()
    mutate(args)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        build_app(args)


def gpu_group(**overrides) -> NodeGroupConfig:
    fields = {
        "name": "h100-tp4",
        "accelerator_type": "H100",
        "tensor_parallel_size": 4,
        "num_cpus": 4,
    }
    return NodeGroupConfig(**{**fields, **overrides})


def test_gpu_group_reserves_one_strict_pack_bundle_per_tp_rank():
    options = engine_deployment_options(gpu_group(), TracingConfig())
    assert options["name"] == "h100-tp4"
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["placement_group_bundles"] == [
        {"GPU": 1.0, "accelerator_type:H100": 0.001, "CPU": 4},
        {"GPU": 1.0, "accelerator_type:H100": 0.001},
        {"GPU": 1.0, "accelerator_type:H100": 0.001},
        {"GPU": 1.0, "accelerator_type:H100": 0.001},
    ]
    # The replica actor takes only the first bundle's CPUs; vLLM's Ray workers take the GPUs.
    assert options["ray_actor_options"]["num_cpus"] == 4
    assert "num_gpus" not in options["ray_actor_options"]


def test_cpu_group_has_no_placement_group_and_carries_its_env():
    _, config = load_serve_config(CPU_CONFIG)
    options = engine_deployment_options(config.node_groups[0], config.tracing)
    assert "placement_group_bundles" not in options
    assert options["ray_actor_options"]["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_group_options_carry_autoscaling_and_limits():
    group = gpu_group(
        autoscaling_config={"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 16},
        max_ongoing_requests=48,
        max_queued_requests=64,
    )
    options = engine_deployment_options(group, TracingConfig())
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 3,
        "target_ongoing_requests": 16,
    }
    assert (options["max_ongoing_requests"], options["max_queued_requests"]) == (48, 64)


def test_engine_args_are_vllm_engine_args(monkeypatch):
    from serve_app import engine
    from serve_app.engine import engine_args_for

    _, config = load_serve_config(PRODUCTION_CONFIG)
    group = config.node_groups[0]
    cuda = type("Cuda", (), {"is_cpu": lambda self: False})()
    with monkeypatch.context() as patch:
        patch.setattr(engine, "current_platform", cuda)
        args = engine_args_for(config.model, config.model.source, group, config.tracing)
    assert (args.tensor_parallel_size, args.distributed_executor_backend) == (4, "ray")
    assert args.max_model_len == 32768 and args.enable_prefix_caching is True
    _, cpu = load_serve_config(CPU_CONFIG)
    cpu_group = cpu.node_groups[0]
    assert (
        engine_args_for(cpu.model, "x", cpu_group, cpu.tracing).distributed_executor_backend == "mp"
    )
    # vLLM's CPU build has no Ray executor: a GPU group on (fake) GPU nodes runs mp there.
    assert (
        engine_args_for(config.model, "x", group, config.tracing).distributed_executor_backend
        == "mp"
    )


def test_one_engine_deployment_per_node_group():
    args = cpu_args()
    second = copy.deepcopy(args["node_groups"][0])
    second["name"] = "cpu-b"
    args["node_groups"].append(second)
    config = parse_app_config(args)
    app = build_app(args)
    router = app._bound_deployment
    assert router.name == "router"
    engines = router.init_args[1]
    assert sorted(engines) == ["cpu", "cpu-b"]
    assert {e._bound_deployment.name for e in engines.values()} == {"cpu", "cpu-b"}
    assert router.init_args[0] == config


class TestBalancer:
    def make(self) -> NodeGroupBalancer:
        groups = [
            gpu_group(name="h100", max_ongoing_requests=40),
            gpu_group(name="a100", max_ongoing_requests=20),
        ]
        windows = {"h100": 32768, "a100": 32768}
        return NodeGroupBalancer(groups, {"h100": object(), "a100": object()}, windows)

    def test_a_long_context_group_gets_only_what_fits_nowhere_else(self):
        groups = [gpu_group(name=name) for name in ("h100", "a100", "long")]
        windows = {"h100": 32768, "a100": 32768, "long": 131072}
        balancer = NodeGroupBalancer(groups, dict.fromkeys(windows, object()), windows)
        balancer.running.update(h100=1, a100=1, long=1)
        balancer.in_flight.update(h100=30, a100=30)  # busy: still not the long group
        assert balancer.fitting(100) == ["h100", "a100"] == balancer.fitting(32768)
        assert balancer.fitting(32769) == ["long"] == balancer.fitting(131072)
        assert balancer.fitting(131073) == []
        assert balancer.pick(balancer.fitting(100)) in ("h100", "a100")

    def test_least_loaded_per_unit_of_live_capacity(self):
        balancer = self.make()
        balancer.running.update(h100=1, a100=2)  # capacity 40 vs 40
        balancer.in_flight.update(h100=10, a100=5)
        assert balancer.pick() == "a100"
        balancer.in_flight.update(a100=30)
        assert balancer.pick() == "h100"

    def test_spreads_in_proportion_to_capacity(self):
        balancer = self.make()
        balancer.running.update(h100=1, a100=1)  # 40 vs 20 slots
        for _ in range(30):
            balancer.in_flight[balancer.pick()] += 1
        assert balancer.in_flight == {"h100": 20, "a100": 10}

    def test_groups_without_live_replicas_come_last(self):
        balancer = self.make()
        balancer.running.update(h100=0, a100=1)
        balancer.in_flight.update(a100=100)
        assert balancer.pick() == "a100"
        assert not balancer.ready()
        balancer.running.update(h100=1)
        assert balancer.pick() == "h100" and balancer.ready()

    def test_a_group_that_lost_its_replicas_is_down_and_others_take_the_traffic(self):
        balancer = self.make()
        balancer.observe("h100", 1)
        balancer.observe("a100", 1)
        balancer.observe("h100", 0)  # h100's replica died
        assert balancer.down("h100") and not balancer.down("a100")
        assert {balancer.pick() for _ in range(5)} == {"a100"}

    def test_a_group_not_yet_seen_up_is_starting_not_down(self):
        balancer = self.make()  # just deployed: the controller may not list the replica yet
        assert not balancer.down("h100")
        balancer.observe("h100", 1)
        balancer.observe("h100", 0)
        assert balancer.down("h100")

    def test_a_group_allowed_to_scale_to_zero_is_never_down_and_keeps_the_router_ready(self):
        groups = [
            gpu_group(name="h100", autoscaling_config={"min_replicas": 0}),
            gpu_group(name="a100"),
        ]
        windows = {"h100": 32768, "a100": 32768}
        balancer = NodeGroupBalancer(groups, dict.fromkeys(windows, object()), windows)
        balancer.observe("h100", 1)
        balancer.observe("h100", 0)
        assert not balancer.down("h100")  # a request waits for the cold start instead
        assert not balancer.ready()  # a100 keeps a replica and has none yet
        balancer.observe("a100", 1)
        assert balancer.ready()  # h100 at zero does not hold the router's readiness


def test_config_check_command_names_the_bad_field(tmp_path, capsys):
    from serve_app.config import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(CPU_CONFIG.read_text().replace("max_model_len: 8192", "max_model_len: -1"))
    assert main([str(CPU_CONFIG), str(PRODUCTION_CONFIG)]) == 0
    assert main([str(bad)]) == 1
    assert "model.max_model_len: Input should be greater than 0" in capsys.readouterr().err


def test_tracing_reaches_every_engine_from_one_setting():
    from serve_app.engine import engine_args_for

    args = cpu_args()
    args["tracing"] = {"otlp_endpoint": "http://collector:4318/v1/traces"}
    config = parse_app_config(args)
    group = config.node_groups[0]
    engine_args = engine_args_for(config.model, "x", group, config.tracing)
    assert engine_args.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    env = engine_deployment_options(group, config.tracing)["ray_actor_options"]["runtime_env"]
    assert env["env_vars"]["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
    assert env["env_vars"]["OTEL_SERVICE_NAME"] == "athene-engine-cpu"
    # Off by default: no endpoint, no exporter settings.
    default = parse_app_config(cpu_args())
    assert engine_args_for(default.model, "x", group, default.tracing).otlp_traces_endpoint is None
    options = engine_deployment_options(group, default.tracing)
    assert "OTEL_SERVICE_NAME" not in options["ray_actor_options"]["runtime_env"]["env_vars"]
    # The engines' endpoint comes from the tracing section only.
    args["node_groups"][0]["engine_args"]["otlp_traces_endpoint"] = "http://elsewhere"
    with pytest.raises(ConfigError, match="otlp_traces_endpoint belong"):
        parse_app_config(args)


# ---- the deployed form: autoscaling bounds where Serve applies them in place --------------


@pytest.mark.parametrize("path", [CPU_CONFIG, PRODUCTION_CONFIG])
def test_the_deployed_form_holds_the_same_config(path):
    document, config = load_serve_config(path)
    deployed = serve_document(document)
    assert app_config_of(deployed) == config
    (application,) = deployed["applications"]
    options = {entry["name"]: entry for entry in application["deployments"]}
    for group in application["args"]["node_groups"]:
        bounds = config_group(config, group["name"]).autoscaling_config
        assert options[group["name"]]["autoscaling_config"] == bounds.model_dump(exclude_unset=True)
        # In the args only what the router reads: whether the group may scale to zero.
        kept = {"min_replicas": 0} if bounds.min_replicas == 0 else None
        assert group.get("autoscaling_config") == kept


def test_a_new_bound_changes_only_the_deployment_options_not_the_args():
    """Serve restarts every replica of an app whose args change (it hashes them): a bound
    must reach it as a deployment option to be applied to the running replicas."""
    document, _ = load_serve_config(CPU_CONFIG)
    changed = copy.deepcopy(document)
    changed["applications"][0]["args"]["node_groups"][0]["autoscaling_config"]["max_replicas"] += 1
    before, after = serve_document(document), serve_document(changed)
    assert before["applications"][0]["args"] == after["applications"][0]["args"]
    assert before["applications"][0]["deployments"] != after["applications"][0]["deployments"]
    assert document == load_serve_config(CPU_CONFIG)[0]  # the input is left alone


def test_a_scale_to_zero_group_keeps_min_replicas_zero_in_its_args():
    document, _ = load_serve_config(CPU_CONFIG)
    group = document["applications"][0]["args"]["node_groups"][0]
    group["autoscaling_config"] = {"min_replicas": 0, "max_replicas": 3, "initial_replicas": 0}
    deployed = serve_document(document)
    (application,) = deployed["applications"]
    assert application["args"]["node_groups"][0]["autoscaling_config"] == {"min_replicas": 0}
    assert application["deployments"][0]["autoscaling_config"]["max_replicas"] == 3
    assert app_config_of(deployed).node_groups[0].autoscaling_config.min_replicas == 0


def config_group(config, name):
    return next(group for group in config.node_groups if group.name == name)


def test_the_long_context_groups_yarn_gives_vllm_its_window(dev_model_dir):
    """The production long-context group's engine args, on the dev model (whose config.json
    has Qwen2.5-72B's 32k positions and rope theta): vLLM accepts the 128k window only
    because of the YaRN override, and the router sends there only what needs it."""
    from serve_app.engine import engine_args_for

    _, config = load_serve_config(PRODUCTION_CONFIG)
    (long,) = [g for g in config.node_groups if config.window(g) > config.model.max_model_len]
    assert config.window(long) == config.longest_window == 131072
    assert long.autoscaling_config.min_replicas == 0 and long.cold_start_timeout_s
    on_cpu = long.model_copy(update={"accelerator_type": None, "tensor_parallel_size": 1})
    args = engine_args_for(config.model, str(dev_model_dir), on_cpu, config.tracing)
    args.load_format = "dummy"
    assert args.create_engine_config().model_config.max_model_len == 131072
    without_yarn = {k: v for k, v in long.engine_args.items() if k != "hf_overrides"}
    plain = on_cpu.model_copy(update={"engine_args": without_yarn})
    args = engine_args_for(config.model, str(dev_model_dir), plain, config.tracing)
    args.load_format = "dummy"
    with pytest.raises(ValueError, match="max_model_len"):
        args.create_engine_config()
