"""lm-eval model class for the encoder-decoder (harness.encdec) trained by span corruption.

`EncoderDecoderLM` (registered with lm-eval as "harness-seq2seq") scores a continuation as T5
scores zero-shot: the context goes to the encoder followed by the first sentinel, as if the
continuation were a span that had been cut out, and the decoder, after that sentinel, gives the
log-probability of each continuation token. The encoder's input ends in [EOS], as every
training input did.

Worked example, context "alice lives in" and continuation " paris ." as tokens [a, l, i] + [p, .]:

    encoder input   [a, l, i, <extra_id_0>, [EOS]]
    decoder input   [[PAD], <extra_id_0>, p]          ([PAD] starts the decoder, as in training)
    targets         [<extra_id_0>, p, .]              scored: log P(p) + log P(.)
    is_greedy       the argmax at both scored positions is the target
"""

from __future__ import annotations

import torch
import transformers
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length

import harness.encdec  # noqa: F401  registers the family with transformers' Auto classes


def seq2seq_rows(context: list[int], continuation: list[int], *, sentinel: int, eos: int, start: int,
                 max_length: int) -> tuple[list[int], list[int], list[int]]:
    """(encoder input, decoder input, targets) of one request; the context is cut from the left
    and the continuation from the right to fit `max_length`.

    >>> seq2seq_rows([5, 6, 7], [8, 9], sentinel=90, eos=2, start=0, max_length=4)
    ([6, 7, 90, 2], [0, 90, 8], [90, 8, 9])
    """
    targets = [sentinel] + continuation[: max_length - 1]
    context = context[max(len(context) - (max_length - 2), 0):]
    return context + [sentinel, eos], [start] + targets[:-1], targets


def _resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@register_model("harness-seq2seq")
class EncoderDecoderLM(TemplateLM):
    """Sentinel-infilling log-likelihood of an encoder-decoder saved with `save_pretrained`.

    `batch_size` counts requests per forward pass.
    """

    # As in harness-pll: backend "causal" makes TemplateLM tokenize context + continuation
    # together and split at the context's length, so the space between them is handled as HFLM
    # handles it for the decoders (and as the training text was tokenized, whole).
    backend = "causal"

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 32,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        sentinel: str = "<extra_id_0>",
    ) -> None:
        super().__init__()
        self._device = _resolve_device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
        self.sentinel_id = self.tokenizer.convert_tokens_to_ids(sentinel)
        if self.sentinel_id in (None, self.tokenizer.unk_token_id):
            raise ValueError(f"{pretrained}: the tokenizer has no sentinel token {sentinel!r}")
        self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(pretrained, dtype=getattr(torch, dtype))
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size)
        self._max_length = max_length or resolve_max_length(self.model.config, self.tokenizer)

    @property
    def eot_token_id(self) -> int:
        # [EOS] separated documents in training blocks: what an empty context looks like.
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Training text carried no special tokens but the ones the objective put there.
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        config = self.model.config
        rows = [seq2seq_rows(context, continuation, sentinel=self.sentinel_id, eos=self.eot_token_id,
                             start=config.decoder_start_token_id, max_length=self.max_length)
                for _, context, continuation in requests]
        # Longest encoder input first, so that each batch pads little.
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
    def _score_batch(self, rows) -> list[tuple[float, bool]]:
        """(sum of log P(continuation token), all of them greedy) for each row, in one forward."""
        pad = self.model.config.pad_token_id
        encoder, encoder_mask = _right_pad([r[0] for r in rows], pad)
        decoder, _ = _right_pad([r[1] for r in rows], pad)
        targets, scored = _right_pad([r[2] for r in rows], pad)
        scored[:, 0] = 0  # the sentinel is given, not scored
        logprobs = self.model(input_ids=encoder.to(self.device), attention_mask=encoder_mask.to(self.device),
                              decoder_input_ids=decoder.to(self.device)).logits.float().log_softmax(-1)
        targets, scored = targets.to(self.device), scored.to(self.device).bool()
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(~scored, 0.0)
        greedy = ((logprobs.argmax(-1) == targets) | ~scored).all(-1)
        return list(zip(picked.sum(-1).tolist(), greedy.tolist()))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "harness-seq2seq scores (context, continuation) pairs only; use multiple-choice or loglikelihood tasks")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "harness-seq2seq does not generate text; use multiple-choice or loglikelihood tasks")

    def get_model_info(self) -> dict:
        """Recorded by simple_evaluate in the results' config."""
        return {"model_num_parameters": self.model.num_parameters(), "model_dtype": str(self.model.dtype)}


def _right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, longest) ids right-padded with `pad`, and a mask that is 1 on real tokens."""
    ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return ids, mask
