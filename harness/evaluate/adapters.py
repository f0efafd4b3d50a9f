"""lm-eval model classes for the architectures the harness trains.

Causal decoders need nothing here: lm-eval's own `hf` model (HFLM) scores them. A masked-LM
encoder has no left-to-right likelihood, so `PseudoLogLikelihoodLM` (registered with lm-eval as
"harness-pll") scores a continuation by its pseudo-log-likelihood (Salazar et al. 2020, "Masked
Language Model Scoring"): mask each continuation token in turn, read log P(original token) at
the mask, and sum. The context stays visible (unmasked) in every copy.

Worked example, context "alice lives in" and continuation " paris ." as tokens [a, l, i] + [p, .]:

    [a, l, i, MASK, .]  -> log P(p)
    [a, l, i, p, MASK]  -> log P(.)
    score = log P(p) + log P(.);  is_greedy = both masks' argmax are the original tokens
"""

from __future__ import annotations

import torch
import transformers
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length


def left_truncate(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """Context + continuation cut from the left to `max_length` tokens, and how many of the last
    tokens are continuation (all of it unless the continuation alone is longer than the window).

    >>> left_truncate([1, 2, 3], [4, 5], max_length=3)
    ([3, 4, 5], 2)
    """
    tokens = (context + continuation)[-max_length:]
    return tokens, min(len(continuation), len(tokens))


def masked_copy(tokens: list[int], position: int, mask_id: int) -> list[int]:
    """`tokens` with the token at `position` replaced by the mask token.

    >>> masked_copy([5, 6, 7], 1, mask_id=3)
    [5, 3, 7]
    """
    return tokens[:position] + [mask_id] + tokens[position + 1 :]


def _resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class HarnessLM(TemplateLM):
    """What the harness's lm-eval models share: a model saved with `save_pretrained` and its
    tokenizer, text tokenized as the training text was, and (context, continuation) scoring only.

    A subclass names itself (`name`), says what it scores (`scores`), loads its model (`load`)
    and implements `_loglikelihood_tokens`.
    """

    # Backend "causal" makes TemplateLM tokenize context + continuation together and split at the
    # context's length, so the space between them is handled exactly as HFLM handles it for the
    # decoders (whatever the model's attention pattern).
    backend = "causal"
    name = "harness"
    scores = "(context, continuation) pairs"

    def __init__(self, pretrained: str, batch_size: int | str = 32, device: str | None = None,
                 dtype: str = "float32", max_length: int | None = None) -> None:
        super().__init__()
        self._device = _resolve_device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
        self.model = self.load(pretrained, getattr(torch, dtype))
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size)
        self._max_length = max_length or resolve_max_length(self.model.config, self.tokenizer)

    def load(self, pretrained: str, dtype: torch.dtype):
        raise NotImplementedError

    def token_id(self, token: str, what: str) -> int:
        """The id of a special token the model was trained with; an error if the tokenizer lacks it."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {what} {token!r}")
        return token_id

    def score_in_batches(self, requests, rows: list) -> list[tuple[float, bool]]:
        """`self._score_batch` over `rows` (one per request, its first item the tokens that set
        its length), longest first so that each batch pads little; results in request order,
        and in lm-eval's cache."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._score_batch([rows[i] for i in batch])):
                results[i] = result
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @property
    def eot_token_id(self) -> int:
        # [EOS] separated documents in the packed training blocks, so it is what an empty
        # context looks like to the model (TemplateLM uses it as the prefix then).
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Training blocks carried no [CLS]/[SEP], so by default none are added here either.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(f"{self.name} scores {self.scores}: it defines no rolling (perplexity) "
                                  "likelihood here; use multiple-choice or loglikelihood tasks")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(f"{self.name} scores {self.scores} and does not generate text; "
                                  "use multiple-choice or loglikelihood tasks")

    def get_model_info(self) -> dict:
        """Recorded by simple_evaluate in the results' config."""
        return {"model_num_parameters": self.model.num_parameters(), "model_dtype": str(self.model.dtype)}


@register_model("harness-pll")
class PseudoLogLikelihoodLM(HarnessLM):
    """Pseudo-log-likelihood scoring of a masked-LM encoder saved with `save_pretrained`.

    `batch_size` counts masked copies (encoder forward rows), gathered across requests.
    """

    name = "harness-pll"
    scores = "(context, continuation) pairs by pseudo-log-likelihood (a masked LM)"

    def load(self, pretrained: str, dtype: torch.dtype):
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"{pretrained}: the tokenizer has no mask token; pseudo-log-likelihood needs one")
        return transformers.AutoModelForMaskedLM.from_pretrained(pretrained, dtype=dtype)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        windows = [left_truncate(context, continuation, self.max_length) for _, context, continuation in requests]
        # One masked copy per scored token, as (request index, tokens, position of the mask).
        copies = [(r, tokens, p) for r, (tokens, n) in enumerate(windows) for p in range(len(tokens) - n, len(tokens))]
        totals, greedy = [0.0] * len(requests), [True] * len(requests)
        for (r, _, _), (logprob, is_greedy) in zip(copies, self._score_copies([c[1:] for c in copies])):
            totals[r] += logprob
            greedy[r] = greedy[r] and is_greedy
        results = list(zip(totals, greedy))
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def _score_copies(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """(log P(original), argmax == original) for each (tokens, masked position), batched."""
        # Longest first, so each batch holds copies of similar length and pads little.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        scored: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._score_batch([rows[i] for i in batch])):
                scored[i] = result
        return scored

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """One encoder forward over masked copies of (tokens, position), right-padded."""
        width = max(len(tokens) for tokens, _ in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for r, (tokens, position) in enumerate(rows):
            input_ids[r, : len(tokens)] = torch.tensor(masked_copy(tokens, position, self.tokenizer.mask_token_id))
            attention_mask[r, : len(tokens)] = 1
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        logits = self.model(**inputs).logits
        index = torch.arange(len(rows), device=self.device)
        positions = torch.tensor([position for _, position in rows], device=self.device)
        targets = torch.tensor([tokens[position] for tokens, position in rows], device=self.device)
        logprobs = logits[index, positions].float().log_softmax(-1)
        return list(zip(logprobs[index, targets].tolist(), (logprobs.argmax(-1) == targets).tolist()))
