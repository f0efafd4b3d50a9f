"""Corpus, tokenizer and token shards shared by every run of a suite.

`prepare` turns a `DataConfig` and the special tokens of all the suite's objectives into one
directory, built once and reused by every run (a cache entry, or an offline mirror):

    <root>/tokenizer/            a Hugging Face fast tokenizer (AutoTokenizer loads it)
    <root>/train.bin, val.bin    token ids (uint16 where the vocabulary fits, else uint32),
                                 documents packed, each ended by [EOS]; read through np.memmap
    <root>/train.docs.bin, ...   int64 index: the token offset of every document start, then
                                 the end of the file (so document i is [docs[i], docs[i+1]))
    <root>/train.sentences.bin   int64 index: the token offset of every sentence start
    <root>/tasks/<task>/{train,validation,test}.jsonl   evaluation rows on the synthetic world
    <root>/meta.json             `PreparedData`, its data card and its settings, written last

The corpus comes from `harness.sources` (synthetic world, a Hugging Face dataset, local files),
always through `datasets`, and is tokenized with `datasets.map(batched=True, num_proc=...)`.
The last `val_fraction` of the documents are held out for validation; no training block reads
them. An entry lives under a hash of everything that decides its content, and is built in a
temporary directory renamed into place, so a half-built entry is never read.

`BlockSampler` reads training blocks from a token file as a pure function of (seed, step, micro
batch, rank), so a resumed run reads exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from harness import sources, synthetic
from harness.errors import UserError
from harness.sources import FilesSource, HFSource, PreparedSource
from harness.synthetic import World, WorldConfig, build_world

# Bump when the files an entry holds change meaning, so old entries are not reused.
# 3: tasks/harness_heldout/ holds the validation documents' text (bits per byte).
FORMAT_VERSION = 3
# The held-out text scored for bits per byte: the validation documents, in order, up to this many
# bytes (the whole validation split of the shipped suites).
HELDOUT_MAX_BYTES = 256_000
BASE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")
META = "meta.json"
CORPUS_SEED = sources.SYNTHETIC_CORPUS_SEED
INDEX_DTYPE = np.int64
# Special tokens that transformers knows by role; any others become extra special tokens.
NAMED_SPECIAL_TOKENS = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[EOS]": "eos_token",
                        "[MASK]": "mask_token", "[CLS]": "cls_token", "[SEP]": "sep_token"}
# A token ends a sentence when its text is sentence-final punctuation, maybe with closing quotes.
SENTENCE_END = re.compile(r"[\"'”’»)\]]*[.!?。！？]+[\"'”’»)\]]*")
# Pieces a trained tokenizer never merges across: a word with the space before it ("▁ran"),
# a number, a run of punctuation, whitespace. Punctuation is its own piece, so "ran." ends in
# the sentence-end token "." that NSP/SOP cut at.
PIECES = r"▁?\p{L}+|▁?\p{N}+|▁?[^\s\p{L}\p{N}▁]+|\s+|▁+"
MAP_BATCH = 1000      # documents per datasets.map call
WRITE_BATCH = 10_000  # documents per write of the token file


class TokenizerConfig(BaseModel):
    """The suite's one tokenizer: trained on a sample of the training documents, or pretrained."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    """Model trained with `tokenizers`: byte-pair encoding, WordPiece or Unigram, within words."""
    vocab_size: int = Field(default=1024, ge=64)
    """Largest vocabulary, special tokens included; at least 64 more than the special tokens."""
    sample_documents: int = Field(default=50_000, ge=1)
    """Training documents the tokenizer is trained on (evenly spaced over the training split)."""
    pretrained: str | None = None
    """A pretrained tokenizer by hub name or local path, used instead of training one (kind,
    vocab_size and sample_documents are then unused); missing special tokens are added to it."""


