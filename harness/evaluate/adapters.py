"""lm-eval model classes for the architectures the harness trains: what they share, and the
causal-decoder and masked-LM ones.

`HarnessLM` is the shared base: it loads a model saved with `save_pretrained` (safetensors
weights only: a folder holding pickled ones is refused) and its tokenizer, tokenizes text as the
training text was, batches (context, continuation) scoring, and turns that scoring into a
rolling log-likelihood of a whole text, which lm-eval's perplexity tasks (bits per byte) ask for. A text longer than the context is scored in sliding windows
(`sliding_windows`): each token is scored exactly once, after as much of the text before it as
the window holds. With 10 tokens, a window of 6 and a stride of 3:

    ([EOS], [t1 t2 t3 t4 t5])      the first window starts the text after the document separator
    ([t3 t4 t5], [t6 t7 t8])       each later one scores `stride` new tokens after the ones before
    ([t5 t6 t7 t8], [t9 t10])
    log P(text) = the sum of the three continuations' scores

`CausalLM` ("harness-causal") scores a causal decoder exactly as lm-eval's own `hf` model does,
and rolls these windows where HFLM rolls disjoint ones.

A masked-LM encoder has no left-to-right likelihood, so `PseudoLogLikelihoodLM` (registered with
lm-eval as "harness-pll") scores a continuation by its pseudo-log-likelihood (Salazar et al.
2020, "Masked Language Model Scoring"): mask each continuation token in turn, read log P(original
token) at the mask, and sum. The context stays visible (unmasked) in every copy. That is no
likelihood of the text, so it has no rolling score.

Worked example, context "alice lives in" and continuation " paris ." as tokens [a, l, i] + [p, .]:

    [a, l, i, MASK, .]  -> log P(p)
    [a, l, i, p, MASK]  -> log P(.)
    score = log P(p) + log P(.);  is_greedy = both masks' argmax are the original tokens
"""

from __future__ import annotations

import itertools

import torch
import transformers
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length

from harness import runtime
from harness.errors import UserError
from harness.evaluate.weights import safetensors_weights
from harness.models.tensors import pad_right


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


