"""lm-eval model class for the encoder-decoder (harness.models.encdec) trained by span corruption.

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

A rolling (perplexity) request is scored in sliding windows (harness.evaluate.adapters), each
window's continuation cut out after its context: the decoder scores at most `rolling_stride`
tokens per window, the first window too (span corruption sets it to what its decoder was
trained to emit), and the encoder reads the max_length - 2 tokens before them. The first
window's context is [EOS], as for an empty context: the encoder reads [[EOS], <extra_id_0>, [EOS]].
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model

from harness.models.encdec import ModernEncoderDecoder
from harness.evaluate.adapters import HarnessLM, sliding_windows
from harness.models.tensors import pad_right


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


@register_model("harness-seq2seq")
class EncoderDecoderLM(HarnessLM):
    """Sentinel-infilling log-likelihood of an encoder-decoder saved with `save_pretrained`.

    `batch_size` counts requests per forward pass.
    """

    name = "harness-seq2seq"
    scores = "(context, continuation) pairs by sentinel infilling"

    def __init__(self, pretrained: str, sentinel: str = "<extra_id_0>", **kwargs) -> None:
        super().__init__(pretrained, **kwargs)
        self.sentinel_id = self.token_id(sentinel, "sentinel token")

    def load(self, pretrained: str, dtype: torch.dtype):
        return ModernEncoderDecoder.from_pretrained(pretrained, dtype=dtype)

    def rolling_windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """Windows of `rolling_stride` scored tokens after (up to) the max_length - 2 tokens before
        them: context and continuation are separate inputs (encoder and decoder), so a window
        holds max_length - 2 + stride tokens."""
        stride = self.rolling_stride
        return sliding_windows(tokens, self.prefix_token_id, self.max_length - 2 + stride, stride, first=stride)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        config = self.model.config
        rows = [seq2seq_rows(context, continuation, sentinel=self.sentinel_id, eos=self.eot_token_id,
                             start=config.decoder_start_token_id, max_length=self.max_length)
                for _, context, continuation in requests]
        return self.score_in_batches(requests, rows)

    @torch.no_grad()
    def _score_batch(self, rows) -> list[tuple[float, bool]]:
        """(sum of log P(continuation token), all of them greedy) for each row, in one forward."""
        pad = self.model.config.pad_token_id
        encoder, encoder_mask = pad_right([r[0] for r in rows], pad)
        decoder, _ = pad_right([r[1] for r in rows], pad)
        targets, scored = pad_right([r[2] for r in rows], pad)
        scored[:, 0] = 0  # the sentinel is given, not scored
        logprobs = self.model(input_ids=encoder.to(self.device), attention_mask=encoder_mask.to(self.device),
                              decoder_input_ids=decoder.to(self.device)).logits.float().log_softmax(-1)
        targets, scored = targets.to(self.device), scored.to(self.device).bool()
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(~scored, 0.0)
        greedy = ((logprobs.argmax(-1) == targets) | ~scored).all(-1)
        return list(zip(picked.sum(-1).tolist(), greedy.tolist()))
