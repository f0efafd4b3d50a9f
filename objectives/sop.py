"""Masked LM plus sentence-order prediction (ALBERT, Lan et al. 2020).

Each row of the block gives two consecutive runs of whole sentences of one document (see
objectives.segments). Half of the rows, drawn independently, keep them in order (sequence
label 1, "in order"); the other half swap the same two segments (label 0, "swapped"), so both
classes hold exactly the same text and only the order tells them apart. Note that transformers'
AlbertForPreTraining numbers the two classes the other way round.

The row is [CLS] A [SEP] B [SEP] padded with [PAD], then BERT-masked as in objectives.mlm.

    block           [ran, .,  bob, sat, .,  he, ate, .,  [EOS], ann]
    segments        [bob sat .] then [he ate .]
    in order (1)    [CLS] bob sat . [SEP] he ate . [SEP] [PAD] ...
    swapped (0)     [CLS] he ate . [SEP] bob sat . [SEP] [PAD] ...
    input_ids       [CLS] he [MASK] . [SEP] bob sat . [SEP] [PAD] ...    (BERT masking)
    labels          -100 -100 ate -100 ...
    sequence_labels 0
    attention_mask  1 ... 1 0 ...
"""

from __future__ import annotations

import numpy as np

from objectives.configs import SentenceOrderConfig
from objectives.segments import Pair, Segment, SegmentPairObjective, Span, pair_source

IN_ORDER, SWAPPED = 1, 0


def sop_pairs(block: np.ndarray, docs_by_row: list[list[list[Span]]], budget: int, eos_id: int,
              rng: np.random.Generator) -> list[Pair]:
    """One pair per row of `block`: consecutive segments, swapped with probability 1/2."""
    in_order = rng.random(len(block)) < 0.5
    pairs = []
    for row, keep in enumerate(in_order):
        source, a, b, _ = pair_source(block, docs_by_row, row, budget, eos_id, rng)
        first, second = Segment(source, *a), Segment(source, *b)
        pairs.append(Pair(first, second, IN_ORDER) if keep else Pair(second, first, SWAPPED))
    return pairs


class SentenceOrderPrediction(SegmentPairObjective):
    name = "sop"
    Config = SentenceOrderConfig
    pair_labels = {SWAPPED: "swapped: B came before A in the document", IN_ORDER: "in order: B follows A"}

    def pairs(self, block, docs_by_row, budget, eos_id, rng):
        return sop_pairs(block, docs_by_row, budget, eos_id, rng)