def sliding_windows(tokens: list[int], prefix_token: int, max_length: int, stride: int,
                    first: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) windows whose continuations, in order, are `tokens`.

    The first window scores the first `first` tokens (default max_length - 1) after
    [prefix_token]. Each later one scores the next `stride` tokens (fewer at the end) after the
    max_length - len(continuation) tokens before them, so that no window is longer than
    max_length and every token after the first window sees at least max_length - stride
    tokens of the text before it.

    >>> for window in sliding_windows([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0, max_length=6, stride=3):
    ...     print(window)
    ([0], [1, 2, 3, 4, 5])
    ([3, 4, 5], [6, 7, 8])
    ([5, 6, 7, 8], [9, 10])
    """
    first = max_length - 1 if first is None else first
    if not (1 <= stride < max_length and 1 <= first < max_length):
        raise ValueError(f"a window of {max_length} tokens scores 1 to {max_length - 1} at a time; "
                         f"got stride {stride} and first {first}")
    windows = [([prefix_token], tokens[:first])] if tokens else []
    for start in range(first, len(tokens), stride):
        continuation = tokens[start : start + stride]
        windows.append((tokens[max(start + len(continuation) - max_length, 0) : start], continuation))
    return windows


def next_token_score(logprobs: torch.Tensor, tokens: list[int], start: int) -> tuple[float, bool]:
    """(sum of log P(tokens[i]) for i >= start, all of them the argmax), where `logprobs` are a
    decoder's next-token log-probabilities over `tokens` (row i predicts token i + 1)."""
    predicting = logprobs[start - 1 : len(tokens) - 1]
    targets = torch.tensor(tokens[start:])
    total = predicting.gather(-1, targets[:, None]).sum().item()
    return total, bool((predicting.argmax(-1) == targets).all())


class HarnessLM(TemplateLM):
    """What the harness's lm-eval models share: a model saved with `save_pretrained` and its
    tokenizer, text tokenized as the training text was, (context, continuation) scoring, and the
    rolling log-likelihood of a text built from it in sliding windows.

    A subclass names itself (`name`), says what it scores (`scores`), loads its model (`load`)
    and implements `_loglikelihood_tokens`; one whose rows hold more than the window (a mode
    token, say) narrows `rolling_windows`. `rolling_stride` is how many new tokens each window
    after the first scores (default half the window).
    """

    # Backend "causal" makes TemplateLM tokenize context + continuation together and split at the
    # context's length, so the space between them is handled exactly as HFLM handles it for the
    # decoders (whatever the model's attention pattern).
    backend = "causal"
    name = "harness"
    scores = "(context, continuation) pairs"

    def __init__(self, pretrained: str, batch_size: int | str = 32, device: str | None = None,
                 dtype: str = "float32", max_length: int | None = None,
                 rolling_stride: int | None = None) -> None:
        super().__init__()
        safetensors_weights(pretrained)  # before anything reads the folder: no pickled weights
        self._device = runtime.device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
        self.model = self.load(pretrained, getattr(torch, dtype))
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size)
        self._max_length = max_length or resolve_max_length(self.model.config, self.tokenizer)
        self.rolling_stride = self._max_length // 2 if rolling_stride is None else int(rolling_stride)
        if not 1 <= self.rolling_stride < self._max_length:
            raise UserError(f"{self.rolling_stride}: expected 1 to {self._max_length - 1} tokens, fewer than "
                            f"the window of {self._max_length}", where=f"{self.name} model argument rolling_stride")

    def load(self, pretrained: str, dtype: torch.dtype):
        raise NotImplementedError

    def token_id(self, token: str, what: str) -> int:
        """The id of a special token the model was trained with; an error if the tokenizer lacks it."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {what} {token!r}")
        return token_id

    def batched(self, rows: list) -> list[tuple[float, bool]]:
        """`self._score_batch` over `rows` (each row's first item the tokens that set its length),
        `batch_size` rows at a time, longest first so that each batch pads little; results in
        the order of `rows`."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, result in zip(batch, self._score_batch([rows[i] for i in batch])):
                results[i] = result
        return results

    def score_in_batches(self, requests, rows: list) -> list[tuple[float, bool]]:
        """`batched` scores of `rows`, one per request, also written to lm-eval's cache."""
        results = self.batched(rows)
        for (key, _, _), result in zip(requests, results):
            if key is not None:  # a rolling window has no key: its text's total is cached instead
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @property
    def eot_token_id(self) -> int:
        # [EOS] separated documents in the packed training blocks, so it is what an empty
        # context looks like to the model (TemplateLM uses it as the prefix then).
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        """What pads a batch's shorter rows (no scored position reads it)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Training blocks carried no [CLS]/[SEP], so by default none are added here either.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """The (context, continuation) windows that score a whole text, each one request."""
        return sliding_windows(tokens, self.prefix_token_id, self.max_length, self.rolling_stride)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log P(text) of each request: the sum of its windows' scores. The windows of every
        text are scored together, so that batches fill across texts."""
        texts = [request.args[0] for request in requests]
        windows = [self.rolling_windows(self.tok_encode(text)) for text in texts]
        rows = [(None, context, continuation) for text_windows in windows for context, continuation in text_windows]
        scores = iter(self._loglikelihood_tokens(rows, disable_tqdm=disable_tqdm))
        totals = []
        for text, text_windows in zip(texts, windows):
            totals.append(sum(score for score, _ in itertools.islice(scores, len(text_windows))))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), totals[-1])
        return totals

    def refuse_rolling(self) -> NotImplementedError:
        """The error of an adapter whose scores are no likelihood of a text."""
        return NotImplementedError(f"{self.name} scores {self.scores}: it defines no rolling (perplexity) "
                                   "likelihood; use multiple-choice or loglikelihood tasks")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(f"{self.name} scores {self.scores} and does not generate text; "
                                  "use multiple-choice or loglikelihood tasks")

    def get_model_info(self) -> dict:
        """Recorded by simple_evaluate in the results' config."""
        return {"model_num_parameters": self.model.num_parameters(), "model_dtype": str(self.model.dtype)}


