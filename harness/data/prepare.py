"""The prepared entry of a suite's data (see harness.data): `prepare` builds it once per content
hash under the cache root (or into an offline mirror) and every run opens it.

The last `val_fraction` of the documents are held out for validation; no training block reads
them. An entry lives under a hash of everything that decides its content, and is built in a
temporary directory renamed into place, so a half-built entry is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness import synthetic
from harness.data.config import DataConfig, MirrorData, TokenizerConfig
from harness.data.entry import PreparedData, data_card, entry_layout
from harness.data.sources.common import TEXT, read_documents
from harness.data.sources.synthetic import LOGPROB
from harness.data.tokenizer import build_tokenizer, sentence_end_ids, tokenizer_name
from harness.data.tokens import token_dtype, write_shards
from harness.errors import UserError
from harness.synthetic import World, build_world

# Bump when the files an entry holds change meaning, so old entries are not reused.
# 3: tasks/harness_heldout/ holds the validation documents' text (bits per byte).
FORMAT_VERSION = 3
# The held-out text scored for bits per byte: the validation documents, in order, up to this many
# bytes (the whole validation split of the shipped suites).
HELDOUT_MAX_BYTES = 256_000
BASE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")
META = "meta.json"


# ---------------------------------------------------------------- the entry


def prepare(cfg: DataConfig, special_tokens: Sequence[str], cache_root: Path,
            out: Path | None = None) -> PreparedData:
    """The entry for (cfg, special tokens), built first if it does not exist yet.

    It lives in `cache_root/<hash>/`, or in `out` when given (an offline mirror). With source
    "prepared" the directory named by the config is opened as it is: nothing is read or built.
    """
    specials = special_token_order(special_tokens)
    if isinstance(cfg, MirrorData):
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
    # The settings of the source in use only: the others' null sections were never hashed here.
    settings = cfg.model_dump(mode="json")
    content = {"config": settings, "special_tokens": sorted(special_tokens),
               "format": FORMAT_VERSION, "files": cfg.fingerprint(),
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
    layout = entry_layout(out)
    documents = read_documents(cfg, scratch)
    n_train, _ = split_sizes(len(documents), cfg.val_fraction, where=cfg.describe())
    tokenizer = build_tokenizer(cfg.tokenizer, documents.select(range(n_train)), specials)
    tokenizer.save_pretrained(layout["tokenizer_dir"])
    ids, dtype = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}, token_dtype(len(tokenizer))
    train, val = write_shards(documents, n_train, layout["tokenizer_dir"], dtype, ids["[EOS]"],
                              (layout["train_tokens"], layout["val_tokens"]), cfg.num_proc, scratch)
    world = build_world(cfg.synthetic)
    write_task_files(world, cfg.eval_examples, layout["tasks_dir"])
    val_documents = documents.select(range(n_train, len(documents)))
    n_heldout = write_heldout_text(val_documents[TEXT], layout["tasks_dir"])
    prepared = PreparedData(
        **entry_layout(root), dtype=dtype, vocab_size=len(tokenizer),
        n_train_tokens=train.tokens, n_val_tokens=val.tokens, n_val_bytes=val.bytes, special_tokens=ids,
        sentence_end=sentence_end_ids(tokenizer), n_train_documents=train.documents,
        n_val_documents=val.documents, n_train_bytes=train.bytes, source=cfg.describe(),
        tokenizer=tokenizer_name(cfg.tokenizer), val_fraction=cfg.val_fraction,
        entropy_bits_per_byte=_entropy_floor(world, val_documents.select(range(n_heldout))),
        n_heldout_documents=n_heldout)
    meta = {**prepared.to_dict(), "card": data_card(prepared), "key": key, "format": FORMAT_VERSION,
            "config": cfg.identity(mode="json")}
    (out / META).write_text(json.dumps(meta, indent=2))


def _read_meta(root: Path) -> dict:
    return json.loads((Path(root) / META).read_text())


def _load(root: Path) -> PreparedData:
    # Paths are re-derived from where the entry is now, so a moved or mirrored entry still works.
    meta = _read_meta(root)
    return PreparedData.from_dict({**meta, **{k: str(v) for k, v in entry_layout(root).items()}})


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


def _entropy_floor(world: World, heldout) -> float | None:
    """The true entropy of the held-out text in bits per byte, from the log-probabilities the
    generator recorded (which spares parsing each document): the synthetic source only, the
    one whose documents come with them."""
    if LOGPROB not in heldout.column_names:
        return None
    return float(synthetic.entropy_bits_per_byte(world, heldout[TEXT], heldout[LOGPROB]))


def split_sizes(n_documents: int, val_fraction: float, where: str = "the corpus") -> tuple[int, int]:
    """(training, validation) document counts: the last `val_fraction`, at least one each."""
    if n_documents < 2:
        raise UserError(f"{where} holds {n_documents} non-empty document(s); at least 2 are needed "
                        "(one for training, one for validation)", where="data.source")
    n_val = min(max(1, round(n_documents * val_fraction)), n_documents - 1)
    return n_documents - n_val, n_val



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
