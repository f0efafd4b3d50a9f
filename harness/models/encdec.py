"""An encoder-decoder built from ModernBERT's own layers, so that it has the block of the others.

The encoder is a stack of `ModernBertEncoderLayer` (bidirectional), exactly the layer the encoder
objectives train; the decoder is a stack of `ModernBertDecoderLayer` (causal), the layer the
decoder objectives train, with one sublayer added to each: pre-norm cross-attention over the
encoder's output, between self-attention and the MLP, as in T5. The two stacks share the token
embeddings, which are tied to the output projection.

A size's `num_hidden_layers` L is split between the stacks, ceil(L/2) encoder layers and floor(L/2)
decoder layers, so an encoder-decoder has the depth of the other families at its size; its
cross-attention adds parameters (4 h^2 per decoder layer) that the others do not have.

    config = EncoderDecoderConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, ...)
    model = ModernEncoderDecoder(config)                 # 1 encoder + 1 decoder layer
    out = model(input_ids=x, decoder_input_ids=y, labels=z)   # Seq2SeqLMOutput: logits (B, S, V), loss

Importing this module registers the family with transformers' AutoConfig and
AutoModelForSeq2SeqLM, so a saved model loads through the Auto classes in any process that has
imported it. Elsewhere, without this project, a saved model loads as transformers' custom
architectures do: `save_pretrained` copies this file and tensors.py (its one relative import)
into the model folder and names the classes in config.json's `auto_map`
(`register_for_auto_class`), so that

    AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)

runs them. This file therefore imports only torch, transformers and `.tensors`. The model
generates (GenerationMixin) without a cache: each step runs the decoder over every token so far.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, AutoModelForSeq2SeqLM, GenerationMixin, ModernBertConfig,
                          ModernBertDecoderConfig, PreTrainedConfig, PreTrainedModel)
from transformers import initialization as init
from transformers.masking_utils import (create_bidirectional_mask, create_bidirectional_sliding_window_mask,
                                        create_causal_mask, create_sliding_window_causal_mask)
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.modernbert.modeling_modernbert import (ModernBertAttention, ModernBertEncoderLayer,
                                                                ModernBertMLP, ModernBertRotaryEmbedding)
from transformers.models.modernbert_decoder.modeling_modernbert_decoder import (
    ModernBertDecoderAttention, ModernBertDecoderLayer, ModernBertDecoderMLP, ModernBertDecoderPredictionHead,
    ModernBertDecoderRotaryEmbedding)

# Relative, so that transformers copies tensors.py beside this file into a saved model's folder.
from .tensors import IGNORE_INDEX, shift_right


def split_layers(num_hidden_layers: int) -> tuple[int, int]:
    """(encoder layers, decoder layers): ceil(L/2) and floor(L/2)."""
    return math.ceil(num_hidden_layers / 2), num_hidden_layers // 2


class EncoderDecoderConfig(PreTrainedConfig):
    """The fields harness.models.families passes to every family, plus any ModernBERT option
    (norm_eps, dropouts, ...), which both stacks receive."""

    model_type = "harness-encdec"

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    max_position_embeddings: int = 512
    layer_types: list[str] | None = None
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    pad_token_id: int | None = 0
    eos_token_id: int | None = 2
    bos_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = True
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        if self.num_hidden_layers < 2:
            raise ValueError(f"an encoder-decoder needs num_hidden_layers >= 2, got {self.num_hidden_layers}")
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.pad_token_id  # T5 starts the decoder with its pad token
        # as harness.models.families chooses them
        for name in ("bos_token_id", "cls_token_id", "sep_token_id"):
            if getattr(self, name) is None:
                setattr(self, name, self.eos_token_id)
        super().__post_init__(**kwargs)

    def encoder_config(self) -> ModernBertConfig:
        """The encoder stack's config: the first ceil(L/2) layer types."""
        n = split_layers(self.num_hidden_layers)[0]
        return self._stack_config(ModernBertConfig, self.layer_types[:n])

    def decoder_config(self) -> ModernBertDecoderConfig:
        """The decoder stack's config: the last floor(L/2) layer types."""
        n = split_layers(self.num_hidden_layers)[0]
        return self._stack_config(ModernBertDecoderConfig, self.layer_types[n:])

    def _stack_config(self, config_cls, layer_types: list[str]):
        # Every option the stack's own config class knows is passed on, so each stack gets the
        # defaults (RoPE theta, norms, biases) of the single-stack family it comes from.
        own = {f.name for f in dataclasses.fields(config_cls)} - {f.name for f in dataclasses.fields(PreTrainedConfig)}
        values = {k: v for k, v in self.to_dict().items() if k in own and v is not None}
        return config_cls(**values | {"num_hidden_layers": len(layer_types), "layer_types": list(layer_types)},
                          attn_implementation=self._attn_implementation or "sdpa")