class DataConfig(BaseModel):
    """Where the text comes from and how it is cut into training blocks."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: Literal["synthetic", "hf", "files", "prepared"] = "synthetic"
    """Corpus source: "synthetic" (the generated world of harness/synthetic.py), "hf" (a Hugging
    Face dataset), "files" (local text/JSONL/Parquet) or "prepared" (an offline mirror)."""
    synthetic: WorldConfig = Field(default_factory=WorldConfig)
    """The synthetic world: the corpus when source is "synthetic", and the evaluation tasks always."""
    hf: HFSource | None = None
    """The Hugging Face dataset, when source is "hf"."""
    files: FilesSource | None = None
    """The local files, when source is "files"."""
    prepared: PreparedSource | None = None
    """The directory of `harness data prepare`, when source is "prepared"; its corpus, tokenizer
    and validation split are used as they are."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    """The tokenizer every objective of the suite shares."""
    seq_len: int = Field(default=128, ge=2)
    """Tokens per training block."""
    val_fraction: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Share of documents held out for validation; no training block reads them."""
    eval_examples: int = Field(default=200, ge=2)
    """Rows per evaluation task split."""
    num_proc: int = Field(default=1, ge=1, exclude=True)
    """Processes that tokenize (datasets.map); changes no result, so no hash or run id sees it."""

    @model_validator(mode="after")
    def _source_has_its_section(self):
        if self.source != "synthetic" and getattr(self, self.source) is None:
            raise ValueError(f"source '{self.source}' needs a `{self.source}` section")
        return self


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
    """<task>/{train,validation,test}.jsonl for every task of `synthetic.TASKS`."""
    sentence_end: tuple[int, ...] = ()
    """Ids of the tokens that end a sentence; the sentence index is cut after them."""
    n_train_documents: int = 0
    n_val_documents: int = 0
    n_train_bytes: int = 0
    """As n_val_bytes, for the training documents."""
    source: str = ""
    """The corpus, in words (the data card's first line)."""
    tokenizer: str = ""
    """"bpe", "wordpiece", "unigram", or "pretrained:NAME"."""
    val_fraction: float = 0.0
    entropy_bits_per_byte: float | None = None
    """The synthetic world's true entropy of the held-out text, where the generator gives it."""
    n_heldout_documents: int = 0
    """The first validation documents, scored for bits per byte (tasks/harness_heldout/)."""

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreparedData:
        known = {f.name for f in fields(cls)}
        paths = _layout(Path())
        values = {k: Path(v) if k in paths else v for k, v in d.items() if k in known}
        values["sentence_end"] = tuple(values.get("sentence_end", ()))
        return cls(**values)


def _layout(root: Path) -> dict[str, Path]:
    """Where each file of an entry lives."""
    return {"root": root, "tokenizer_dir": root / "tokenizer", "train_tokens": root / "train.bin",
            "val_tokens": root / "val.bin", "tasks_dir": root / "tasks"}


def index_paths(tokens_path: Path) -> tuple[Path, Path]:
    """(document index, sentence index) of a token file."""
    tokens_path = Path(tokens_path)
    stem = tokens_path.with_suffix("")
    return stem.with_name(stem.name + ".docs.bin"), stem.with_name(stem.name + ".sentences.bin")


# ---------------------------------------------------------------- the entry


def prepare(cfg: DataConfig, special_tokens: Sequence[str], cache_root: Path,
            out: Path | None = None) -> PreparedData:
    """The entry for (cfg, special tokens), built first if it does not exist yet.

    It lives in `cache_root/<hash>/`, or in `out` when given (an offline mirror). With source
    "prepared" the directory named by the config is opened as it is: nothing is read or built.
    """
    specials = special_token_order(special_tokens)
    if cfg.source == "prepared":
        return open_prepared(cfg.prepared.dir, specials)
    if cfg.tokenizer.pretrained is None:
        _check_vocab_size(cfg.tokenizer, specials)
    key = cache_key(cfg, specials)
    root = Path(out).resolve() if out is not None else Path(cache_root).resolve() / key
    if not (root / META).exists():
        _check_empty(root, out)
        _build_atomically(cfg, specials, root, key)
    elif out is not None and _read_meta(root).get("key") != key:
        raise UserError(f"{root} holds data prepared from other settings; remove it or choose "
                        "another directory", where="--out")
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
    """A hash of everything that decides an entry's content: the settings of the source in use
    (and of the synthetic world, which the evaluation tasks come from), the local files read,
    the tokenizer, the special tokens, the task generators and the format."""
    settings = cfg.model_dump(mode="json", exclude={s for s in ("hf", "files", "prepared")
                                                    if s != cfg.source})
    content = {"config": settings, "special_tokens": sorted(special_tokens),
               "format": FORMAT_VERSION, "files": sources.fingerprint(cfg),
               "tasks": sorted(synthetic.TASKS), "generator": _generator_version()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _generator_version() -> str:
    # The synthetic corpus and the tasks are functions of this code: an edit to it means new data.
    return hashlib.sha256(synthetic.generator_source().encode()).hexdigest()[:16]


def _check_vocab_size(cfg: TokenizerConfig, specials: Sequence[str]) -> None:
    if cfg.vocab_size < len(specials) + 64:
        raise UserError(f"{cfg.vocab_size} is too small for {len(specials)} special tokens; "
                        f"use at least {len(specials) + 64}", where="data.tokenizer.vocab_size")


def _check_empty(root: Path, out: Path | None) -> None:
    if out is not None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root} exists and is not a prepared data directory; remove it or choose "
                        "another directory", where="--out")


