"""Model families, built from transformers classes at a named size and initialized from scratch.

Every objective at a given size gets the same transformer block, width and depth: the
ModernBERT encoder and the ModernBERT decoder in transformers share their layer, so the two
differ only in the attention pattern (bidirectional or causal) and count the same parameters.
Nothing is downloaded.
"""

from __future__ import annotations

import torch
from transformers import (ModernBertConfig, ModernBertDecoderConfig,
                          ModernBertDecoderForCausalLM, ModernBertForMaskedLM, PreTrainedModel)

from harness.models.encdec import EncoderDecoderConfig, ModernEncoderDecoder
from harness.models.sizes import ModelSize


_FAMILIES = {
    "decoder": (ModernBertDecoderConfig, ModernBertDecoderForCausalLM),
    "encoder": (ModernBertConfig, ModernBertForMaskedLM),
    # the same block in two stacks, see harness.models.encdec
    "encoder-decoder": (EncoderDecoderConfig, ModernEncoderDecoder),
}


def build_model(architecture: str, size: ModelSize, *, vocab_size: int, special: dict[str, int],
                max_len: int, overrides: dict | None = None, seed: int = 0) -> PreTrainedModel:
    """A freshly initialized model of `architecture` at `size`, seeded for reproducibility."""
    config_cls, model_cls = _FAMILIES[architecture]
    config = config_cls(**_shared_config(size, vocab_size, special, max_len), **(overrides or {}))
    torch.manual_seed(seed)
    return model_cls(config)


def model_factory(size: ModelSize, *, vocab_size: int, special: dict[str, int], max_len: int,
                  seed: int = 0):
    """A ModelFactory (objectives.base) for one run: its size and vocabulary unless told otherwise."""
    def make(architecture: str, *, size: ModelSize | None = None, overrides: dict | None = None):
        return build_model(architecture, size or default, vocab_size=vocab_size, special=special,
                           max_len=max_len, overrides=overrides, seed=seed)
    default = size
    return make


def _shared_config(size: ModelSize, vocab_size: int, special: dict[str, int], max_len: int) -> dict:
    # Global attention in every layer: the same pattern for encoder and decoder, and no
    # sliding-window difference between the two families to confound a comparison.
    return dict(
        vocab_size=vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, intermediate_size=size.intermediate,
        layer_types=["full_attention"] * size.layers, max_position_embeddings=max(max_len, 512),
        pad_token_id=special["[PAD]"], eos_token_id=special["[EOS]"],
        bos_token_id=special.get("[CLS]", special["[EOS]"]),
        cls_token_id=special.get("[CLS]", special["[EOS]"]),
        sep_token_id=special.get("[SEP]", special["[EOS]"]),
        attn_implementation="sdpa", tie_word_embeddings=True,
    )


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
