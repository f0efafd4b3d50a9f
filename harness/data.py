"""Corpus, tokenizer and token files shared by every run of a suite.

`prepare` turns a `DataConfig` and the special tokens of all the suite's objectives into a cache
entry, built once and reused by every run:

    <cache_root>/<hash>/tokenizer/          a Hugging Face fast tokenizer (AutoTokenizer loads it)
    <cache_root>/<hash>/train.bin, val.bin  token ids, documents packed and each ended by [EOS]
    <cache_root>/<hash>/tasks/<task>/{train,validation}.jsonl   evaluation rows on the same world
    <cache_root>/<hash>/meta.json           `PreparedData`, written last

`BlockSampler` reads training blocks from a token file as a pure function of (seed, step, micro
batch, rank), so a resumed run reads exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness.errors import UserError
from harness.synthetic import World, WorldConfig, build_world, corpus, glue_rows, hellaswag_rows

# Bump when the files a cache entry holds change meaning, so old entries are not reused.
FORMAT_VERSION = 1
BASE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")
META = "meta.json"
CORPUS_SEED = 0
# Evaluation rows come from their own seeds, never the corpus's, so they are not training text.
TASK_SPLITS = {"train": 1, "validation": 2}
TASK_ROWS: dict[str, Callable[[World, int, int], list[dict]]] = {
    "synthetic_hellaswag": hellaswag_rows,
    "synthetic_glue": glue_rows,
}
# Special tokens that transformers knows by role; any others become extra special tokens.
NAMED_SPECIAL_TOKENS = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[EOS]": "eos_token",
                        "[MASK]": "mask_token", "[CLS]": "cls_token", "[SEP]": "sep_token"}


class TokenizerConfig(BaseModel):
    """The suite's one tokenizer, trained on the training documents."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["bpe"] = "bpe"
    """Tokenizer model: byte-pair encoding over whitespace-separated words."""
    vocab_size: int = Field(default=1024, ge=64)
    """Largest vocabulary, special tokens included; at least 64 more than the special tokens."""


class DataConfig(BaseModel):
    """Where the text comes from and how it is cut into training blocks."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: Literal["synthetic"] = "synthetic"
    """Corpus source: "synthetic" is the generated world of harness/synthetic.py."""
    synthetic: WorldConfig = Field(default_factory=WorldConfig)
    """The synthetic world and its corpus."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    """The tokenizer every objective of the suite shares."""
    seq_len: int = Field(default=128, ge=2)
    """Tokens per training block."""
    val_fraction: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Share of documents held out for validation; no training block reads them."""
    eval_examples: int = Field(default=200, ge=2)
    """Rows per evaluation task split."""


@dataclass(frozen=True)
class PreparedData:
    root: Path
    tokenizer_dir: Path
    train_tokens: Path
    val_tokens: Path
    dtype: str
    """numpy dtype of the token files: "uint16" when every id fits, else "uint32"."""
    vocab_size: int
    n_train_tokens: int
    n_val_tokens: int
    n_val_bytes: int
    """UTF-8 bytes of the validation documents, one more for each document's end (bits per byte)."""
    special_tokens: dict[str, int]
    tasks_dir: Path
    """<task>/{train,validation}.jsonl for every task in TASK_ROWS."""

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreparedData:
        return cls(**{k: Path(v) if k in _layout(Path()) else v for k, v in d.items()})


def _layout(root: Path) -> dict[str, Path]:
    """Where each file of a cache entry lives."""
    return {"root": root, "tokenizer_dir": root / "tokenizer", "train_tokens": root / "train.bin",
            "val_tokens": root / "val.bin", "tasks_dir": root / "tasks"}


# ---------------------------------------------------------------- the cache entry


def prepare(cfg: DataConfig, special_tokens: Sequence[str], cache_root: Path) -> PreparedData:
    """The cache entry for (cfg, special tokens), built first if it does not exist yet."""
    specials = special_token_order(special_tokens)
    _check_vocab_size(cfg.tokenizer, specials)
    root = Path(cache_root).resolve() / cache_key(cfg, specials)
    if not (root / META).exists():
        _build_atomically(cfg, specials, root)
    return _load(root)


