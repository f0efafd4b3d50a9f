"""Objective name -> class, imported only when asked for.

Importing this module registers nothing by side effect: `_REGISTRY` maps each name to
"module:Class", and `get` imports the one module it needs.
"""

from __future__ import annotations

import importlib

from harness.errors import UserError, did_you_mean
from objectives.base import Objective

_REGISTRY: dict[str, str] = {
    "clm": "objectives.clm:CausalLM",
    "mlm": "objectives.mlm:MaskedLM",
    "span_corruption": "objectives.span_corruption:SpanCorruption",
    "prefix_lm": "objectives.prefix_lm:PrefixLM",
    "ul2": "objectives.ul2:UL2",
    "mtp": "objectives.mtp:MultiTokenPrediction",
    "electra": "objectives.electra:Electra",
    "nsp": "objectives.nsp:NextSentencePrediction",
    "sop": "objectives.sop:SentenceOrderPrediction",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Objective]:
    """The objective class registered under `name`; a UserError with a suggestion otherwise."""
    if name not in _REGISTRY:
        raise UserError(
            f"unknown objective '{name}'{did_you_mean(name, _REGISTRY)}; "
            f"registered: {', '.join(names())}"
        )
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)
