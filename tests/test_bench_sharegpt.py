"""`make bench`'s ShareGPT run: the corpus file it writes is one vLLM's own `bench serve
--dataset-name sharegpt` reads, and what vLLM samples from it are real first user turns."""

from __future__ import annotations

import json

from transformers import AutoTokenizer
from vllm.benchmarks.datasets.datasets import ShareGPTDataset

from benchmarks.serving import sharegpt_file


def test_vllm_samples_real_first_user_turns_from_the_written_file(dev_model_dir):
    path = sharegpt_file()
    entries = json.loads(path.read_text())
    assert len(entries) > 10_000
    assert all(entry["conversations"][0]["from"] == "human" for entry in entries)
    first_turns = {entry["conversations"][0]["value"] for entry in entries}

    dataset = ShareGPTDataset(dataset_path=str(path), random_seed=0)
    samples = dataset.sample(AutoTokenizer.from_pretrained(dev_model_dir), 20, output_len=64)
    assert len(samples) == 20
    assert all(sample.prompt in first_turns for sample in samples)
    assert all(sample.expected_output_len == 64 for sample in samples)
