"""Sentences, segments and segment pairs cut from packed token blocks; the common part of NSP and SOP.

A block row is a window of the packed stream: documents separated by [EOS], and the window may
start and end mid-sentence. `documents` finds the row's whole sentences, grouped by document. A
sentence runs from just after a sentence-end token (or [EOS]) through the next sentence-end
token, or up to an [EOS]; the fragment before the row's first boundary and the one after its
last are never used. A segment is a run of consecutive whole sentences of one document, so it
is one contiguous slice of its row (`pair_source` names the one exception, for blocks too
short to hold two whole sentences):

    row        [at, home, .,  bob, ran, .,  he, sat, .,  [EOS], ann, is, .,  she]
    documents  [[(3, 6), (6, 9)], [(10, 13)]]    ("at home ." and "she" are fragments)

Next-sentence and sentence-order prediction both lay a pair out as one row,

    [CLS] A [SEP] B [SEP] [PAD] ...

then apply BERT masking to it (never to [CLS], [SEP] or [PAD]), and train the masked LM plus a
two-way classifier on the [CLS] hidden state with one encoder pass (`SegmentPairObjective`).
They differ only in how pairs are drawn (`pairs`) and what their two labels mean
(`pair_labels`), in objectives/nsp.py and objectives/sop.py. The masked LM is exported as
objectives.mlm's is; the pair head is saved beside it (`export_heads`: pair_head.safetensors).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from harness.models.tensors import IGNORE_INDEX
from objectives.base import EXPORT_DEFAULTS, ExtraWeights, Objective, cross_entropy
from objectives.configs import SegmentPairConfig
from objectives.mlm import bert_mask, dense_for_export

Span = tuple[int, int]  # (start, stop) of a slice of one row
PAIR_SPECIALS = 3  # [CLS], [SEP], [SEP]


class Segment(NamedTuple):
    """Tokens block[row, start:stop]: whole sentences of one document."""

    row: int
    start: int
    stop: int

    def tokens(self, block: np.ndarray) -> np.ndarray:
        return block[self.row, self.start : self.stop]


class Pair(NamedTuple):
    """Segments A and B of one example, and its sequence label."""

    first: Segment
    second: Segment
    label: int


# --- sentences and segments (pure) ---------------------------------------------------------------


def documents(row: np.ndarray, sentence_end: np.ndarray, eos_id: int) -> list[list[Span]]:
    """The whole sentences of `row` as (start, stop) slices, grouped by document, in order.

    A sentence ending at an [EOS] leaves the [EOS] out; documents without a whole sentence are
    dropped.
    """
    is_eos = row == eos_id
    boundaries = np.flatnonzero(np.isin(row, sentence_end) | is_eos)
    docs: list[list[Span]] = [[]]
    for previous, end in zip(boundaries[:-1], boundaries[1:]):
        stop = int(end) if is_eos[end] else int(end) + 1
        if stop > previous + 1:
            docs[-1].append((int(previous) + 1, stop))
        if is_eos[end]:
            docs.append([])
    return [doc for doc in docs if doc]


def run_length(doc: list[Span], first: int, budget: int) -> int:
    """Sentences of `doc` from `first` on that fit together in `budget` tokens (may be 0)."""
    last = first
    while last < len(doc) and doc[last][1] - doc[first][0] <= budget:
        last += 1
    return last - first


def consecutive_pair(docs: list[list[Span]], budget: int, rng: np.random.Generator):
    """(A, B, document index): A then B, consecutive runs of whole sentences of one document,
    together at most `budget` tokens; None when no two consecutive sentences fit.

    The run starts at a random sentence and takes as many sentences as fit (as BERT fills its
    target length); the cut between A and B is uniform over the run's sentence boundaries.
    """
    starts = [(d, i) for d, doc in enumerate(docs) for i in range(len(doc)) if run_length(doc, i, budget) >= 2]
    if not starts:
        return None
    d, first = starts[rng.integers(len(starts))]
    doc = docs[d]
    stop = first + run_length(doc, first, budget)
    cut = int(rng.integers(first + 1, stop))
    return (doc[first][0], doc[cut - 1][1]), (doc[cut][0], doc[stop - 1][1]), d


def sentence_run(doc: list[Span], budget: int, rng: np.random.Generator) -> Span | None:
    """A run of whole sentences of `doc` from a random first sentence, as many as fit `budget`."""
    firsts = [i for i in range(len(doc)) if run_length(doc, i, budget) >= 1]
    if not firsts:
        return None
    first = firsts[rng.integers(len(firsts))]
    return doc[first][0], doc[first + run_length(doc, first, budget) - 1][1]


def rows_from(row: int, n_rows: int) -> list[int]:
    """`row`, then the other rows of the batch in cyclic order: where a row cannot supply what
    an example needs (too few whole sentences), the next one that can is used."""
    return [(row + k) % n_rows for k in range(n_rows)]


def pair_source(block: np.ndarray, docs_by_row: list[list[list[Span]]], row: int, budget: int,
                eos_id: int, rng: np.random.Generator):
    """(source row, A, B, document index) of a consecutive pair for output row `row`.

    Only when no row holds two whole sentences that fit (a batch of one short row, say) is the
    longest text of one document cut in half instead, with document index None.
    """
    for source in rows_from(row, len(docs_by_row)):
        if (found := consecutive_pair(docs_by_row[source], budget, rng)) is not None:
            return (source, *found)
    source, start, stop = longest_run(block != eos_id, budget)
    if stop - start < 2:
        raise ValueError("the block holds no two tokens of one document: too short for a sentence pair")
    middle = (start + stop) // 2
    return source, (start, middle), (middle, stop), None


def longest_run(keep: np.ndarray, budget: int) -> tuple[int, int, int]:
    """(row, start, stop) of the longest run of True in the 2-D `keep`, clipped to `budget`."""
    best = (0, 0, 0)
    for row, flags in enumerate(keep):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            stop = min(stop, start + budget)
            if stop - start > best[2] - best[1]:
                best = (row, int(start), int(stop))
    return best


def assemble(block: np.ndarray, pairs: list[Pair], *, cls_id: int, sep_id: int, pad_id: int,
             seq_len: int) -> np.ndarray:
    """Rows [CLS] A [SEP] B [SEP], right-padded with [PAD] to `seq_len`."""
    rows = np.full((len(pairs), seq_len), pad_id, dtype=np.int64)
    for i, pair in enumerate(pairs):
        tokens = np.concatenate([[cls_id], pair.first.tokens(block), [sep_id], pair.second.tokens(block), [sep_id]])
        rows[i, : len(tokens)] = tokens
    return rows


# --- the model: one encoder pass, the MLM head at masked positions and a pair head at [CLS] ------


class PairOutput(NamedTuple):
    token_logits: torch.Tensor  # (masked positions, vocab), in row-major order
    pair_logits: torch.Tensor   # (B, 2)


class MaskedLMWithPairHead(torch.nn.Module):
    """A ModernBertForMaskedLM and a Linear(hidden, 2) on the first token's hidden state."""

    def __init__(self, mlm: torch.nn.Module):
        super().__init__()
        self.mlm = mlm
        self.pair_head = torch.nn.Linear(mlm.config.hidden_size, 2)

    def forward(self, input_ids, attention_mask, labels) -> PairOutput:
        hidden = self.mlm.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # The vocabulary projection only where there is a label: the MLM's sparse prediction.
        token_logits = self.mlm.decoder(self.mlm.head(hidden[labels != IGNORE_INDEX]))
        return PairOutput(token_logits, self.pair_head(hidden[:, 0]))


