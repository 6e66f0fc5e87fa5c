"""Where the RayService stands, read from the status KubeRay v1.7 keeps on it, or from the
Ray dashboard's Serve REST API that KubeRay itself reads.

`kubectl describe rayservice` dumps that status as one long YAML tree; this answers the
questions an operator has after `kubectl apply`: does it serve, is an upgrade running,
which Serve application or deployment is unhealthy and why, how many worker pods each
GPU group has. The engine deployments are named after their worker groups (h100-tp4,
a100-tp8), the ingress deployment is `router`.

    python -m serve_app.deploy status [--namespace NS] [--name NAME]
    python -m serve_app.deploy wait [--timeout SECONDS] [--namespace NS] [--name NAME]
    python -m serve_app.deploy status --dashboard http://HEAD:8265
    python -m serve_app.deploy wait --dashboard http://HEAD:8265 [--timeout SECONDS]

With --dashboard (no Kubernetes credentials needed: a port-forward to the head's 8265, a
VM cluster, a test) it asks the dashboard what the operator asks it,
`GET /api/serve/applications/?api_type=declarative`, and turns the answer into the
status the operator would write: each application's and deployment's status and message
(`applicationStatuses`), the Serve proxies that are HEALTHY as serve endpoints, Ready once
there is one and every deployment has a running replica (or is HEALTHY at zero). The same
lines and exit codes follow; worker pods are not visible that way. With Ray token auth on,
the token is taken from RAY_AUTH_TOKEN or the file RAY_AUTH_TOKEN_PATH, as Ray's clients do.

Exit codes: 0 ready (`wait`: settled, see Summary.settled); 1 not ready, failed or timed
out; 2 no cluster to ask (no kubeconfig, not in a pod, connection refused, access denied,
no Ray dashboard at that address).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
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

# What KubeRay's dashboard client asks the head (ray-operator/controllers/ray/utils/
# dashboardclient/dashboard_httpclient.go: ServeDetailsPath, APITypeParam, setAuthHeader).
SERVE_DETAILS_PATH = "/api/serve/applications/"
SERVE_DETAILS_QUERY = "api_type=declarative"
AUTH_HEADER = "x-ray-authorization"
# KubeRay's key for an application deployed without a name (utils.DefaultServeAppName).
DEFAULT_APP_NAME = "default"
# Marks a RayService-shaped document built from a dashboard's answer; the value is its URL.
DASHBOARD_ANNOTATION = "athene-serve/dashboard"

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
    # The dashboard URL when read from the Serve REST API instead of the RayService.
    dashboard: str = ""

    @property
    def subject(self) -> str:
        if self.dashboard:
            return f"Serve at {self.dashboard}"
        return f"RayService {self.namespace}/{self.name}"

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
        dashboard=(metadata.get("annotations") or {}).get(DASHBOARD_ANNOTATION, ""),
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
    parts = [f"{summary.subject}: {verdict}"]
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


def _cluster_lines(cluster: Cluster, pods_visible: bool = True) -> list[str]:
    name = cluster.name or "(no longer tracked by KubeRay; last reported status)"
    if pods_visible:
        pods = (
            f"{cluster.state or 'not ready'}, "
            f"{cluster.ready_workers}/{cluster.desired_workers} worker pods ready"
        )
    else:
        pods = "pods not visible through the dashboard"
    lines = [f"{cluster.role} cluster {name}: {pods}"]
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
        lines += _cluster_lines(cluster, pods_visible=not summary.dashboard)
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


# ---- the Ray dashboard's Serve REST API, for clusters without Kubernetes credentials -----


def application_statuses(details: Doc) -> Doc:
    """`applicationStatuses` as KubeRay writes them from the dashboard's answer
    (rayservice_controller.go, getAndCheckServeStatus): each application's status and
    message and each of its deployments' (`serveDeploymentStatuses`), empty ones left out
    as Go's omitempty does."""

    def entry(item: Doc) -> Doc:
        return {key: item[key] for key in ("status", "message") if item.get(key)}

    statuses = {}
    for name, app in (details.get("applications") or {}).items():
        status = entry(app)
        deployments = app.get("deployments") or {}
        if deployments:
            status["serveDeploymentStatuses"] = {d: entry(v) for d, v in deployments.items()}
        statuses[name or DEFAULT_APP_NAME] = status
    return statuses


def _not_serving(details: Doc) -> str:
    """What can answer nothing yet, "" when everything can: applications without
    deployments (being built) and deployments neither HEALTHY (which may be at zero
    replicas by design) nor with a RUNNING replica (an in-place update keeps its old ones)."""
    unbuilt, idle = [], []
    for app_name, app in (details.get("applications") or {}).items():
        app_name = app_name or DEFAULT_APP_NAME
        deployments = app.get("deployments") or {}
        if not deployments:
            unbuilt.append(app_name)
        idle += [
            f"{app_name}/{name}"
            for name, deployment in deployments.items()
            if deployment.get("status") != "HEALTHY"
            and not any(r.get("state") == "RUNNING" for r in deployment.get("replicas") or ())
        ]
    parts = [f"{', '.join(unbuilt)} (no deployments yet)"] if unbuilt else []
    parts += [f"{', '.join(idle)} (no running replica)"] if idle else []
    return f"not serving yet: {'; '.join(parts)}" if parts else ""


