"""Masked LM plus next-sentence prediction (BERT, Devlin et al. 2019).

Each row of the block gives one example: A and B are runs of whole sentences of one document
(see objectives.segments). Half of the rows, drawn independently, keep B as the text that
follows A (sequence label 1, "is next"); the other half replace B with a run of sentences from
another document (label 0, "not next"). Note that transformers' BertForPreTraining numbers the
two classes the other way round.

The other document is one of the same row when the row holds one (a row is a window of the
packed stream, and [EOS] separates its documents, so it is certainly another document). A row
that holds no other document with a sentence that fits takes B from the next rows of the batch
in turn; those are independent random windows of the stream, so B is then another document
unless two windows fall into one. B never reads as the text that follows A (its tokens are
never the start of A's continuation). Only a block with no other document at all (a batch of
one row, say) cannot give a negative: that row keeps its true next segment and label 1.
(Where no row holds two whole sentences that fit, see objectives.segments.pair_source.)

The row is [CLS] A [SEP] B [SEP] padded with [PAD], then BERT-masked as in objectives.mlm.

    block           [ran, .,  bob, sat, .,  he, ate, .,  [EOS], ann, is, tall, .,  she]
    documents       [bob sat . | he ate .]   [ann is tall .]
    is next (1)     [CLS] bob sat . [SEP] he ate . [SEP] [PAD] ...
    not next (0)    [CLS] bob sat . [SEP] ann is tall . [SEP] [PAD] ...
    input_ids       [CLS] bob [MASK] . [SEP] ann is tall . [SEP] [PAD] ...    (BERT masking)
    labels          -100  -100 sat  -100 ...
    sequence_labels 0
    attention_mask  1 ... 1 0 ...
"""

from __future__ import annotations

import numpy as np

from objectives.configs import NextSentenceConfig
from objectives.segments import (Pair, Segment, SegmentPairObjective, Span, pair_source,
                                 rows_from, sentence_run)

IS_NEXT, NOT_NEXT = 1, 0


def nsp_pairs(block: np.ndarray, docs_by_row: list[list[list[Span]]], budget: int, eos_id: int,
              rng: np.random.Generator) -> list[Pair]:
    """One pair per row of `block`, B the true next segment with probability 1/2."""
    is_next = rng.random(len(block)) < 0.5
    return [nsp_pair(block, docs_by_row, row, budget, eos_id, bool(keep), rng) for row, keep in enumerate(is_next)]


def nsp_pair(block, docs_by_row, row: int, budget: int, eos_id: int, is_next: bool,
             rng: np.random.Generator) -> Pair:
    # A is drawn the same way for both labels, so its length and place say nothing about the label.
    source, a, b, doc = pair_source(block, docs_by_row, row, budget, eos_id, rng)
    first = Segment(source, *a)
    room = budget - (first.stop - first.start)
    foreign = None if is_next or doc is None else foreign_segment(
        block, docs_by_row, (source, doc), room, block[source, first.stop :], rng)
    # A block with no other document (a batch of one short row, say) gives a positive instead.
    return Pair(first, Segment(source, *b), IS_NEXT) if foreign is None else Pair(first, foreign, NOT_NEXT)


def foreign_segment(block, docs_by_row, home: tuple[int, int], budget: int, following: np.ndarray,
                    rng: np.random.Generator) -> Segment | None:
    """A run of whole sentences, at most `budget` tokens, of a document other than `home` (row,
    document index): from home's row if it can, else from the next rows; None if there is none.

    The synthetic corpus repeats sentences across documents, so a run whose tokens start
    `following` (the text after A) is refused: it would read exactly as a true next segment.
    """
    for row in rows_from(home[0], len(docs_by_row)):
        others = [d for d in range(len(docs_by_row[row])) if (row, d) != home]
        for k in rng.permutation(len(others)):
            span = sentence_run(docs_by_row[row][others[k]], budget, rng)
            if span is not None and not starts_with(following, block[row, span[0] : span[1]]):
                return Segment(row, *span)
    return None


def starts_with(tokens: np.ndarray, prefix: np.ndarray) -> bool:
    return len(prefix) <= len(tokens) and np.array_equal(tokens[: len(prefix)], prefix)


class NextSentencePrediction(SegmentPairObjective):
    name = "nsp"
    Config = NextSentenceConfig
    pair_labels = {NOT_NEXT: "not next: B is from another document", IS_NEXT: "is next: B is the text that follows A"}

    def pairs(self, block, docs_by_row, budget, eos_id, rng):
        return nsp_pairs(block, docs_by_row, budget, eos_id, rng)