def _build_atomically(cfg: DataConfig, specials: Sequence[str], root: Path, key: str) -> None:
    """Build in a temporary sibling and rename it into place: an interrupted build leaves no
    half-written entry, and of two concurrent builds the first rename wins. A build that fails
    (a bad input file, say) also removes the folders it created for the entry."""
    created = [folder for folder in (root.parent, *root.parent.parents) if not folder.exists()]
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build_and_rename(cfg, specials, root, key)
    except BaseException:
        for folder in created:  # innermost first; one that something else wrote in stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _build_and_rename(cfg: DataConfig, specials: Sequence[str], root: Path, key: str) -> None:
    tmp = make_temp_dir(root.parent, prefix=f".{root.name}-")
    scratch = make_temp_dir(root.parent, prefix=f".{root.name}-scratch-")
    try:
        _build(cfg, specials, tmp, root, key, scratch)
        tmp.rename(root)  # also replaces an empty directory at `root`
    except OSError:
        if not (root / META).exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new folder in `parent` with the permissions the umask gives (mkdtemp's 0700 would keep
    colleagues sharing a cache or a mirror out of it)."""
    while True:
        folder = Path(parent) / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir(mode=0o777)  # mkdir applies the umask
            return folder
        except FileExistsError:
            continue


def _build(cfg: DataConfig, specials: Sequence[str], out: Path, root: Path, key: str,
           scratch: Path) -> None:
    """Write every file of the entry into `out`; meta.json, naming the final `root`, goes last."""
    layout = _layout(out)
    documents = sources.read_documents(cfg, scratch)
    n_train, _ = split_sizes(len(documents), cfg.val_fraction, where=sources.describe(cfg))
    tokenizer = build_tokenizer(cfg.tokenizer, documents.select(range(n_train)), specials)
    tokenizer.save_pretrained(layout["tokenizer_dir"])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    train, val = write_shards(documents, n_train, tokenizer, layout, cfg.num_proc, scratch)
    world = build_world(cfg.synthetic)
    write_task_files(world, cfg.eval_examples, layout["tasks_dir"])
    val_documents = documents.select(range(n_train, len(documents)))
    n_heldout = write_heldout_text(val_documents[sources.TEXT], layout["tasks_dir"])
    prepared = PreparedData(
        **_layout(root), dtype=token_dtype(len(tokenizer)), vocab_size=len(tokenizer),
        n_train_tokens=train.tokens, n_val_tokens=val.tokens, n_val_bytes=val.bytes, special_tokens=ids,
        sentence_end=sentence_end_ids(tokenizer), n_train_documents=train.documents,
        n_val_documents=val.documents, n_train_bytes=train.bytes, source=sources.describe(cfg),
        tokenizer=_tokenizer_name(cfg.tokenizer), val_fraction=cfg.val_fraction,
        entropy_bits_per_byte=_entropy_floor(cfg, world, val_documents.select(range(n_heldout))),
        n_heldout_documents=n_heldout)
    meta = {**prepared.to_dict(), "card": data_card(prepared), "key": key, "format": FORMAT_VERSION,
            "config": cfg.model_dump(mode="json")}
    (out / META).write_text(json.dumps(meta, indent=2))


def _read_meta(root: Path) -> dict:
    return json.loads((Path(root) / META).read_text())


def _load(root: Path) -> PreparedData:
    # Paths are re-derived from where the entry is now, so a moved or mirrored entry still works.
    meta = _read_meta(root)
    return PreparedData.from_dict({**meta, **{k: str(v) for k, v in _layout(root).items()}})


def open_prepared(directory: Path, specials: Sequence[str]) -> PreparedData:
    """A directory written by `harness data prepare`, checked against what the suite needs."""
    root = Path(directory).expanduser().resolve()
    where = "data.prepared.dir"
    if not (root / META).is_file():
        raise UserError(f"{root} holds no prepared data ({META} is missing); write it with "
                        "`harness data prepare SUITE.yaml --out DIR`", where=where)
    meta = _read_meta(root)
    if meta.get("format") != FORMAT_VERSION:
        raise UserError(f"{root} was prepared by another version of the harness (format "
                        f"{meta.get('format')}, expected {FORMAT_VERSION}); prepare it again", where=where)
    missing = [t for t in specials if t not in meta["special_tokens"]]
    if missing:
        raise UserError(f"the tokenizer in {root} lacks the special tokens {', '.join(missing)} that "
                        "this suite's objectives need; prepare it again from this suite", where=where)
    return _load(root)


# ---------------------------------------------------------------- data card


def data_card(prepared: PreparedData) -> dict:
    """What the suite's data is, for the report: one flat mapping."""
    p = prepared
    return {"source": p.source, "tokenizer": p.tokenizer, "vocab_size": p.vocab_size,
            "val_fraction": p.val_fraction,
            "train_documents": p.n_train_documents, "train_tokens": p.n_train_tokens,
            "train_bytes": p.n_train_bytes,
            "val_documents": p.n_val_documents, "val_tokens": p.n_val_tokens, "val_bytes": p.n_val_bytes,
            "bytes_per_token": round(p.n_val_bytes / max(p.n_val_tokens, 1), 4),
            "heldout_documents": p.n_heldout_documents, "entropy_bits_per_byte": p.entropy_bits_per_byte}


