"""lm-eval model class for an ELECTRA discriminator, registered as "harness-electra".

A discriminator has no LM head: it says, for every token of a text, how likely it is that the
token was replaced. `DiscriminatorLM` reads context + continuation in one forward pass and
scores the continuation by the log-probability that each of its tokens is original,

    score = sum over continuation tokens t of log P(original at t) = log sigmoid(-logit_t)

where logit_t is the discriminator's "replaced" logit (objectives/electra.py). A continuation
is greedy when the discriminator judges every one of its tokens original (logit < 0).

Worked example, context [a, l, i] and continuation [p, .] with replaced logits [.., -2.0, 1.0]:

    score = log sigmoid(2.0) + log sigmoid(-1.0) = -0.127 - 1.313 = -1.440;  is_greedy = False
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers
from lm_eval.api.registry import register_model

from harness.evaluate.adapters import HarnessLM, left_truncate
from harness.models.tensors import pad_right


@register_model("harness-electra")
class DiscriminatorLM(HarnessLM):
    """Replaced-token-detection scoring of a one-label token classifier saved with
    `save_pretrained`. `batch_size` counts requests (one forward row each)."""

    name = "harness-electra"
    scores = "(context, continuation) pairs with a replaced-token discriminator"

    def load(self, pretrained: str, dtype: torch.dtype):
        model = transformers.AutoModelForTokenClassification.from_pretrained(pretrained, dtype=dtype)
        if model.config.num_labels != 1:
            raise ValueError(f"{pretrained}: a discriminator has one label (the 'replaced' logit), "
                             f"this model has {model.config.num_labels}")
        return model

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise self.refuse_rolling()

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        windows = [left_truncate(context, continuation, self.max_length) for _, context, continuation in requests]
        return self.score_in_batches(requests, windows)

    @torch.no_grad()
    def _score_batch(self, windows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of log P(original), all judged original) over the last n tokens of each window."""
        input_ids, attention_mask = pad_right([tokens for tokens, _ in windows], self.pad_token_id)
        logits = self.model(input_ids=input_ids.to(self.device),
                            attention_mask=attention_mask.to(self.device)).logits[..., 0].float()
        scored = []
        for r, (tokens, n) in enumerate(windows):
            replaced = logits[r, len(tokens) - n : len(tokens)]
            scored.append((F.logsigmoid(-replaced).sum().item(), bool((replaced < 0).all())))
        return scored
