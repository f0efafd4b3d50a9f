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
"""

from __future__ import annotations

import torch
import transformers
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length

from harness.evaluate.adapters import _resolve_device, left_truncate
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
class PrefixLM(TemplateLM):
    """Prefix-LM scoring of a ModernBERT decoder saved with `save_pretrained`.

    `batch_size` counts requests per forward pass.
    """

    # TemplateLM then tokenizes context + continuation together and splits at the context's
    # length, as HFLM does for the causal decoders.
    backend = "causal"

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 32,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        mode_token: str | None = None,
    ) -> None:
        super().__init__()
        self._device = _resolve_device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
        # sdpa reads the boolean prefix mask as it is built (eager attention would add it)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            pretrained, dtype=getattr(torch, dtype), attn_implementation="sdpa")
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size)
        self._max_length = max_length or resolve_max_length(self.model.config, self.tokenizer)
        self.mode = self._mode_ids(mode_token)

    def _mode_ids(self, mode_token: str | None) -> list[int]:
        if not mode_token:
            return []
        token_id = self.tokenizer.convert_tokens_to_ids(mode_token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"mode token {mode_token!r} is not in the tokenizer's vocabulary")
        return [token_id]

    @property
    def eot_token_id(self) -> int:
        # [EOS] separated documents in training, so an empty context is conditioned on it.
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Training rows carried no [CLS]/[SEP], so by default none are added here either.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        rows = [prefix_row(self.mode, context, continuation, self.max_length) for _, context, continuation in requests]
        # Longest first, so each batch holds rows of similar length and pads little.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._score_batch([rows[i] for i in batch])):
                results[i] = result
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of log P(continuation token), all argmax) per (tokens, prefix length), right-padded.

        Padding follows every row's text, where the prefix mask is causal: no scored position
        attends to it.
        """
        width = max(len(tokens) for tokens, _ in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for r, (tokens, _) in enumerate(rows):
            input_ids[r, : len(tokens)] = torch.tensor(tokens)
        prefix_lengths = torch.tensor([prefix for _, prefix in rows])
        logprobs = prefix_lm_logits(self.model, input_ids.to(self.device), prefix_lengths.to(self.device))
        logprobs = logprobs.float().log_softmax(-1).cpu()
        return [self._score_row(logprobs[r], tokens, prefix) for r, (tokens, prefix) in enumerate(rows)]

    @staticmethod
    def _score_row(logprobs: torch.Tensor, tokens: list[int], prefix: int) -> tuple[float, bool]:
        # the logits at position i predict token i + 1
        predicting = logprobs[prefix - 1 : len(tokens) - 1]
        targets = torch.tensor(tokens[prefix:])
        total = predicting.gather(-1, targets[:, None]).sum().item()
        return total, bool((predicting.argmax(-1) == targets).all())

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "harness-prefix scores (context, continuation) pairs only: a rolling (perplexity) "
            "likelihood has no prefix to read bidirectionally; use multiple-choice or loglikelihood tasks"
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "harness-prefix does not generate text; use multiple-choice or loglikelihood tasks"
        )

    def get_model_info(self) -> dict:
        """Recorded by simple_evaluate in the results' config."""
        return {"model_num_parameters": self.model.num_parameters(), "model_dtype": str(self.model.dtype)}
