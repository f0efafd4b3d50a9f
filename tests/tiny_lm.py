"""A tiny byte-level BPE tokenizer and model configuration for adapter tests, built offline
from a small templated corpus (names, cities, jobs and true/false claims)."""

from __future__ import annotations

import random

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

MODE, SENTINEL = "[S2S]", "<extra_id_0>"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[EOS]", "[MASK]", "[CLS]", "[SEP]", MODE, SENTINEL]
NAMES, CITIES, JOBS = ["alice", "bob", "carol", "dave"], ["paris", "rome", "oslo", "lima"], ["baker", "farmer", "nurse"]


def corpus(n: int = 150) -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
        lines.append(f"{name} lives in {city} . {name} works as a {job} .")
        lines.append(f"claim : {name} lives in {city} . verdict : {rng.choice(['true', 'false'])} .")
    return lines


def train_tokenizer() -> transformers.PreTrainedTokenizerFast:
    # Byte-level BPE: the space before a word is part of its token, and "é" is two bytes.
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="[EOS]", pad_token="[PAD]", mask_token="[MASK]",
        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    )


def tiny_config(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, layer_types=["full_attention"] * 2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