class CrossAttention(nn.Module):
    """Multi-head attention from decoder positions to the encoder's output, with torch's SDPA.

    No rotary embedding: decoder and encoder positions are not on one axis (T5's cross-attention
    has no position information either).
    """

    def __init__(self, config: ModernBertDecoderConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        width, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(width, width, bias=bias)
        self.k_proj = nn.Linear(width, width, bias=bias)
        self.v_proj = nn.Linear(width, width, bias=bias)
        self.Wo = nn.Linear(width, width, bias=bias)
        self.out_drop = nn.Dropout(config.attention_dropout)

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """`memory_mask`: (B, 1, 1, T) booleans, True where an encoder position may be read."""
        q, k, v = self._heads(self.q_proj(hidden)), self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_drop(self.Wo(out.transpose(1, 2).flatten(2)))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)


class CrossAttentionDecoderLayer(ModernBertDecoderLayer):
    """ModernBERT's decoder layer with a pre-norm, residual cross-attention sublayer added."""

    def __init__(self, config: ModernBertDecoderConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.cross_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.cross_attn = CrossAttention(config)

    def forward(self, hidden_states, memory, memory_mask, position_embeddings=None, attention_mask=None, **kwargs):
        attn, _ = self.attn(self.attn_norm(hidden_states), position_embeddings=position_embeddings,
                            attention_mask=attention_mask, **kwargs)
        hidden_states = hidden_states + attn
        hidden_states = hidden_states + self.cross_attn(self.cross_norm(hidden_states), memory, memory_mask)
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


# The attention mask of each layer type, built as ModernBERT's own models build it.
_ENCODER_MASKS = {"full_attention": create_bidirectional_mask,
                  "sliding_attention": create_bidirectional_sliding_window_mask}
_DECODER_MASKS = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}


class _Stack(nn.Module):
    """Embedding norm, layers, final norm and rotary embedding of one stack; the token embedding
    itself is shared and lives in the model. Each layer gets the mask of its layer type."""

    def __init__(self, config, layers: list[nn.Module], rotary: nn.Module):
        super().__init__()
        self.config = config
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.drop = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.rotary_emb = rotary

    def _start(self, embeds: torch.Tensor):
        hidden = self.drop(self.embed_norm(embeds))
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        rope = {t: self.rotary_emb(hidden, positions, t) for t in set(self.config.layer_types)}
        return hidden, positions, rope


class EncoderStack(_Stack):
    # what `generate` hands the encoder (through the model's `get_encoder`): the model's token ids
    main_input_name = "input_ids"

    def __init__(self, config: ModernBertConfig):
        layers = [ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers)]
        super().__init__(config, layers, ModernBertRotaryEmbedding(config))

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        hidden, _, rope = self._start(embeds)
        kw = {"config": self.config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        masks = {t: _ENCODER_MASKS[t](**kw) for t in rope}
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=masks[layer.attention_type],
                           position_embeddings=rope[layer.attention_type])
        return self.final_norm(hidden)


class DecoderStack(_Stack):
    def __init__(self, config: ModernBertDecoderConfig):
        layers = [CrossAttentionDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        super().__init__(config, layers, ModernBertDecoderRotaryEmbedding(config))

    def forward(self, embeds, memory, memory_mask, attention_mask=None) -> torch.Tensor:
        hidden, positions, rope = self._start(embeds)
        kw = {"config": self.config, "inputs_embeds": hidden, "attention_mask": attention_mask,
              "cache": None, "position_ids": positions}
        masks = {t: _DECODER_MASKS[t](**kw) for t in rope}
        for layer, kind in zip(self.layers, self.config.layer_types, strict=True):
            hidden = layer(hidden, memory, memory_mask, position_embeddings=rope[kind], attention_mask=masks[kind])
        return self.final_norm(hidden)


class TokenEncoder:
    """The model's encoder as `generate` calls it: `forward(input_ids, attention_mask)` returning a
    BaseModelOutput. Not a module: it holds the model, whose `encoder` stack reads embeddings."""

    def __init__(self, model: ModernEncoderDecoder):
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.model.encode(input_ids, attention_mask))

    __call__ = forward


