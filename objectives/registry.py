"""Objective name -> class and config, imported only when asked for.

Importing this module registers nothing by side effect and imports no torch: `_REGISTRY` maps
each name to "module:Class" and to its config class in objectives.configs. `config` returns the
config class (enough to validate a suite), `get` imports the one objective module it needs, and
`build` is the way to construct an objective for a vocabulary.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from harness.errors import UserError, did_you_mean
from objectives import configs
from objectives.configs import ObjectiveConfig

if TYPE_CHECKING:  # objectives.base imports torch, which validating a suite does not need
    from objectives.base import Objective, Vocab

_REGISTRY: dict[str, tuple[str, str]] = {
    "clm": ("objectives.clm:CausalLM", "CausalLMConfig"),
    "mlm": ("objectives.mlm:MaskedLM", "MaskedLMConfig"),
    "span_corruption": ("objectives.span_corruption:SpanCorruption", "SpanCorruptionConfig"),
    "prefix_lm": ("objectives.prefix_lm:PrefixLM", "PrefixLMConfig"),
    "ul2": ("objectives.ul2:UL2", "UL2Config"),
    "mtp": ("objectives.mtp:MultiTokenPrediction", "MultiTokenConfig"),
    "electra": ("objectives.electra:Electra", "ElectraConfig"),
    "nsp": ("objectives.nsp:NextSentencePrediction", "NextSentenceConfig"),
    "sop": ("objectives.sop:SentenceOrderPrediction", "SentenceOrderConfig"),
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def config(name: str) -> type[ObjectiveConfig]:
    """The config class of the objective registered under `name` (no torch is imported)."""
    return getattr(configs, _entry(name)[1])


def get(name: str) -> type[Objective]:
    """The objective class registered under `name`; a UserError with a suggestion otherwise."""
    module, attr = _entry(name)[0].split(":")
    return getattr(importlib.import_module(module), attr)


def build(name: str, config: dict | ObjectiveConfig, vocab: Vocab) -> Objective:
    """The objective `name` with `config` (its Config, or a dict of its fields) for `vocab`.

    Objectives check what they need of the vocabulary here (span corruption's sentinels, say),
    so that planning, which builds every objective of a suite, finds a problem before training.
    """
    cls = get(name)
    if isinstance(config, dict):
        config = cls.Config(**config)
    elif not isinstance(config, cls.Config):
        raise TypeError(f"objective {name} takes a {cls.Config.__name__} or a dict, not {type(config).__name__}")
    return cls(config, vocab)


def _entry(name: str) -> tuple[str, str]:
    if name not in _REGISTRY:
        raise UserError(
            f"unknown objective '{name}'{did_you_mean(name, _REGISTRY)}; "
            f"registered: {', '.join(names())}"
        )
    return _REGISTRY[name]
