"""Where the k8s tests get KubeRay v1.7.0's CRDs (the schemas the operator validates a
RayService against), so a fresh clone with nothing beside it can run them too.

In order: $KUBERAY_CRDS_DIR; `../shared/kuberay/v1.7.0/crds` beside the repository (the
team's machines and CI); the user cache; else a one-time download of the two files from
KubeRay's v1.7.0 tag into that cache, checked against the digests pinned here. When none
works, the caller skips the CRD checks with `HOW_TO_SUPPLY` (CI fails instead).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

VERSION = "v1.7.0"
# ray-project/kuberay at tag v1.7.0, ray-operator/config/crd/bases/ (Apache-2.0).
RELEASE_URL = (
    f"https://raw.githubusercontent.com/ray-project/kuberay/{VERSION}/ray-operator/config/crd/bases"
)
SHA256 = {
    "ray.io_rayservices.yaml": "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
}
DOWNLOAD_TIMEOUT_S = 10
HOW_TO_SUPPLY = (
    f"KubeRay {VERSION} CRDs not found and not downloadable: set KUBERAY_CRDS_DIR to a folder "
    f"holding {' and '.join(SHA256)} (KubeRay {VERSION}'s ray-operator/config/crd/bases/)"
)


class CrdsUnavailableError(Exception):
    """No source had the CRDs; the message says what was tried."""


def _holds_crds(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SHA256)


def _verified(folder: Path) -> bool:
    return all(
        (folder / name).is_file()
        and hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
        for name, digest in SHA256.items()
    )


def cache_dir(env: Mapping[str, str]) -> Path:
    cache_root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_root / "athene-serve" / "kuberay" / VERSION / "crds"


def download(base_url: str, target: Path) -> None:
    """The two CRD files from `base_url` into `target`, each written whole only after its
    digest matched (a broken or tampered download never lands in the cache)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        with urllib.request.urlopen(f"{base_url}/{name}", timeout=DOWNLOAD_TIMEOUT_S) as answer:
            body = answer.read()
        if hashlib.sha256(body).hexdigest() != digest:
            raise CrdsUnavailableError(
                f"{base_url}/{name}: SHA-256 differs from KubeRay {VERSION}'s"
            )
        partial = target / f".{name}.partial"
        partial.write_bytes(body)
        partial.rename(target / name)


def find_crds(repo_root: Path, env: Mapping[str, str] = os.environ) -> Path:
    """The folder holding the CRDs, by the order in the module docstring."""
    configured = env.get("KUBERAY_CRDS_DIR")
    if configured:
        if not _holds_crds(Path(configured)):
            # Asked for by name: a wrong folder is an error, not a reason to look elsewhere.
            raise CrdsUnavailableError(f"KUBERAY_CRDS_DIR={configured} lacks {' or '.join(SHA256)}")
        return Path(configured)
    shared = repo_root.parent / "shared" / "kuberay" / VERSION / "crds"
    if _holds_crds(shared):
        return shared
    cached = cache_dir(env)
    if _verified(cached):
        return cached
    base_url = env.get("KUBERAY_CRDS_URL", RELEASE_URL)
    try:
        download(base_url, cached)
    except (OSError, urllib.error.URLError) as error:  # no network, 404, a full disk
        raise CrdsUnavailableError(f"{HOW_TO_SUPPLY} (download from {base_url}: {error})") from None
    return cached
