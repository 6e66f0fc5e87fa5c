"""The RayService's `serveConfigV2`, generated from the `serve run` configs.

The serve configs stay the single source of truth: KubeRay gets the same applications,
rendered into one committed file per config that kustomize embeds into the RayService
(`k8s/base/kustomization.yaml`: a local-only ConfigMap + a replacement), so a review
shows the exact string the operator will deploy and CI fails when it drifts.

    python -m serve_app.kube render-serve-config [CONFIG]   print the serveConfigV2 string
    python -m serve_app.kube write                          rewrite the committed copies
    python -m serve_app.kube check                          exit 1 if a copy is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from serve_app.config import ConfigError, load_serve_config, serve_document

ROOT = Path(__file__).resolve().parent.parent

# Serve config -> the committed serveConfigV2 file kustomize reads (repo-relative paths).
GENERATED = {
    "serve_config.yaml": "k8s/base/serve-config.yaml",
    "serve_config.cpu.yaml": "k8s/overlays/dev-cpu/serve-config.yaml",
}

# KubeRay owns the proxies' HTTP endpoint: its Serve Service, readiness probe and
# NetworkPolicy all assume 0.0.0.0:8000 (Serve's defaults), and Serve cannot change
# http_options without a restart anyway, so the generated config leaves them out.
KUBERAY_MANAGED_KEYS = frozenset({"http_options"})

# On Kubernetes each router replica holds a unit of a custom Ray resource that only the
# router pods declare, one per pod: a router lands on a router pod of its own and serves the
# pod's one direct-ingress port, which the callers' Service targets (k8s/base/rayservice.yaml).
# The serve configs leave it out: `serve run` on one machine has no such pods.
ROUTER_POD_RESOURCES = {"router": 1.0}

HEADER = (
    "# GENERATED from {source} by `make k8s-manifests` (python -m serve_app.kube write).\n"
    "# Do not edit: change {source} and regenerate. kustomize embeds this file as the\n"
    "# RayService's spec.serveConfigV2; tests/test_k8s.py fails when it drifts.\n"
)


def render_serve_config(source: str) -> str:
    """The serveConfigV2 string for one serve config, validated like `serve run` would."""
    document, _ = load_serve_config(ROOT / source)
    deployed = serve_document(document)  # autoscaling bounds where Serve applies them in place
    kept = {key: value for key, value in deployed.items() if key not in KUBERAY_MANAGED_KEYS}
    for app in kept["applications"]:
        router = app["args"].setdefault("router", {})
        router["resources"] = {**ROUTER_POD_RESOURCES, **router.get("resources", {})}
    body = yaml.safe_dump(kept, sort_keys=False, default_flow_style=False, width=100)
    return HEADER.format(source=source) + body


def stale_copies() -> list[str]:
    """Committed serveConfigV2 files that differ from what their serve config renders."""
    stale = []
    for source, target in GENERATED.items():
        path = ROOT / target
        if not path.is_file() or path.read_text() != render_serve_config(source):
            stale.append(target)
    return stale


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.kube", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render-serve-config", help="print a serveConfigV2 string")
    render.add_argument("config", nargs="?", default="serve_config.yaml", choices=GENERATED)
    commands.add_parser("write", help="rewrite the committed serveConfigV2 files")
    commands.add_parser("check", help="exit 1 if a committed serveConfigV2 file is stale")
    args = parser.parse_args(argv)
    try:
        if args.command == "render-serve-config":
            sys.stdout.write(render_serve_config(args.config))
        elif args.command == "write":
            for source, target in GENERATED.items():
                (ROOT / target).parent.mkdir(parents=True, exist_ok=True)
                (ROOT / target).write_text(render_serve_config(source))
                print(f"==> wrote {target} from {source}")
        else:
            stale = stale_copies()
            if stale:
                print(f"stale: {', '.join(stale)}; run `make k8s-manifests`", file=sys.stderr)
                return 1
            print("==> serveConfigV2 files match their serve configs")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