def causal_row(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """(tokens, how many of the last are scored) of one request, as lm-eval's HFLM cuts it: the
    last max_length + 1 tokens, of which the model reads all but the last. At least the first
    kept token is context, so that every scored token has a position that predicts it.

    >>> causal_row([1, 2, 3], [4, 5], max_length=3)
    ([2, 3, 4, 5], 2)
    """
    tokens, scored = left_truncate(context, continuation, max_length + 1)
    return tokens, min(scored, len(tokens) - 1)


@register_model("harness-causal")
class CausalLM(HarnessLM):
    """Next-token log-likelihood of a causal decoder (CLM, MTP's next-token head) saved with
    `save_pretrained`, scored exactly as lm-eval's `hf` model (HFLM) scores it.

    It exists for the rolling likelihood: HFLM scores a long text in disjoint windows, the first
    token of each after one token of context, while this class rolls the sliding windows of
    `HarnessLM`, as the other architectures' classes do. With context [a, l, i], continuation
    [p, .] and max_length 3:

        kept       [l, i, p, .]                       (the last max_length + 1 tokens)
        input      [l, i, p]
        score      log P(p | l i) + log P(. | l i p)  (the logits at input positions 1 and 2)
        is_greedy  both argmaxes are the scored tokens

    `batch_size` counts requests per forward pass.
    """

    name = "harness-causal"
    scores = "(context, continuation) pairs by next-token log-likelihood"

    def load(self, pretrained: str, dtype: torch.dtype):
        return transformers.AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        rows = [causal_row(context, continuation, self.max_length) for _, context, continuation in requests]
        return self.score_in_batches(requests, rows)

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """One forward over every row's tokens but the last, right-padded as HFLM pads (the mask is
        causal, so no scored position reads the padding)."""
        input_ids, _ = pad_right([tokens[:-1] for tokens, _ in rows], self.pad_token_id)
        logprobs = self.model(input_ids=input_ids.to(self.device)).logits.float().log_softmax(-1).cpu()
        return [next_token_score(logprobs[r], tokens, len(tokens) - n) for r, (tokens, n) in enumerate(rows)]


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

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise self.refuse_rolling()

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        windows = [left_truncate(context, continuation, self.max_length) for _, context, continuation in requests]
        # One masked copy per scored token, as (request index, tokens, position of the mask).
        copies = [(r, tokens, p) for r, (tokens, n) in enumerate(windows) for p in range(len(tokens) - n, len(tokens))]
        totals, greedy = [0.0] * len(requests), [True] * len(requests)
        for (r, _, _), (logprob, is_greedy) in zip(copies, self.batched([c[1:] for c in copies])):
            totals[r] += logprob
            greedy[r] = greedy[r] and is_greedy
        results = list(zip(totals, greedy))
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """One encoder forward over masked copies of (tokens, position), right-padded."""
        input_ids, attention_mask = pad_right(
            [masked_copy(tokens, position, self.tokenizer.mask_token_id) for tokens, position in rows], self.pad_token_id)
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        logits = self.model(**inputs).logits
        index = torch.arange(len(rows), device=self.device)
        positions = torch.tensor([position for _, position in rows], device=self.device)
        targets = torch.tensor([tokens[position] for tokens, position in rows], device=self.device)
        logprobs = logits[index, positions].float().log_softmax(-1)
        return list(zip(logprobs[index, targets].tolist(), (logprobs.argmax(-1) == targets).tolist()))