def special_token_order(special_tokens: Sequence[str]) -> list[str]:
    """BASE_SPECIAL_TOKENS, then the others once each in natural order ([X_2] before [X_10]).

    The order depends only on the set, so suites asking for the same tokens share one entry.
    """
    others = set(special_tokens) - set(BASE_SPECIAL_TOKENS)
    return list(BASE_SPECIAL_TOKENS) + sorted(others, key=_natural_key)


def _natural_key(text: str) -> list:
    parts = re.split(r"(\d+)", text)
    return [(1, int(part), "") if part.isdigit() else (0, 0, part) for part in parts]


def cache_key(cfg: DataConfig, special_tokens: Sequence[str]) -> str:
    content = {"config": cfg.model_dump(mode="json"), "special_tokens": sorted(special_tokens),
               "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _check_vocab_size(cfg: TokenizerConfig, specials: Sequence[str]) -> None:
    if cfg.vocab_size < len(specials) + 64:
        raise UserError(f"{cfg.vocab_size} is too small for {len(specials)} special tokens; "
                        f"use at least {len(specials) + 64}", where="data.tokenizer.vocab_size")


def _build_atomically(cfg: DataConfig, specials: Sequence[str], root: Path) -> None:
    """Build in a temporary sibling and rename it into place: an interrupted build leaves no
    half-written entry, and of two concurrent builds the first rename wins."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _build(cfg, specials, tmp, root)
        tmp.rename(root)
    except OSError:
        if not (root / META).exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(cfg: DataConfig, specials: Sequence[str], out: Path, root: Path) -> None:
    """Write every file of the entry into `out`; meta.json, naming the final `root`, goes last."""
    world = build_world(cfg.synthetic)
    train_docs, val_docs = split_documents(corpus(world, cfg.synthetic.documents, CORPUS_SEED),
                                           cfg.val_fraction)
    tokenizer = train_tokenizer(train_docs, cfg.tokenizer.vocab_size, specials)
    save_tokenizer(tokenizer, _layout(out)["tokenizer_dir"])
    dtype = token_dtype(tokenizer.get_vocab_size())
    n_train = write_tokens(tokenizer, train_docs, dtype, _layout(out)["train_tokens"])
    n_val = write_tokens(tokenizer, val_docs, dtype, _layout(out)["val_tokens"])
    write_task_files(world, cfg.eval_examples, _layout(out)["tasks_dir"])
    prepared = PreparedData(
        **_layout(root), dtype=dtype, vocab_size=tokenizer.get_vocab_size(),
        n_train_tokens=n_train, n_val_tokens=n_val, n_val_bytes=text_bytes(val_docs),
        special_tokens={t: tokenizer.token_to_id(t) for t in specials})
    (out / META).write_text(json.dumps(prepared.to_dict(), indent=2))


def _load(root: Path) -> PreparedData:
    # Paths are re-derived from where the entry is now, so a moved or mirrored cache still works.
    meta = json.loads((root / META).read_text())
    return PreparedData.from_dict({**meta, **{k: str(v) for k, v in _layout(root).items()}})


# ---------------------------------------------------------------- documents and tokens


def split_documents(documents: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(training, validation): the last `val_fraction` of the documents, at least one each."""
    n_val = min(max(1, round(len(documents) * val_fraction)), len(documents) - 1)
    return list(documents[:-n_val]), list(documents[-n_val:])


def text_bytes(documents: Sequence[str]) -> int:
    # Each document's [EOS] is predicted too; it counts as the one byte a newline would take.
    return sum(len(d.encode("utf-8")) + 1 for d in documents)


def train_tokenizer(documents: Sequence[str], vocab_size: int,
                    special_tokens: Sequence[str]) -> Tokenizer:
    """BPE within words; special tokens take the first ids in the order given."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    # Metaspace keeps each space as the start of the next word, so decoding restores the exact
    # text, and " true" after a prompt is the same token as "true" inside a document.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  show_progress=False)
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    named = {NAMED_SPECIAL_TOKENS[t]: t for t in specials if t in NAMED_SPECIAL_TOKENS}
    extra = [t for t in specials if t not in NAMED_SPECIAL_TOKENS]
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens=extra,
                                      clean_up_tokenization_spaces=False, **named)
    wrapped.save_pretrained(directory)


def load_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def encode_documents(tokenizer: Tokenizer, documents: Sequence[str], dtype: str) -> np.ndarray:
    """One stream of token ids: every document followed by [EOS]."""
    eos = tokenizer.token_to_id("[EOS]")
    encodings = tokenizer.encode_batch_fast(list(documents), add_special_tokens=False)
    return np.concatenate([np.array(e.ids + [eos], dtype=dtype) for e in encodings])


def write_tokens(tokenizer: Tokenizer, documents: Sequence[str], dtype: str, path: Path) -> int:
    """Write the token stream as raw ids (np.memmap reads it back) and return its length."""
    tokens = encode_documents(tokenizer, documents, dtype)
    tokens.tofile(path)
    return len(tokens)


def write_task_files(world: World, n_rows: int, tasks_dir: Path) -> None:
    for task, rows in TASK_ROWS.items():
        (tasks_dir / task).mkdir(parents=True)
        for split, seed in TASK_SPLITS.items():
            lines = [json.dumps(row) + "\n" for row in rows(world, n_rows, seed)]
            (tasks_dir / task / f"{split}.jsonl").write_text("".join(lines))


# ---------------------------------------------------------------- reading blocks


class BlockSampler:
    """Windows of `seq_len` consecutive tokens from one token file (documents packed, [EOS]
    between them), read through a read-only memory map.

    `batch` draws block starts from a generator seeded by (seed, step, micro, rank), with no
    state carried between calls: resuming at step k reads what an uninterrupted run would.
    """

    def __init__(self, tokens_path: Path, dtype: str, seq_len: int, seed: int):
        self.args = (tokens_path, dtype, seq_len, seed)
        self.tokens = np.memmap(tokens_path, dtype=dtype, mode="r")
        self.seq_len = seq_len
        self.seed = seed
        if len(self.tokens) < seq_len:
            raise UserError(f"{seq_len} is longer than the {len(self.tokens)} tokens of "
                            f"{tokens_path}", where="data.seq_len")

    def __reduce__(self):
        # Pickled (e.g. to a Ray worker) as its arguments: the worker maps the file itself
        # instead of receiving a copy of every token.
        return (BlockSampler, self.args)

    def batch(self, step: int, micro: int, rank: int, batch_size: int) -> np.ndarray:
        """(batch_size, seq_len) int64 blocks at random starts."""
        rng = np.random.default_rng([self.seed, step, micro, rank])
        starts = rng.integers(0, len(self.tokens) - self.seq_len + 1, size=batch_size)
        return self._blocks(starts)

    def val_batches(self, n_batches: int, batch_size: int, rank: int,
                    world_size: int) -> list[np.ndarray]:
        """The file's first non-overlapping blocks, dealt to ranks in turn: disjoint across ranks
        and the same on every call. Every rank gets the same number of batches (at most
        `n_batches`, fewer when the file is short) so that collective operations stay matched."""
        per_rank = len(self.tokens) // self.seq_len // world_size // batch_size
        n = min(n_batches, per_rank)
        if n == 0:
            raise UserError(f"the validation split holds fewer than {world_size * batch_size} "
                            f"blocks of {self.seq_len} tokens", where="data.val_fraction")
        blocks = np.arange(n * batch_size) * world_size + rank
        return list(self._blocks(blocks * self.seq_len).reshape(n, batch_size, self.seq_len))

    def _blocks(self, starts: np.ndarray) -> np.ndarray:
        return np.asarray(self.tokens[starts[:, None] + np.arange(self.seq_len)], dtype=np.int64)
