"""Data: the suite's source, tokenizer and splits, and (synthetic world) the entropy floor.

The card is harness.data.entry.data_card of the data every run of the suite shares
(SuiteResults.card, from harness.report.collect).
"""

from __future__ import annotations

import pandas as pd

from harness.report.format import markdown_table


def data_table(card: dict | None) -> str:
    """Source, size, tokenizer, validation split and (synthetic world) the entropy floor."""
    if not card:
        return ""
    rows = [{"split": split, "documents": f"{card[f'{split}_documents']:,}", "tokens": f"{card[f'{split}_tokens']:,}",
             "bytes": f"{card[f'{split}_bytes']:,}"} for split in ("train", "val")]
    floor = card.get("entropy_bits_per_byte")
    lines = [f"Source: {card['source']}. Tokenizer: {card['tokenizer']}, vocabulary {card['vocab_size']:,}. "
             f"Validation: the last {card['val_fraction']:.0%} of the documents, read by no training run."]
    if floor is not None:
        lines.append(f"Entropy floor of the held-out text (the generator's true entropy): "
                     f"{floor:.4f} bits/byte; no model's `bits/byte` can be lower on average.")
    if card.get("heldout_documents"):
        lines.append(f"`bits/byte held-out` and this floor are both over the first "
                     f"{card['heldout_documents']:,} validation documents.")
    return "## Data\n\n" + " ".join(lines) + "\n\n" + markdown_table(pd.DataFrame(rows))