def dashboard_rayservice(details: Doc, url: str) -> Doc:
    """The RayService status KubeRay would write for the one cluster whose dashboard gave
    `details` (its answer to GET /api/serve/applications/). KubeRay counts as serve
    endpoints the pods whose Serve proxy is healthy; here, the proxies Serve reports
    HEALTHY. It keeps Ready False (Initializing) until the applications first run and True
    while an endpoint exists; a single answer has no history, so Ready here needs an
    endpoint and a running replica (or HEALTHY at zero) in every deployment."""
    applications = application_statuses(details)
    proxies = (details.get("proxies") or {}).values()
    endpoints = sum(1 for proxy in proxies if proxy.get("status") == "HEALTHY")
    not_serving = _not_serving(details)
    if not applications:
        ready, reason, message = "False", "Initializing", "no Serve application deployed yet"
    elif not_serving:
        ready, reason, message = "False", "Initializing", not_serving
    elif not endpoints:
        ready, reason, message = "False", "ZeroServeEndpoints", "no HEALTHY Serve proxy"
    else:
        ready, reason, message = "True", "NonZeroServeEndpoints", ""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayService",
        "metadata": {"annotations": {DASHBOARD_ANNOTATION: url}},
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "reason": reason, "message": message},
                # One cluster, the one asked: nothing pending.
                {"type": "UpgradeInProgress", "status": "False", "reason": "NoPendingCluster"},
            ],
            "numServeEndpoints": endpoints,
            "activeServiceStatus": {"rayClusterName": url, "applicationStatuses": applications},
        },
    }


def _auth_token() -> str:
    """Ray's token, where Ray's own clients look for it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH."""
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if not token and path:
        try:
            token = Path(path).read_text()
        except OSError as error:
            raise NoClusterError(f"cannot read RAY_AUTH_TOKEN_PATH {path}: {error}") from None
    return token.strip()


def dashboard_url(address: str) -> str:
    """http://HOST:PORT without a trailing slash; `HOST:PORT` alone means http."""
    return (address if "://" in address else f"http://{address}").rstrip("/")


def serve_details(address: str, timeout_s: float = REQUEST_TIMEOUT_S) -> Doc:
    """The dashboard's answer to the GET KubeRay sends, as a dict; NoClusterError (one line)
    when nothing answers there, or not like a Ray dashboard."""
    url = dashboard_url(address)
    request = urllib.request.Request(f"{url}{SERVE_DETAILS_PATH}?{SERVE_DETAILS_QUERY}")
    if token := _auth_token():
        request.add_header(AUTH_HEADER, f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace").strip()
        detail = text.splitlines()[0][:200] if text else ""
        raise NoClusterError(
            f"the Ray dashboard at {url} answered {error.code} {error.reason}"
            + (f": {detail}" if detail else "")
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        # Refused, unknown host, timed out, a malformed URL: the cause is what helps.
        detail = getattr(error, "reason", None) or error
        raise NoClusterError(f"cannot reach the Ray dashboard at {url}: {detail}") from None
    try:
        details = json.loads(body)
    except ValueError:
        details = None
    if not isinstance(details, dict) or "applications" not in details:
        raise NoClusterError(
            f"{url} did not answer like a Ray dashboard: no Serve details at {SERVE_DETAILS_PATH}"
        )
    return details


def dashboard_fetch(address: str) -> Fetch:
    """A Fetch on a Ray dashboard: the RayService KubeRay would write from its answer (the
    namespace and name are not asked)."""
    url = dashboard_url(address)

    def fetch(namespace: str, name: str) -> Observed:
        return dashboard_rayservice(serve_details(url), url), {}

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
    target.add_argument(
        "--dashboard",
        metavar="URL",
        help="read Serve's status from the Ray dashboard at URL (http://HOST:8265), as the "
        "operator does, instead of the RayService: no Kubernetes credentials needed",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", parents=[target], help="print the status; exit 0 if ready")
    waiting = commands.add_parser("wait", parents=[target], help="poll until settled")
    # A first start needs GPU nodes, a ~25 GB image and 145 GB of weights: 15-30 minutes.
    waiting.add_argument("--timeout", type=float, default=2700, metavar="SECONDS")
    waiting.add_argument("--interval", type=float, default=10, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        if fetch is None:
            fetch = dashboard_fetch(args.dashboard) if args.dashboard else api_fetch()
        if args.command == "status":
            return status(fetch, args.namespace, args.name)
        return wait(fetch, args.namespace, args.name, args.timeout, args.interval)
    except NoClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
