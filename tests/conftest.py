"""Shared fixtures: a tiny prepared corpus, and an environment with no GPU and no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub: the environment variables, and the flags the libraries read from them at import."""
    import datasets
    import huggingface_hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def split_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens as lm-eval splits them: encode the whole, cut at the
    context's length; an empty context is the [EOS] that separated training documents."""
    if not context:
        return [tokenizer.eos_token_id], tokenizer.encode(continuation, add_special_tokens=False)
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    return context_ids, whole[len(context_ids):]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic corpus with every special token the registered objectives need."""
    from harness.data.config import SyntheticData
    from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
    from harness.synthetic import WorldConfig
    cfg = SyntheticData(synthetic=WorldConfig(entities=12, documents=600, seed=3), seq_len=32,
                        val_fraction=0.1, eval_examples=40)
    tokens = [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]", "[SEP]"]
    return prepare(cfg, tokens, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def every_objective_data(tmp_path_factory):
    """A small synthetic corpus whose tokenizer carries every special token of every registered
    objective (the conformance battery and the FLOP counts run every objective on it)."""
    from harness.data.config import SyntheticData
    from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
    from harness.synthetic import WorldConfig
    from objectives import registry
    tokens = list(BASE_SPECIAL_TOKENS)
    for name in registry.names():
        tokens += [t for t in registry.get(name).special_tokens if t not in tokens]
    cfg = SyntheticData(synthetic=WorldConfig(entities=12, documents=600, seed=3), seq_len=64,
                        val_fraction=0.1, eval_examples=20)
    return prepare(cfg, tokens, tmp_path_factory.mktemp("every_objective"))