class ModernEncoderDecoder(PreTrainedModel, GenerationMixin):
    """Shared embeddings, encoder stack, decoder stack with cross-attention, tied LM head."""

    config: EncoderDecoderConfig
    config_class = EncoderDecoderConfig
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ModernBertEncoderLayer", "CrossAttentionDecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "shared.weight"}

    def __init__(self, config: EncoderDecoderConfig):
        super().__init__(config)
        encoder_config, decoder_config = config.encoder_config(), config.decoder_config()
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.encoder = EncoderStack(encoder_config)
        self.decoder = DecoderStack(decoder_config)
        # The output head of ModernBERT's causal LM: dense + activation + norm, then the projection.
        self.head = ModernBertDecoderPredictionHead(decoder_config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=decoder_config.decoder_bias)
        self.post_init()
        self.generation_config.use_cache = False  # the decoder keeps no cache (see `forward`)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_encoder(self, modality: str | None = None) -> TokenEncoder:
        """What `generate` runs once on the prompt: token ids in, BaseModelOutput out."""
        return TokenEncoder(self)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output (B, T, h); `attention_mask` is 1 at positions to keep."""
        return self.encoder(self.shared(input_ids), attention_mask)

    def forward(self, input_ids: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, encoder_outputs: BaseModelOutput | None = None,
                use_cache: bool | None = None, cache=None, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool | None = None) -> Seq2SeqLMOutput:
        """Logits (B, S, V) at each decoder position; with `labels` (aligned with the decoder's
        input, IGNORE_INDEX where unlabelled), their mean cross-entropy. Without
        `decoder_input_ids`, the labels shifted right are the decoder's input. `encoder_outputs`
        (what `generate` passes after its one encoder pass) stands for encoding `input_ids`.

        The other arguments are those `generate` may pass. Every call reads the whole decoder
        input: there is no cache, and `use_cache=True` (or a `cache`) is refused rather than
        ignored, as are attentions and hidden states, which are not returned. The output is
        always a ModelOutput."""
        if use_cache or cache is not None or output_attentions or output_hidden_states:
            raise ValueError("ModernEncoderDecoder keeps no cache and returns logits only: use_cache, "
                             "output_attentions and output_hidden_states must be False (generate's defaults here)")
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("ModernEncoderDecoder needs decoder_input_ids or labels")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        memory = encoder_outputs[0] if encoder_outputs is not None else self.encode(input_ids, attention_mask)
        memory_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        hidden = self.decoder(self.shared(decoder_input_ids), memory, memory_mask, decoder_attention_mask)
        logits = self.lm_head(self.head(hidden))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=memory)

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # transformers treats a model defined outside its package as remote code and then skips
        # modules with no parameters of their own: the MLP and attention modules whose output
        # projections ModernBERT scales. Every init below goes through transformers.initialization,
        # which leaves loaded tensors alone, so the in-library behaviour is safe here.
        super()._initialize_weights(module, is_custom_code=False)

    def _init_weights(self, module: nn.Module) -> None:
        """ModernBERT's initialization: truncated normals, input projections at
        initializer_range and output projections scaled down by sqrt(2 L)."""
        if module is self.lm_head:  # tied to the embedding, which is initialized on its own
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)
        std_in = self.config.initializer_range
        std_out = std_in / math.sqrt(2.0 * self.config.num_hidden_layers)
        if isinstance(module, nn.Embedding):
            self._truncated_normal(module, std_in)
        for name, std in _projections(module, std_in, std_out):
            self._truncated_normal(getattr(module, name), std)
        if isinstance(module, (ModernBertRotaryEmbedding, ModernBertDecoderRotaryEmbedding)):
            _reset_rotary(module)

    def _truncated_normal(self, layer: nn.Module, std: float) -> None:
        cutoff = self.config.initializer_cutoff_factor or 3.0
        init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
        if getattr(layer, "bias", None) is not None:
            init.zeros_(layer.bias)


def _projections(module: nn.Module, std_in: float, std_out: float) -> list[tuple[str, float]]:
    """(submodule name, std) of each projection ModernBERT initializes specially in `module`."""
    if isinstance(module, (ModernBertMLP, ModernBertDecoderMLP)):
        return [("Wi", std_in), ("Wo", std_out)]
    if isinstance(module, ModernBertAttention):
        return [("Wqkv", std_in), ("Wo", std_out)]
    if isinstance(module, (ModernBertDecoderAttention, CrossAttention)):
        return [("q_proj", std_in), ("k_proj", std_in), ("v_proj", std_in), ("Wo", std_out)]
    if isinstance(module, ModernBertDecoderPredictionHead):
        return [("dense", std_out)]
    return []


def _reset_rotary(module: nn.Module) -> None:
    # Rotary frequencies are non-persistent buffers: recomputed, not loaded, when a model loads.
    for layer_type in module.layer_types:
        rope_type = module.rope_type[layer_type]
        compute = module.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
        inv_freq, _ = compute(module.config, layer_type=layer_type)
        init.copy_(getattr(module, f"{layer_type}_inv_freq"), inv_freq)
        init.copy_(getattr(module, f"{layer_type}_original_inv_freq"), inv_freq)


# Where this module is imported (the harness), the Auto classes know the family ...
AutoConfig.register(EncoderDecoderConfig.model_type, EncoderDecoderConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(EncoderDecoderConfig, ModernEncoderDecoder, exist_ok=True)
# ... and everywhere else, a saved model carries this code and an `auto_map` naming these classes.
EncoderDecoderConfig.register_for_auto_class("AutoConfig")
ModernEncoderDecoder.register_for_auto_class("AutoModelForSeq2SeqLM")
