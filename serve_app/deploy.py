"""Where the RayService stands, read from the status KubeRay v1.7 keeps on it.

`kubectl describe rayservice` dumps that status as one long YAML tree; this answers the
questions an operator has after `kubectl apply`: does it serve, is an upgrade running,
which Serve application or deployment is unhealthy and why, how many worker pods each
GPU group has. The engine deployments are named after their worker groups (h100-tp4,
a100-tp8), the ingress deployment is `router`.

    python -m serve_app.deploy status [--namespace NS] [--name NAME]
    python -m serve_app.deploy wait [--timeout SECONDS] [--namespace NS] [--name NAME]

Exit codes: 0 ready (`wait`: settled, see Summary.settled); 1 not ready, failed or timed
out; 2 no cluster to ask (no kubeconfig, not in a pod, connection refused, access denied).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

GROUP, VERSION = "ray.io", "v1"
DEFAULT_NAMESPACE = "athene"  # k8s/overlays/prod
DEFAULT_NAME = "athene"  # k8s/base/rayservice.yaml
REQUEST_TIMEOUT_S = 15
# Ready=False reasons after which KubeRay stops trying: a spec it refuses (fix and reapply)
# or ray.io/initializing-timeout exceeded (it deletes the clusters; delete and recreate).
TERMINAL_REASONS = frozenset({"ValidationFailed", "InitializingTimeout"})
# A status message (often a replica's traceback) is cut to its head and tail.
MESSAGE_HEAD_LINES, MESSAGE_TAIL_LINES = 2, 4

Doc = dict[str, Any]
# A RayService object and the RayCluster objects its status names, by cluster name.
Observed = tuple[Doc, dict[str, Doc]]
# (namespace, name) -> the observed objects, or None when the RayService does not exist.
Fetch = Callable[[str, str], Observed | None]


class NoClusterError(Exception):
    """No Kubernetes API answered: reported in one line with exit code 2, no traceback."""


# ---- status dict -> summary ------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    status: str  # "True", "False", "Unknown"; "" when KubeRay has not set it yet
    reason: str
    message: str


@dataclass(frozen=True)
class Deployment:
    name: str
    status: str  # Serve's: HEALTHY, UPDATING, UNHEALTHY, DEPLOY_FAILED, UPSCALING, ...
    message: str


@dataclass(frozen=True)
class Application:
    name: str
    status: str  # Serve's: RUNNING, DEPLOYING, UNHEALTHY, DEPLOY_FAILED, NOT_STARTED, DELETING
    message: str
    deployments: tuple[Deployment, ...]

    @property
    def healthy(self) -> bool:
        return self.status == "RUNNING" and all(d.status == "HEALTHY" for d in self.deployments)


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    replicas: int  # pods the group should have now (the autoscaler moves it)
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Cluster:
    role: str  # "active" (behind the Serve Service) or "pending" (being brought up)
    name: str  # "" once KubeRay dropped it (InitializingTimeout)
    state: str  # the RayCluster's: "ready", "suspended", ... ; "" while provisioning
    ready_workers: int
    desired_workers: int
    problems: tuple[str, ...]  # RayCluster conditions that explain a stuck cluster
    # None: KubeRay did not report them (the active cluster's, while a pending one exists).
    applications: tuple[Application, ...] | None
    worker_groups: tuple[WorkerGroup, ...]  # from the RayCluster; () when not fetched


@dataclass(frozen=True)
class Summary:
    namespace: str
    name: str
    ready: Condition
    upgrade: Condition
    serve_endpoints: int
    generation: int
    observed_generation: int
    clusters: tuple[Cluster, ...]

    @property
    def is_ready(self) -> bool:
        """Serve endpoints exist: requests are answered (possibly by the old cluster)."""
        return self.ready.status == "True"

    @property
    def upgrading(self) -> bool:
        return self.upgrade.status == "True"

    @property
    def failed(self) -> bool:
        return self.ready.status == "False" and self.ready.reason in TERMINAL_REASONS

    @property
    def current(self) -> bool:
        """The status describes the latest spec: right after `kubectl apply` it may not."""
        return self.observed_generation >= self.generation

    @property
    def settled(self) -> bool:
        """What `wait` waits for. Ready alone is not enough after an apply: the old cluster
        keeps Ready True through a cluster upgrade, and a serveConfigV2 change redeploys
        the applications in place without touching Ready."""
        applications = [a for c in self.clusters for a in c.applications or ()]
        return (
            self.is_ready
            and not self.upgrading
            and self.current
            and bool(applications)
            and all(a.healthy for a in applications)
        )


def _condition(status: Doc, kind: str) -> Condition:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            return Condition(
                item.get("status", ""), item.get("reason", ""), item.get("message", "")
            )
    return Condition("", "", "")


def _applications(service_status: Doc) -> tuple[Application, ...] | None:
    if "applicationStatuses" not in service_status:
        return None
    return tuple(
        Application(
            name=name,
            status=app.get("status", ""),
            message=app.get("message", ""),
            deployments=tuple(
                Deployment(name, deployment.get("status", ""), deployment.get("message", ""))
                for name, deployment in (app.get("serveDeploymentStatuses") or {}).items()
            ),
        )
        for name, app in service_status["applicationStatuses"].items()
    )


def _problems(cluster_status: Doc) -> tuple[str, ...]:
    """RayCluster conditions that say why pods are missing: a head pod not ready, pods
    still provisioning, pod creation refused (quota, admission webhooks)."""
    problems = []
    for item in cluster_status.get("conditions") or []:
        bad = "True" if item.get("type") == "RayClusterReplicaFailure" else "False"
        if item.get("status") == bad:
            text = f"{item.get('type')}={bad} ({item.get('reason', '')})"
            problems.append(f"{text}: {item['message']}" if item.get("message") else text)
    return tuple(problems)


def _worker_groups(raycluster: Doc | None) -> tuple[WorkerGroup, ...]:
    specs = (raycluster or {}).get("spec", {}).get("workerGroupSpecs") or []
    return tuple(
        WorkerGroup(
            name=spec["groupName"],
            # KubeRay treats a missing replicas as minReplicas.
            replicas=int(spec.get("replicas", spec.get("minReplicas", 0))),
            min_replicas=int(spec.get("minReplicas", 0)),
            max_replicas=int(spec.get("maxReplicas", 0)),
        )
        for spec in specs
    )


def _cluster(role: str, service_status: Doc, rayclusters: Mapping[str, Doc]) -> Cluster | None:
    name = service_status.get("rayClusterName", "")
    if not name and "applicationStatuses" not in service_status:
        return None  # no such cluster: KubeRay leaves an empty shell here
    cluster_status = service_status.get("rayClusterStatus") or {}
    return Cluster(
        role=role,
        name=name,
        state=cluster_status.get("state", ""),
        ready_workers=int(cluster_status.get("readyWorkerReplicas", 0)),
        desired_workers=int(cluster_status.get("desiredWorkerReplicas", 0)),
        problems=_problems(cluster_status),
        applications=_applications(service_status),
        worker_groups=_worker_groups(rayclusters.get(name)),
    )


def summarize(rayservice: Doc, rayclusters: Mapping[str, Doc] | None = None) -> Summary:
    """The summary of a RayService object (as the API returns it), with the worker groups
    of the RayCluster objects its status names when they are given."""
    metadata = rayservice.get("metadata", {})
    status = rayservice.get("status") or {}
    clusters = (
        _cluster(role, status.get(f"{role}ServiceStatus") or {}, rayclusters or {})
        for role in ("active", "pending")
    )
    return Summary(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        ready=_condition(status, "Ready"),
        upgrade=_condition(status, "UpgradeInProgress"),
        serve_endpoints=int(status.get("numServeEndpoints", 0)),
        generation=int(metadata.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        clusters=tuple(cluster for cluster in clusters if cluster is not None),
    )


# ---- summary -> text -------------------------------------------------------------------


def _clip(message: str, indent: str) -> list[str]:
    lines = [line.rstrip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > MESSAGE_HEAD_LINES + MESSAGE_TAIL_LINES + 1:
        skipped = len(lines) - MESSAGE_HEAD_LINES - MESSAGE_TAIL_LINES
        lines = [
            *lines[:MESSAGE_HEAD_LINES],
            f"... ({skipped} lines)",
            *lines[-MESSAGE_TAIL_LINES:],
        ]
    return [indent + line for line in lines]


def headline(summary: Summary) -> str:
    """One line: the verdict `wait` prints each time it changes."""
    if summary.failed:
        verdict = f"FAILED ({summary.ready.reason})"
    elif summary.is_ready:
        verdict = "READY"
    else:
        verdict = f"NOT READY ({summary.ready.reason or 'no Ready condition yet'})"
    parts = [f"RayService {summary.namespace}/{summary.name}: {verdict}"]
    parts.append(f"{summary.serve_endpoints} serve endpoints")
    if summary.upgrading:
        parts.append("upgrade in progress")
    if not summary.current:
        parts.append(
            f"status is for generation {summary.observed_generation}, "
            f"spec is at {summary.generation}"
        )
    return ", ".join(parts)


def _condition_line(kind: str, condition: Condition) -> str:
    if not condition.status:
        return f"  {kind}: not reported yet"
    line = f"  {kind}: {condition.status} ({condition.reason})"
    return f"{line} {condition.message}" if condition.message else line


def _cluster_lines(cluster: Cluster) -> list[str]:
    name = cluster.name or "(no longer tracked by KubeRay; last reported status)"
    lines = [
        f"{cluster.role} cluster {name}: {cluster.state or 'not ready'}, "
        f"{cluster.ready_workers}/{cluster.desired_workers} worker pods ready"
    ]
    lines += [f"  ! {problem}" for problem in cluster.problems]
    lines += [
        f"  worker group {group.name}: replicas {group.replicas} "
        f"(min {group.min_replicas}, max {group.max_replicas})"
        for group in cluster.worker_groups
    ]
    if cluster.applications is None:
        lines.append(
            "  applications: not reported while a pending cluster exists "
            "(KubeRay checks the pending cluster's)"
        )
        return lines
    if not cluster.applications:
        lines.append("  applications: none deployed yet")
    for app in cluster.applications:
        lines.append(f"  app {app.name}: {app.status or 'no status'}")
        lines += _clip(app.message, "    ")
        for deployment in app.deployments:
            lines.append(f"    {deployment.name}: {deployment.status or 'no status'}")
            if deployment.status != "HEALTHY":
                lines += _clip(deployment.message, "      ")
    return lines


def render(summary: Summary) -> str:
    lines = [
        headline(summary),
        _condition_line("Ready", summary.ready),
        _condition_line("UpgradeInProgress", summary.upgrade),
    ]
    if not summary.clusters:
        lines.append("no Ray cluster yet")
    for cluster in summary.clusters:
        lines += _cluster_lines(cluster)
    return "\n".join(lines)


# ---- API access ------------------------------------------------------------------------


def _unreachable(host: str, error: Exception) -> NoClusterError:
    # urllib3 wraps the cause twice; its last clause ("[Errno 111] Connection refused",
    # "... timed out") is what a user needs.
    detail = str(getattr(error, "reason", None) or error).rsplit(": ", 1)[-1]
    return NoClusterError(f"cannot reach the Kubernetes API at {host}: {detail}")


def api_fetch() -> Fetch:
    """A Fetch on the cluster kubectl would use (kubeconfig), else the pod's own."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_kube_config()
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise NoClusterError(
                "no Kubernetes cluster configured: no kubeconfig (KUBECONFIG or "
                "~/.kube/config) and not running in a pod"
            ) from None
    api = client.CustomObjectsApi()
    host = client.Configuration.get_default_copy().host

    def get(namespace: str, plural: str, name: str) -> Doc | None:
        try:
            return api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise NoClusterError(
                f"the Kubernetes API at {host} refused to read {plural}/{name} in "
                f"namespace {namespace}: {error.status} {error.reason}"
            ) from None
        except urllib3.exceptions.HTTPError as error:
            raise _unreachable(host, error) from None

    def fetch(namespace: str, name: str) -> Observed | None:
        rayservice = get(namespace, "rayservices", name)
        if rayservice is None:
            return None
        status = rayservice.get("status") or {}
        rayclusters = {}
        for role in ("active", "pending"):
            cluster_name = (status.get(f"{role}ServiceStatus") or {}).get("rayClusterName")
            # A cluster deleted since the status was written simply has no groups to show.
            if cluster_name and (raycluster := get(namespace, "rayclusters", cluster_name)):
                rayclusters[cluster_name] = raycluster
        return rayservice, rayclusters

    return fetch


