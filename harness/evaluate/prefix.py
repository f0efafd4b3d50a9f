"""lm-eval model class for decoders trained with a bidirectional prefix (prefix LM, UL2).

`PrefixLM` (registered with lm-eval as "harness-prefix") reads the context as the prefix,
bidirectionally, and scores the continuation causally after it, as the model was trained: the
mask of objectives.prefix_lm. A `mode_token` model argument (UL2's "[S2S]") is put before the
context, inside the prefix. With context [a, b, c], continuation [d, e] and mode token [S2S]:

    tokens          [[S2S], a, b, c, d, e]      prefix length 4
    score           log P(d | [S2S] a b c) + log P(e | [S2S] a b c, d)
                    (read at positions 3 and 4, as the model's next-token logits)
    is_greedy       the argmax at both positions is the scored token

With a one-token prefix and no mode token the mask is causal, so the scores equal lm-eval's hf
model's; an empty context is lm-eval's prefix token ([EOS]), a one-token prefix.

A rolling (perplexity) request is scored in the sliding windows of `HarnessLM`, each window's
context read as the prefix: [EOS] (after the mode token) before the first tokens of the text,
then the tokens before each later window's continuation. The mode token takes one place of
every window.
"""

from __future__ import annotations

import torch
import transformers
from lm_eval.api.registry import register_model

from harness.evaluate.adapters import HarnessLM, left_truncate, next_token_score, sliding_windows
from harness.models.tensors import pad_right
from objectives.prefix_lm import prefix_lm_logits


def prefix_row(mode: list[int], context: list[int], continuation: list[int],
               max_length: int) -> tuple[list[int], int]:
    """(tokens, prefix length) of one request: mode + context, then the continuation, cut from
    the left to `max_length` with the mode token kept first. The prefix keeps at least one
    token, so that the first scored token has a position that predicts it.

    >>> prefix_row([9], [1, 2, 3], [4, 5], max_length=4)
    ([9, 3, 4, 5], 2)
    """
    window, scored = left_truncate(context, continuation, max_length - len(mode))
    tokens = mode + window
    return tokens, max(len(tokens) - scored, 1)


@register_model("harness-prefix")
class PrefixLM(HarnessLM):
    """Prefix-LM scoring of a ModernBERT decoder saved with `save_pretrained`.

    `batch_size` counts requests per forward pass.
    """

    name = "harness-prefix"
    scores = "(context, continuation) pairs after a bidirectional prefix"

    def __init__(self, pretrained: str, mode_token: str | None = None, **kwargs) -> None:
        super().__init__(pretrained, **kwargs)
        self.mode = [self.token_id(mode_token, "mode token")] if mode_token else []

    def load(self, pretrained: str, dtype: torch.dtype):
        # sdpa reads the boolean prefix mask as it is built (eager attention would add it)
        return transformers.AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype,
                                                                 attn_implementation="sdpa")

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        # the mode token is in every row, so a window holds one text token fewer
        return sliding_windows(tokens, self.prefix_token_id, self.max_length - len(self.mode), self.rolling_stride)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        rows = [prefix_row(self.mode, context, continuation, self.max_length) for _, context, continuation in requests]
        return self.score_in_batches(requests, rows)

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of log P(continuation token), all argmax) per (tokens, prefix length), right-padded.

        Padding follows every row's text, where the prefix mask is causal: no scored position
        attends to it.
        """
        input_ids, _ = pad_right([tokens for tokens, _ in rows], self.pad_token_id)
        prefix_lengths = torch.tensor([prefix for _, prefix in rows])
        logprobs = prefix_lm_logits(self.model, input_ids.to(self.device), prefix_lengths.to(self.device))
        logprobs = logprobs.float().log_softmax(-1).cpu()
        return [next_token_score(logprobs[r], tokens, prefix) for r, (tokens, prefix) in enumerate(rows)]
