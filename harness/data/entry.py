"""What a prepared data entry holds, as every later layer sees it: the paths of its files and
the facts the plans, the trainer, the report and the data card need. Light on purpose: run
records (harness.jobs) hold one, and reading a record needs neither tokenizers nor transformers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path


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
    """Ids of the tokens that end a sentence; NSP and SOP cut sentences after them."""
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
        paths = entry_layout(Path())
        values = {k: Path(v) if k in paths else v for k, v in d.items() if k in known}
        values["sentence_end"] = tuple(values.get("sentence_end", ()))
        return cls(**values)


def entry_layout(root: Path) -> dict[str, Path]:
    """Where each file of an entry lives."""
    return {"root": root, "tokenizer_dir": root / "tokenizer", "train_tokens": root / "train.bin",
            "val_tokens": root / "val.bin", "tasks_dir": root / "tasks"}


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
