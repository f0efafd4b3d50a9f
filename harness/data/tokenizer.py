"""The suite's tokenizer: trained with `tokenizers` on a sample of the training documents, or a
pretrained one, wrapped as a transformers fast tokenizer with every special token registered."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness.data.config import TokenizerConfig
from harness.data.sources.common import MIRROR_HINT, TEXT
from harness.errors import UserError

# Special tokens that transformers knows by role; any others become extra special tokens.
NAMED_SPECIAL_TOKENS = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[EOS]": "eos_token",
                        "[MASK]": "mask_token", "[CLS]": "cls_token", "[SEP]": "sep_token"}
# A token ends a sentence when its text is sentence-final punctuation, maybe with closing quotes.
SENTENCE_END = re.compile(r"[\"'”’»)\]]*[.!?。！？]+[\"'”’»)\]]*")
# Pieces a trained tokenizer never merges across: a word with the space before it ("▁ran"),
# a number, a run of punctuation, whitespace. Punctuation is its own piece, so "ran." ends in
# the sentence-end token "." that NSP/SOP cut at.
PIECES = r"▁?\p{L}+|▁?\p{N}+|▁?[^\s\p{L}\p{N}▁]+|\s+|▁+"
SAMPLE_BATCH = 1000  # texts per batch the trainer reads


def build_tokenizer(cfg: TokenizerConfig, train_documents, special_tokens: Sequence[str]
                    ) -> PreTrainedTokenizerFast:
    """The suite's tokenizer, with every special token once: pretrained, or trained on a sample."""
    if cfg.pretrained is not None:
        return load_pretrained(cfg.pretrained, special_tokens)
    sample = _sample(train_documents, cfg.sample_documents)
    return wrap_tokenizer(train_tokenizer(sample, cfg.vocab_size, special_tokens, cfg.kind))


def _sample(documents, n: int) -> Iterator[list[str]]:
    """Batches of the texts of `n` documents evenly spaced over `documents` (all, if fewer)."""
    if len(documents) > n:
        documents = documents.select(np.linspace(0, len(documents) - 1, n).round().astype(int))
    for start in range(0, len(documents), SAMPLE_BATCH):
        yield documents[start : start + SAMPLE_BATCH][TEXT]


def train_tokenizer(documents, vocab_size: int, special_tokens: Sequence[str],
                    kind: str = "bpe") -> Tokenizer:
    """A `kind` tokenizer trained on `documents` (texts, or batches of texts); special tokens
    take the first ids in the order given."""
    model, trainer, decoder = _recipe(kind, vocab_size, list(special_tokens))
    tokenizer = Tokenizer(model)
    # Metaspace keeps each space as the start of the next word, so decoding restores the exact
    # text, and " true" after a prompt is the same token as "true" inside a document.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex(PIECES), "isolated")])
    tokenizer.decoder = decoder
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def _recipe(kind: str, vocab_size: int, specials: list[str]):
    """(model, trainer, decoder) of a tokenizer kind."""
    common = {"vocab_size": vocab_size, "special_tokens": specials, "show_progress": False}
    if kind == "bpe":
        return models.BPE(unk_token="[UNK]"), trainers.BpeTrainer(**common), decoders.Metaspace()
    if kind == "wordpiece":
        # A word is split into pieces marked "##" after the first; the decoder drops the marks
        # (only at a token's start, so a "##" of the text survives) and joins the pieces before
        # turning "▁" back into spaces.
        decoder = decoders.Sequence([decoders.Replace(Regex("^##"), ""), decoders.Metaspace()])
        return (models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=10_000),
                trainers.WordPieceTrainer(**common), decoder)
    return (models.Unigram(), trainers.UnigramTrainer(unk_token="[UNK]", **common), decoders.Metaspace())


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers tokenizer of a trained one, its special tokens registered by role."""
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    named = {NAMED_SPECIAL_TOKENS[t]: t for t in specials if t in NAMED_SPECIAL_TOKENS}
    extra = [t for t in specials if t not in NAMED_SPECIAL_TOKENS]
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens=extra,
                                   clean_up_tokenization_spaces=False, **named)


def load_pretrained(name: str, special_tokens: Sequence[str]) -> PreTrainedTokenizerFast:
    """A pretrained fast tokenizer with every special token added once (an existing token of the
    same text is reused) and registered by role, so [EOS] is its eos_token."""
    from transformers import AutoTokenizer  # slow to import (every model family); only this needs it
    where = "data.tokenizer.pretrained"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer '{name}' ({e}); give a hub name or a local "
                        f"directory; without network, {MIRROR_HINT}", where=where) from None
    if not tokenizer.is_fast:
        raise UserError(f"'{name}' has no fast (Rust) tokenizer; choose one that has", where=where)
    named = {NAMED_SPECIAL_TOKENS[t]: t for t in special_tokens if t in NAMED_SPECIAL_TOKENS}
    extra = [t for t in special_tokens if t not in NAMED_SPECIAL_TOKENS]
    tokenizer.add_special_tokens({**named, "extra_special_tokens": extra}, replace_extra_special_tokens=False)
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def tokenizer_name(cfg: TokenizerConfig) -> str:
    """"bpe", "wordpiece", "unigram", or "pretrained:NAME" (the data card's)."""
    return f"pretrained:{cfg.pretrained}" if cfg.pretrained else cfg.kind


def load_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))


def sentence_end_ids(tokenizer: PreTrainedTokenizerFast) -> tuple[int, ...]:
    """Ids of the tokens whose text is sentence-final punctuation ("." "?!" '."'), specials aside:
    NSP and SOP cut documents into sentences after them."""
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in specials]
    texts = tokenizer.backend_tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)
    return tuple(i for i, text in zip(ids, texts) if SENTENCE_END.fullmatch(text.strip()))