# ---- commands --------------------------------------------------------------------------


def _not_found(namespace: str, name: str) -> str:
    return (
        f"RayService {namespace}/{name} not found (wrong --namespace/--name, "
        "or the KubeRay operator and its CRDs are not installed)"
    )


def status(fetch: Fetch, namespace: str, name: str) -> int:
    observed = fetch(namespace, name)
    if observed is None:
        print(_not_found(namespace, name))
        return 1
    summary = summarize(*observed)
    print(render(summary))
    return 0 if summary.is_ready else 1


def wait(
    fetch: Fetch,
    namespace: str,
    name: str,
    timeout_s: float,
    interval_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until settled (exit 0), failed for good or timed out (exit 1); print each new
    headline as it happens and the full status at the end."""
    deadline = clock() + timeout_s
    last_line = ""
    while True:
        observed = fetch(namespace, name)
        summary = summarize(*observed) if observed is not None else None
        line = headline(summary) if summary else _not_found(namespace, name)
        if line != last_line:
            print(line, flush=True)
            last_line = line
        done = summary is not None and (summary.settled or summary.failed)
        if done or clock() >= deadline:
            break
        sleep(min(interval_s, max(deadline - clock(), 0)))
    if summary is None:
        print(f"timed out after {timeout_s:g} s")
        return 1
    print(render(summary))
    if summary.settled:
        return 0
    print("failed: KubeRay gave up" if summary.failed else f"timed out after {timeout_s:g} s")
    return 1


def main(argv: list[str] | None = None, fetch: Fetch | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE)
    target.add_argument("--name", default=DEFAULT_NAME, help="the RayService")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", parents=[target], help="print the status; exit 0 if ready")
    waiting = commands.add_parser("wait", parents=[target], help="poll until settled")
    # A first start needs GPU nodes, a ~25 GB image and 145 GB of weights: 15-30 minutes.
    waiting.add_argument("--timeout", type=float, default=2700, metavar="SECONDS")
    waiting.add_argument("--interval", type=float, default=10, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        fetch = fetch or api_fetch()
        if args.command == "status":
            return status(fetch, args.namespace, args.name)
        return wait(fetch, args.namespace, args.name, args.timeout, args.interval)
    except NoClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
