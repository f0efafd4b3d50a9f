"""How fast the data layer is: tokenization throughput, and blocks delivered against blocks trained on.

Two measurements, each side by side in one process on the same text:

1. Tokenization: the documents of a synthetic corpus (a few MB) go through the path `prepare`
   takes (`datasets.map(batched=True, num_proc=N)` with the suite's trained BPE tokenizer, then
   the token file written). Runs with 1 and 2 processes alternate, and the
   median of each is reported in MB/s and tokens/s. The tokenizer's own threads are off
   (TOKENIZERS_PARALLELISM=false), so N processes use N cores.
2. Loading against training: the data loader's blocks/s (BlockSampler.batch plus the `mlm`
   objective's transform, the work a worker does per micro-step) against the blocks/s a `tiny`
   model trains on in one process (forward, backward and an AdamW step, on the same batches).
   Loading and training alternate step by step, so both see the same load on a shared machine.
   The loader must be at least 10x faster, so it never holds training up.

    python bench/data_throughput.py                       # 4 MB, batch 16 x 128
    python bench/data_throughput.py --megabytes 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before tokenizers is imported: 1 process, 1 core

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402

from harness.data.config import TokenizerConfig  # noqa: E402
from harness.data.prepare import BASE_SPECIAL_TOKENS, special_token_order  # noqa: E402
from harness.data.sampler import BlockSampler  # noqa: E402
from harness.data.tokenizer import build_tokenizer, load_tokenizer  # noqa: E402
from harness.data.tokens import token_dtype, tokenize, write_split  # noqa: E402
from harness.models.families import model_factory  # noqa: E402
from harness.models.sizes import SIZES  # noqa: E402
from harness.runtime import quiet  # noqa: E402
from harness.synthetic import WorldConfig, build_world, corpus  # noqa: E402
from objectives.base import Vocab  # noqa: E402
from objectives.mlm import MaskedLM  # noqa: E402

SPECIALS = [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]", "[SEP]"]
BYTES_PER_DOCUMENT = 170  # about, in the synthetic world; only sizes the corpus


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cores} usable{load}), torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, datasets {datasets.__version__}, "
            f"tokenizers {tokenizers.__version__}")


@dataclass(frozen=True)
class Corpus:
    documents: datasets.Dataset
    tokenizer_dir: Path
    dtype: str
    eos: int


def make_corpus(megabytes: float, work: Path) -> Corpus:
    """About `megabytes` of synthetic text, and the suite tokenizer (BPE, 1024) trained on it."""
    world = build_world(WorldConfig(entities=400, seed=0))
    texts = corpus(world, int(megabytes * 1e6 / BYTES_PER_DOCUMENT), seed=0)
    documents = datasets.Dataset.from_dict({"text": texts})
    settings = TokenizerConfig(vocab_size=1024, sample_documents=20_000)
    tokenizer = build_tokenizer(settings, documents, special_token_order(SPECIALS))
    tokenizer.save_pretrained(work / "tokenizer")
    return Corpus(documents, work / "tokenizer", token_dtype(len(tokenizer)),
                  tokenizer.convert_tokens_to_ids("[EOS]"))


def tokenize_once(c: Corpus, num_proc: int, out: Path) -> tuple[float, int]:
    """(seconds, tokens) of tokenizing the corpus with `num_proc` processes and writing its
    token file into `out` (fresh, so that datasets cannot answer from a cache)."""
    start = time.perf_counter()
    tokenized = tokenize(c.documents, c.tokenizer_dir, c.dtype, c.eos, num_proc, out)
    stats = write_split(tokenized, out / "train.bin")
    return time.perf_counter() - start, stats.tokens


def tokenization(c: Corpus, repeats: int, work: Path) -> dict:
    """{processes: (MB/s, tokens/s)}, medians over `repeats` alternating runs."""
    n_bytes = sum(len(t.encode()) for t in c.documents["text"])
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):  # alternate, so both see the same machine load
        for n in times:
            seconds, n_tokens = tokenize_once(c, n, Path(tempfile.mkdtemp(dir=work)))
            times[n].append(seconds)
    return {n: (n_bytes / 1e6 / statistics.median(t), n_tokens / statistics.median(t))
            for n, t in times.items()}


def loader_and_trainer(tokens_path: Path, dtype: str, vocab: Vocab, batch: int, seq_len: int,
                       steps: int, loads_per_step: int = 20) -> tuple[float, float]:
    """(loader blocks/s, training blocks/s) of MLM on the same batches. Loading and training
    alternate step by step, so that both see the same load on a shared machine."""
    objective = MaskedLM(MaskedLM.Config(), vocab)
    sampler = BlockSampler(tokens_path, dtype, objective.block_length(seq_len), seed=0)
    model = objective.build_model(model_factory(SIZES["tiny"], vocab_size=vocab.size, special=vocab.special,
                                                max_len=seq_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_s = train_s = 0.0
    for step in range(steps + 2):  # the first two warm up
        start = time.perf_counter()
        batches = [objective.transform(sampler.batch(step * loads_per_step + i, 0, 0, batch),
                                       np.random.default_rng([step, i])) for i in range(loads_per_step)]
        loaded = time.perf_counter()
        _train_step(objective, model, optimizer, batches[0])
        if step >= 2:
            load_s, train_s = load_s + loaded - start, train_s + time.perf_counter() - loaded
    return steps * loads_per_step * batch / load_s, steps * batch / train_s


def _train_step(objective, model, optimizer, batch: dict) -> None:
    loss, _ = objective.loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megabytes", type=float, default=4.0, help="text to tokenize (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="tokenization runs per process count")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp, quiet():
        work = Path(tmp)
        c = make_corpus(args.megabytes, work)
        speed = tokenization(c, args.repeats, work)
        n_bytes = sum(len(t.encode()) for t in c.documents["text"])
        print(f"\ntokenization of {n_bytes / 1e6:.1f} MB ({len(c.documents):,} documents), datasets.map "
              f"+ token file, median of {args.repeats}:")
        print(f"{'processes':>9} {'MB/s':>8} {'tokens/s':>12} {'speed-up':>9}")
        for n, (mb_s, tokens_s) in speed.items():
            print(f"{n:>9} {mb_s:>8.2f} {tokens_s:>12,.0f} {mb_s / speed[1][0]:>9.2f}")
        tokenize_once(c, 1, work / "final")
        tokenizer = load_tokenizer(c.tokenizer_dir)
        vocab = Vocab(len(tokenizer), {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS})
        loader, trainer = loader_and_trainer(work / "final" / "train.bin", c.dtype, vocab, args.batch,
                                             args.seq_len, args.steps)
    print(f"\nMLM blocks of {args.seq_len} tokens, batch {args.batch}, one process:")
    print(f"  data loader (BlockSampler.batch + MaskedLM.transform): {loader:>10,.0f} blocks/s")
    print(f"  training, tiny model (forward + backward + AdamW):   {trainer:>10,.0f} blocks/s")
    print(f"  ratio loader / training: {loader / trainer:.1f}x (required: >= 10x) "
          f"{'OK' if loader >= 10 * trainer else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
