"""Plain tensor helpers shared by the objectives, the evaluation adapters and fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100  # a label that no loss counts (torch's cross_entropy default)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, longest), padding after each sequence: the batches
    of fine-tuning and of the lm-eval adapters.

    >>> pad_right([[5, 6, 7], [8]], pad_id=0)
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([[1, 1, 1],
            [1, 0, 0]]))
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(sequences):
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """The decoder's input for `labels` (B, S): a start token, then the labels up to S-1, with
    unlabelled positions (IGNORE_INDEX) read as padding (T5's `_shift_right`).

    >>> shift_right(torch.tensor([[7, 8, 1, -100]]), start_id=0, pad_id=0)
    tensor([[0, 7, 8, 1]])
    """
    shifted = labels.new_full(labels.shape, pad_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_id
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)
