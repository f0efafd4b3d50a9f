"""Multi-token prediction (Gloeckle et al. 2024, "Better & Faster Large Language Models via
Multi-token Prediction").

A shared trunk feeds k output heads; head j predicts the token j positions ahead, and the loss
is the mean of the k heads' cross-entropies. Head 1 is the causal LM itself (the trunk with its
own unembedding); heads 2..k are each one more transformer layer on the trunk's final hidden
states, followed by the trunk's final norm and unembedding (shared, and tied to the input
embedding). Only head 1 is kept: `export_model` returns the causal LM, which lm-eval scores as
any decoder. Heads 2..k cost compute in training, and the plan counts it (harness.budget).

The batch is the causal LM's; head j's targets are the labels moved j - 1 positions left:

    block      [the, cat, sat, on, mat]
    input_ids  [the, cat, sat, on, mat]
    labels     [cat, sat, on, mat, -100]          head 1 (next token)
    head 2     [sat, on, mat, -100, -100]         (derived in `loss`, not a batch key)
    head 3     [on, mat, -100, -100, -100]
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask
from transformers.models.modernbert_decoder.modeling_modernbert_decoder import ModernBertDecoderLayer

from harness.models.tensors import IGNORE_INDEX
from objectives.base import EXPORT_DEFAULTS, Objective, cross_entropy
from objectives.clm import next_token_batch
from objectives.configs import MultiTokenConfig


def future_labels(labels: torch.Tensor, offset: int) -> torch.Tensor:
    """labels moved `offset` positions left: out[:, t] = labels[:, t + offset], IGNORE_INDEX past the end."""
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, : labels.shape[1] - offset] = labels[:, offset:]
    return out


class MultiTokenModel(torch.nn.Module):
    """A ModernBERT causal LM (trunk and head 1) plus one extra decoder layer per further head.

    forward returns the logits of every head, head 1 first.
    """

    def __init__(self, lm, k: int):
        super().__init__()
        self.lm = lm
        self.heads = torch.nn.ModuleList(self._new_layer() for _ in range(k - 1))

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        trunk = self.lm.model(input_ids=input_ids).last_hidden_state
        logits = [self._unembed(trunk)]  # exactly what self.lm(input_ids).logits computes
        if self.heads:
            extras = self._layer_inputs(trunk)
            logits += [self._unembed(self.lm.model.final_norm(layer(trunk, **extras))) for layer in self.heads]
        return tuple(logits)

    def _unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.decoder(self.lm.lm_head(hidden))

    def _layer_inputs(self, trunk: torch.Tensor) -> dict:
        """Rotary embeddings and causal mask for the extra layers, as the trunk's layers get them."""
        config = self.lm.config
        positions = torch.arange(trunk.shape[1], device=trunk.device).expand(trunk.shape[0], -1)
        # None under sdpa (its is_causal path), an additive mask under eager attention
        mask = create_causal_mask(config=config, inputs_embeds=trunk, attention_mask=None, cache=None,
                                  position_ids=positions)
        rotary = self.lm.model.rotary_emb(trunk, positions, config.layer_types[-1])
        return {"position_embeddings": rotary, "attention_mask": mask}

    def _new_layer(self) -> ModernBertDecoderLayer:
        # The trunk's last layer index: its attention type, and a pre-attention norm (layer 0
        # has none, since it reads the normed embeddings).
        layer = ModernBertDecoderLayer(self.lm.config, layer_idx=self.lm.config.num_hidden_layers - 1)
        # The model's own initialization; children first, so a module's scheme (truncated
        # normal for attention and MLP) overrides the generic one of its Linear layers.
        for module in reversed(list(layer.modules())):
            self.lm._init_weights(module)
        return layer


class MultiTokenPrediction(Objective):
    name = "mtp"
    architecture = "decoder"
    special_tokens = ()
    scoring = "loglikelihood"
    # The exported model is the next-token head (head 1): a causal likelihood of the text.
    defines_likelihood = True
    Config = MultiTokenConfig

    def transform(self, block, rng):
        return next_token_batch(block)

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"])
        heads = [cross_entropy(head, future_labels(batch["labels"], j), self.config) for j, head in enumerate(logits)]
        loss = torch.stack([head_loss for head_loss, _ in heads]).mean()
        # accuracy and predicted are head 1's: the next-token prediction the exported model makes
        return loss, {"loss": loss.detach(), **heads[0][1],
                      **{f"loss_head{j + 1}": head_loss.detach() for j, (head_loss, _) in enumerate(heads)}}

    def build_model(self, make):
        return MultiTokenModel(make("decoder", overrides=self.model_overrides()), self.config.k)

    def export_model(self, module):
        return module.lm

    def export_usage(self, seq_len):
        heads = (f" Only the next-token head is exported: the {self.config.k - 1} extra heads that predicted "
                 "tokens further ahead in training are not saved.")
        return super().export_usage(seq_len) | {"use": EXPORT_DEFAULTS["decoder"]["use"] + heads}
