"""Corpus, tokenizer and token files shared by every run of a suite.

`prepare` turns the suite's `data` section and the special tokens of all its objectives into one
directory, built once and reused by every run (a cache entry, or an offline mirror):

    <root>/tokenizer/            a Hugging Face fast tokenizer (AutoTokenizer loads it)
    <root>/train.bin, val.bin    token ids (uint16 where the vocabulary fits, else uint32),
                                 documents packed, each ended by [EOS]; read through np.memmap
    <root>/tasks/<task>/{train,validation,test}.jsonl   evaluation rows on the synthetic world
    <root>/tasks/harness_heldout/validation.jsonl       held-out text (bits per byte)
    <root>/meta.json             `PreparedData`, its data card and its settings, written last

The modules, from the settings down to the blocks a worker reads:

    config.py      the `data` section: `DataConfig`, one class per source, and the tokenizer's
    sources/       one module per source: its settings section, reading, fingerprint
    tokenizer.py   training, loading and wrapping tokenizers; the ids that end a sentence
    tokens.py      tokenizing with `datasets.map` and writing the token files
    prepare.py     the entry: its cache key, atomic build, meta.json, task files, data card
    sampler.py     `BlockSampler`: blocks of a token file as a pure function of (seed, step,
                   micro batch, rank), so a resumed run reads what an uninterrupted one would

config.py and sources/ import neither torch, transformers nor datasets: the suite schema
imports them.
"""
