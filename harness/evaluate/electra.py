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
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length

from harness.evaluate.adapters import _resolve_device, left_truncate


@register_model("harness-electra")
class DiscriminatorLM(TemplateLM):
    """Replaced-token-detection scoring of a one-label token classifier saved with
    `save_pretrained`. `batch_size` counts requests (one forward row each)."""

    # As in harness-pll: TemplateLM tokenizes context + continuation together and splits at the
    # context's length, as HFLM does for the decoders; nothing here attends causally.
    backend = "causal"

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 32,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        self._device = _resolve_device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
        self.model = transformers.AutoModelForTokenClassification.from_pretrained(
            pretrained, dtype=getattr(torch, dtype))
        if self.model.config.num_labels != 1:
            raise ValueError(f"{pretrained}: a discriminator has one label (the 'replaced' logit), "
                             f"this model has {self.model.config.num_labels}")
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size)
        self._max_length = max_length or resolve_max_length(self.model.config, self.tokenizer)

    @property
    def eot_token_id(self) -> int:
        # [EOS] separated documents in the training blocks: an empty context looks like it.
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Training blocks carried no [CLS]/[SEP], so by default none are added here either.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        windows = [left_truncate(context, continuation, self.max_length) for _, context, continuation in requests]
        # Longest first, so each batch holds rows of similar length and pads little.
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(windows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._score_batch([windows[i] for i in batch])):
                results[i] = result
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @torch.no_grad()
    def _score_batch(self, windows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of log P(original), all judged original) over the last n tokens of each window."""
        width = max(len(tokens) for tokens, _ in windows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for r, (tokens, _) in enumerate(windows):
            input_ids[r, : len(tokens)] = torch.tensor(tokens)
            attention_mask[r, : len(tokens)] = 1
        logits = self.model(input_ids=input_ids.to(self.device),
                            attention_mask=attention_mask.to(self.device)).logits[..., 0].float()
        scored = []
        for r, (tokens, n) in enumerate(windows):
            replaced = logits[r, len(tokens) - n : len(tokens)]
            scored.append((F.logsigmoid(-replaced).sum().item(), bool((replaced < 0).all())))
        return scored

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "harness-electra scores (context, continuation) pairs only: a discriminator defines no "
            "likelihood of a text; use multiple-choice or loglikelihood tasks"
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "harness-electra cannot generate text: a discriminator only judges tokens original or "
            "replaced; use multiple-choice or loglikelihood tasks"
        )

    def get_model_info(self) -> dict:
        """Recorded by simple_evaluate in the results' config."""
        return {"model_num_parameters": self.model.num_parameters(), "model_dtype": str(self.model.dtype)}
