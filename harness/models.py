"""Model families and named sizes, built from transformers classes and initialized from scratch.

Every objective at a given size gets the same transformer block, width and depth: the
ModernBERT encoder and the ModernBERT decoder in transformers share their layer, so the two
differ only in the attention pattern (bidirectional or causal) and count the same parameters.
Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import (ModernBertConfig, ModernBertDecoderConfig,
                          ModernBertDecoderForCausalLM, ModernBertForMaskedLM, PreTrainedModel)

from harness.errors import UserError, did_you_mean


class ModelSize(BaseModel):
    """Width and depth of the shared transformer block."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden: int = Field(gt=0, description="model width")
    layers: int = Field(gt=0, description="number of transformer layers")
    heads: int = Field(gt=0, description="attention heads per layer")
    intermediate: int = Field(gt=0, description="width of the MLP's hidden layer")


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(hidden=64, layers=2, heads=2, intermediate=128),
    "mini": ModelSize(hidden=128, layers=4, heads=4, intermediate=256),
    "small": ModelSize(hidden=256, layers=6, heads=4, intermediate=512),
    "base": ModelSize(hidden=768, layers=12, heads=12, intermediate=1152),
    "large": ModelSize(hidden=1024, layers=24, heads=16, intermediate=2624),
}

_FAMILIES = {
    "decoder": (ModernBertDecoderConfig, ModernBertDecoderForCausalLM),
    "encoder": (ModernBertConfig, ModernBertForMaskedLM),
}


def size_named(name: str) -> ModelSize:
    if name not in SIZES:
        raise UserError(f"unknown model size '{name}'{did_you_mean(name, SIZES)}; "
                        f"known: {', '.join(SIZES)}")
    return SIZES[name]


def build_model(architecture: str, size: ModelSize, *, vocab_size: int, special: dict[str, int],
                max_len: int, overrides: dict | None = None, seed: int = 0) -> PreTrainedModel:
    """A freshly initialized model of `architecture` at `size`, seeded for reproducibility."""
    config_cls, model_cls = _family(architecture)
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


def _family(architecture: str):
    if architecture == "encoder-decoder":  # the same block in two stacks, see harness.encdec
        from harness.encdec import EncoderDecoderConfig, ModernEncoderDecoder
        return EncoderDecoderConfig, ModernEncoderDecoder
    return _FAMILIES[architecture]


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


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, longest), padding after each sequence: the batches
    of fine-tuning and of the lm-eval adapters.

    >>> pad_right([[5, 6, 7], [8]], pad_id=0)
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([[1, 1, 1],
            [1, 0, 0]]))
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(sequences):
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask
