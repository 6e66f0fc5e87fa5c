"""The order in which the k8s tests look for KubeRay's CRDs (tests/kuberay_crds.py): a fresh
clone with nothing beside it must still run them, or skip them with one line saying how to
supply them. Downloads are served from a loopback HTTP server standing in for KubeRay's
release (these machines reach no other host)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import free_port
from .kuberay_crds import HOW_TO_SUPPLY, SHA256, CrdsUnavailableError, cache_dir, find_crds


def real_crds() -> Path:
    """The genuine files, from wherever this run found them (the test session's own lookup)."""
    from .test_k8s import crds_dir

    return crds_dir()


def write_crds(folder: Path, source: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHA256:
        (folder / name).write_bytes((source / name).read_bytes() if source else b"kind: X\n")
    return folder


@pytest.fixture
def release(tmp_path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested) of a loopback server holding the real CRD files."""
    served = write_crds(tmp_path / "release", real_crds())
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requested.append(self.path)

    server = ThreadingHTTPServer(
        ("127.0.0.1", free_port()), partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def clone(tmp_path) -> Path:
    """A repository root with no ../shared beside it."""
    root = tmp_path / "clone" / "repo"
    root.mkdir(parents=True)
    return root


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: "no network"


def test_the_folder_named_by_the_environment_comes_first(clone, tmp_path):
    named = write_crds(tmp_path / "named")
    write_crds(clone.parent / "shared" / "kuberay" / "v1.7.0" / "crds")
    assert find_crds(clone, {"KUBERAY_CRDS_DIR": str(named)}) == named


def test_a_named_folder_without_the_files_is_an_error_not_a_fallback(clone, tmp_path):
    write_crds(clone.parent / "shared" / "kuberay" / "v1.7.0" / "crds")
    with pytest.raises(CrdsUnavailableError, match="KUBERAY_CRDS_DIR"):
        find_crds(clone, {"KUBERAY_CRDS_DIR": str(tmp_path / "empty")})


def test_shared_beside_the_clone_comes_next(clone, tmp_path):
    shared = write_crds(clone.parent / "shared" / "kuberay" / "v1.7.0" / "crds")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KUBERAY_CRDS_URL": closed_port_url()}
    assert find_crds(clone, env) == shared


def test_a_fresh_clone_downloads_them_once_into_the_cache(clone, tmp_path, release):
    url, requested = release
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KUBERAY_CRDS_URL": url}
    found = find_crds(clone, env)
    assert found == cache_dir(env)
    for name in SHA256:
        assert (found / name).read_bytes() == (real_crds() / name).read_bytes()
    assert sorted(requested) == sorted(f"/{name}" for name in SHA256)
    # The second lookup (another test session) reads the cache and asks nobody.
    assert find_crds(clone, {**env, "KUBERAY_CRDS_URL": closed_port_url()}) == found
    assert len(requested) == len(SHA256)


def test_a_download_that_differs_from_the_release_never_lands_in_the_cache(
    clone, tmp_path, release
):
    url, _ = release
    served = tmp_path / "release"
    (served / "ray.io_rayservices.yaml").write_text("tampered\n")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KUBERAY_CRDS_URL": url}
    with pytest.raises(CrdsUnavailableError, match="SHA-256"):
        find_crds(clone, env)
    assert not (cache_dir(env) / "ray.io_rayservices.yaml").exists()


def test_without_network_the_error_says_how_to_supply_them(clone, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "KUBERAY_CRDS_URL": closed_port_url()}
    with pytest.raises(CrdsUnavailableError) as error:
        find_crds(clone, env)
    assert str(error.value).startswith(HOW_TO_SUPPLY)
    assert "\n" not in str(error.value)


def test_this_repository_finds_the_real_crds():
    """The CRD checks run here, never skipped silently: the files are KubeRay v1.7.0's."""
    import hashlib

    for name, digest in SHA256.items():
        assert hashlib.sha256((real_crds() / name).read_bytes()).hexdigest() == digest


def test_the_k8s_tests_skip_with_the_message_outside_ci_and_fail_in_ci(tmp_path, monkeypatch):
    from . import test_k8s

    monkeypatch.setattr(test_k8s, "_crds", lambda: HOW_TO_SUPPLY)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="KUBERAY_CRDS_DIR"):
        test_k8s.crds_dir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="KUBERAY_CRDS_DIR"):
        test_k8s.crds_dir()