def _entropy_floor(cfg: DataConfig, world: World, heldout) -> float | None:
    """The true entropy of the held-out text in bits per byte (synthetic world only), from the
    log-probabilities the generator recorded, which spares parsing each document."""
    if cfg.source != "synthetic":
        return None
    return float(synthetic.entropy_bits_per_byte(world, heldout[sources.TEXT], heldout[sources.LOGPROB]))


# ---------------------------------------------------------------- documents and tokenizers


def split_sizes(n_documents: int, val_fraction: float, where: str = "the corpus") -> tuple[int, int]:
    """(training, validation) document counts: the last `val_fraction`, at least one each."""
    if n_documents < 2:
        raise UserError(f"{where} holds {n_documents} non-empty document(s); at least 2 are needed "
                        "(one for training, one for validation)", where="data.source")
    n_val = min(max(1, round(n_documents * val_fraction)), n_documents - 1)
    return n_documents - n_val, n_val


def split_documents(documents: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(training, validation): the last `val_fraction` of the documents, at least one each."""
    n_train, _ = split_sizes(len(documents), val_fraction)
    return list(documents[:n_train]), list(documents[n_train:])


def text_bytes(documents: Sequence[str]) -> int:
    # Each document's [EOS] is predicted too; it counts as the one byte a newline would take.
    return sum(len(d.encode("utf-8")) + 1 for d in documents)


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
    for start in range(0, len(documents), MAP_BATCH):
        yield documents[start : start + MAP_BATCH]["text"]


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


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    wrap_tokenizer(tokenizer).save_pretrained(directory)


def load_pretrained(name: str, special_tokens: Sequence[str]) -> PreTrainedTokenizerFast:
    """A pretrained fast tokenizer with every special token added once (an existing token of the
    same text is reused) and registered by role, so [EOS] is its eos_token."""
    from transformers import AutoTokenizer
    where = "data.tokenizer.pretrained"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer '{name}' ({e}); give a hub name or a local "
                        f"directory; without network, {sources.MIRROR_HINT}", where=where) from None
    if not tokenizer.is_fast:
        raise UserError(f"'{name}' has no fast (Rust) tokenizer; choose one that has", where=where)
    named = {NAMED_SPECIAL_TOKENS[t]: t for t in special_tokens if t in NAMED_SPECIAL_TOKENS}
    extra = [t for t in special_tokens if t not in NAMED_SPECIAL_TOKENS]
    tokenizer.add_special_tokens({**named, "extra_special_tokens": extra}, replace_extra_special_tokens=False)
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def _tokenizer_name(cfg: TokenizerConfig) -> str:
    return f"pretrained:{cfg.pretrained}" if cfg.pretrained else cfg.kind


def load_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))


def sentence_end_ids(tokenizer: PreTrainedTokenizerFast) -> tuple[int, ...]:
    """Ids of the tokens whose text is sentence-final punctuation ("." "?!" '."'), specials aside."""
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in specials]
    texts = tokenizer.backend_tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)
    return tuple(i for i, text in zip(ids, texts) if SENTENCE_END.fullmatch(text.strip()))


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


# ---------------------------------------------------------------- token files


@dataclass
class Encode:
    """The datasets.map function: each document's token ids, its [EOS], and its size in bytes.

    It holds the tokenizer's path, not the tokenizer, so that it pickles small to every process
    and each loads the tokenizer once."""

    tokenizer_file: str
    eos: int

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_file(self.tokenizer_file)
        # A document that says "[MASK]" or "<extra_id_0>" holds text, not the special token.
        tokenizer.encode_special_tokens = True
        return tokenizer

    def __call__(self, texts: list[str]) -> dict:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return {"ids": [e.ids + [self.eos] for e in encodings],
                "bytes": [len(t.encode("utf-8")) + 1 for t in texts]}


def tokenize(documents, tokenizer_dir: Path, dtype: str, eos: int, num_proc: int, scratch: Path):
    """The documents' token ids, in order, tokenized in batches by `num_proc` processes."""
    import datasets
    features = datasets.Features({"ids": datasets.List(datasets.Value(dtype)),
                                  "bytes": datasets.Value("int64")})
    encode = Encode(str(Path(tokenizer_dir) / "tokenizer.json"), eos)
    with sources.quiet_datasets():
        return documents.map(
            encode, batched=True, batch_size=MAP_BATCH, input_columns=["text"], remove_columns=documents.column_names,
            num_proc=num_proc if num_proc > 1 else None, features=features,
            cache_file_name=str(Path(scratch) / "tokens.arrow"),
            # Fresh scratch every build: no cache to match, so datasets need not hash `encode`.
            new_fingerprint=hashlib.sha256(f"{tokenizer_dir}{dtype}".encode()).hexdigest()[:16])


def write_shards(documents, n_train: int, tokenizer: PreTrainedTokenizerFast, layout: dict[str, Path],
                 num_proc: int, scratch: Path) -> tuple[SplitStats, SplitStats]:
    """Tokenize every document once, then write the training split (the first `n_train`) and
    the validation split (the rest) with their indexes."""
    eos, sentence_end = tokenizer.convert_tokens_to_ids("[EOS]"), sentence_end_ids(tokenizer)
    tokenized = tokenize(documents, layout["tokenizer_dir"], token_dtype(len(tokenizer)), eos, num_proc, scratch)
    splits = {"train_tokens": range(n_train), "val_tokens": range(n_train, len(documents))}
    train, val = (write_split(tokenized.select(rows), layout[name], sentence_end, eos)
                  for name, rows in splits.items())
    return train, val


@dataclass(frozen=True)
class SplitStats:
    documents: int
    tokens: int
    bytes: int


def write_split(tokenized, tokens_path: Path, sentence_end: Sequence[int], eos: int) -> SplitStats:
    """Write a split's token file and its document and sentence indexes, batch by batch."""
    docs_path, sentences_path = index_paths(tokens_path)
    end_ids = np.array(sorted(sentence_end), dtype=np.int64)
    n_tokens = n_bytes = 0
    with open(tokens_path, "wb") as tokens, open(docs_path, "wb") as docs, \
            open(sentences_path, "wb") as sentences:
        for table in tokenized.with_format("arrow").iter(batch_size=WRITE_BATCH):
            flat, lengths = _flatten(table.column("ids"))
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            tokens.write(flat.tobytes())
            docs.write((starts + n_tokens).astype(INDEX_DTYPE).tobytes())
            sentence = sentence_starts(flat, starts, end_ids, eos) + n_tokens
            sentences.write(sentence.astype(INDEX_DTYPE).tobytes())
            n_tokens += len(flat)
            n_bytes += int(np.sum(table.column("bytes").to_numpy()))
        docs.write(np.array([n_tokens], dtype=INDEX_DTYPE).tobytes())
    return SplitStats(len(tokenized), n_tokens, n_bytes)


def _flatten(column) -> tuple[np.ndarray, np.ndarray]:
    """(all ids in order, ids per document) of an Arrow column of id lists."""
    import pyarrow.compute as pc
    lists = column.combine_chunks()
    return lists.flatten().to_numpy(), pc.list_value_length(lists).to_numpy()


def sentence_starts(flat: np.ndarray, doc_starts: np.ndarray, sentence_end: np.ndarray,
                    eos: int) -> np.ndarray:
    """Offsets in `flat` where a sentence starts: each document's start, and every token after a
    sentence end unless it is the document's [EOS]."""
    after_end = np.flatnonzero(np.isin(flat, sentence_end)) + 1
    after_end = after_end[(after_end < len(flat))]
    after_end = after_end[flat[after_end] != eos]
    return np.union1d(doc_starts, after_end)


@dataclass(frozen=True)
class TokenIndex:
    """The document and sentence structure of a token file (memory-mapped)."""

    documents: np.ndarray
    """Token offset of every document start, then the file's length: document i is
    tokens[documents[i]:documents[i+1]], its last token [EOS]."""
    sentences: np.ndarray
    """Token offset of every sentence start, ascending."""

    @classmethod
    def open(cls, tokens_path: Path) -> TokenIndex:
        docs, sentences = index_paths(tokens_path)
        return cls(np.memmap(docs, dtype=INDEX_DTYPE, mode="r"),
                   _memmap_or_empty(sentences, INDEX_DTYPE))

    def __len__(self) -> int:
        return len(self.documents) - 1

    def document(self, i: int) -> tuple[int, int]:
        return int(self.documents[i]), int(self.documents[i + 1])

    def sentences_of(self, i: int) -> np.ndarray:
        """Start offsets of document i's sentences (the first is the document's start)."""
        start, stop = self.document(i)
        lo, hi = np.searchsorted(self.sentences, [start, stop])
        return np.asarray(self.sentences[lo:hi])


def _memmap_or_empty(path: Path, dtype) -> np.ndarray:
    # numpy refuses to map an empty file.
    return np.memmap(path, dtype=dtype, mode="r") if Path(path).stat().st_size else np.zeros(0, dtype)


def write_task_files(world: World, n_rows: int, tasks_dir: Path) -> None:
    """Every task of the synthetic world, each split from its own seed (never the corpus's)."""
    for task, rows in synthetic.TASKS.items():
        (tasks_dir / task).mkdir(parents=True)
        for split, seed in synthetic.TASK_SPLITS.items():
            lines = [json.dumps(row) + "\n" for row in rows(world, n_rows, seed)]
            (tasks_dir / task / f"{split}.jsonl").write_text("".join(lines))


def write_heldout_text(texts: Sequence[str], tasks_dir: Path, max_bytes: int = HELDOUT_MAX_BYTES) -> int:
    """The validation documents as rows {"text": ...} of the `harness_heldout` task, in order,
    while they fit in `max_bytes` (at least one); returns how many were written."""
    lines, size = [], 0
    for text in texts:
        size += len(text.encode("utf-8"))
        if lines and size > max_bytes:
            break
        lines.append(json.dumps({"text": text}) + "\n")
    (tasks_dir / "harness_heldout").mkdir(parents=True, exist_ok=True)
    (tasks_dir / "harness_heldout" / "validation.jsonl").write_text("".join(lines))
    return len(lines)


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
        self.tokens_path = Path(tokens_path)
        self.seq_len = seq_len
        self.seed = seed
        if len(self.tokens) < seq_len:
            raise UserError(f"{seq_len} is longer than the {len(self.tokens)} tokens of "
                            f"{tokens_path}", where="data.seq_len")

    def __reduce__(self):
        # Pickled (e.g. to a Ray worker) as its arguments: the worker maps the file itself
        # instead of receiving a copy of every token.
        return (BlockSampler, self.args)

    def starts(self, step: int, micro: int, rank: int, batch_size: int) -> np.ndarray:
        """Token offsets of the blocks of `batch(step, micro, rank, batch_size)`."""
        rng = np.random.default_rng([self.seed, step, micro, rank])
        return rng.integers(0, len(self.tokens) - self.seq_len + 1, size=batch_size)

    def batch(self, step: int, micro: int, rank: int, batch_size: int) -> np.ndarray:
        """(batch_size, seq_len) int64 blocks at random starts."""
        return self._blocks(self.starts(step, micro, rank, batch_size))

    def document_ids(self, starts: np.ndarray) -> np.ndarray:
        """(len(starts), seq_len): the index of the document each token of each block belongs to,
        so an objective can keep attention within documents (equal ids = one document)."""
        positions = np.asarray(starts)[:, None] + np.arange(self.seq_len)
        return np.searchsorted(self.index.documents, positions, side="right") - 1

    @cached_property
    def index(self) -> TokenIndex:
        return TokenIndex.open(self.tokens_path)

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
