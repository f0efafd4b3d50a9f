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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic corpus with every special token the registered objectives need."""
    from harness.data import BASE_SPECIAL_TOKENS, DataConfig, prepare
    from harness.synthetic import WorldConfig
    cfg = DataConfig(synthetic=WorldConfig(entities=12, documents=600, seed=3), seq_len=32,
                     val_fraction=0.1, eval_examples=40)
    tokens = [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]", "[SEP]"]
    return prepare(cfg, tokens, tmp_path_factory.mktemp("data"))