# --- the objective --------------------------------------------------------------------------------


class SegmentPairObjective(Objective):
    """Masked LM over [CLS] A [SEP] B [SEP] rows plus a binary label per row (`pairs`).

    Batch: input_ids, labels (MLM), sequence_labels (the pair's label), attention_mask (0 on
    padding). Loss: MLM cross-entropy + pair cross-entropy; `predicted` counts masked tokens.
    """

    architecture = "encoder"
    special_tokens = ("[MASK]", "[CLS]", "[SEP]")
    # The kept model is the masked LM alone, scored like objectives.mlm.
    scoring = "pseudo-loglikelihood"
    defines_likelihood = False
    Config = SegmentPairConfig
    pair_labels: ClassVar[dict[int, str]]  # what each sequence label means

    def __init__(self, config, vocab):
        super().__init__(config, vocab)
        if not vocab.sentence_end:
            raise ValueError(f"{self.name} cuts text at sentence ends, and the vocabulary names none "
                             "(Vocab.sentence_end is empty)")

    def pairs(self, block: np.ndarray, docs_by_row: list[list[list[Span]]], budget: int, eos_id: int,
              rng: np.random.Generator) -> list[Pair]:
        """One Pair per row of `block`, its segments at most `budget` tokens together."""
        raise NotImplementedError

    def transform(self, block, rng):
        block, v = np.asarray(block, dtype=np.int64), self.vocab
        sentence_end = np.array(v.sentence_end, dtype=np.int64)
        docs_by_row = [documents(row, sentence_end, v.id("[EOS]")) for row in block]
        pairs = self.pairs(block, docs_by_row, block.shape[1] - PAIR_SPECIALS, v.id("[EOS]"), rng)
        rows = assemble(block, pairs, cls_id=v.id("[CLS]"), sep_id=v.id("[SEP]"), pad_id=v.id("[PAD]"),
                        seq_len=block.shape[1])
        # [CLS], [SEP] and [PAD] are special tokens, so bert_mask never selects them.
        inputs, labels = bert_mask(rows, rng, v, rate=self.config.mask_rate, split=self.config.split)
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "sequence_labels": torch.tensor([p.label for p in pairs], dtype=torch.int64),
                "attention_mask": torch.from_numpy((rows != v.id("[PAD]")).astype(np.int64))}

    def build_model(self, make):
        return MaskedLMWithPairHead(make("encoder", overrides=self.model_overrides()))

    def export_model(self, module):
        return dense_for_export(module.mlm)

    def export_heads(self, module):
        head = module.pair_head
        description = {
            "module": "torch.nn.Linear", "in_features": head.in_features, "out_features": head.out_features,
            "input": "the final hidden state of the first token ([CLS]) of a row [CLS] A [SEP] B [SEP] (padded "
                     "with [PAD], attention_mask 0 there), from this folder's base model (AutoModel)",
            "labels": {str(label): meaning for label, meaning in sorted(self.pair_labels.items())}}
        return {"pair_head": ExtraWeights(dict(head.state_dict()), description)}

    def export_usage(self, seq_len):
        pair = (f" The {self.name.upper()} pair head trained with it is saved beside it (pair_head.safetensors, "
                "see heads): softmax of its two logits on [CLS] gives the two labels' probabilities.")
        return super().export_usage(seq_len) | {"use": EXPORT_DEFAULTS["encoder"]["use"] + pair}

    def loss(self, model, batch):
        labels = batch["labels"]
        out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels)
        token_loss, metrics = cross_entropy(out.token_logits, labels[labels != IGNORE_INDEX], self.config)
        pair_loss = F.cross_entropy(out.pair_logits.float(), batch["sequence_labels"])
        pair_accuracy = (out.pair_logits.argmax(-1) == batch["sequence_labels"]).float().mean()
        loss = token_loss + pair_loss
        return loss, {"loss": loss.detach(), **metrics, "mlm_loss": token_loss.detach(),
                      f"{self.name}_loss": pair_loss.detach(), f"{self.name}_accuracy": pair_accuracy}
