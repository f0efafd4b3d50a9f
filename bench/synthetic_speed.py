"""How fast the synthetic world writes its corpus, and what its entropy floor is.

Generates documents of the world until the corpus holds the requested number of whitespace
tokens (10 million by default), in one process on one core, and prints the time, tokens/s,
documents/s, bytes/s and the entropy of the text in bits per byte (from the log-probabilities
recorded while writing). Then it parses a sample of documents back, to show what the exact
log-probability of a document costs when only its text is known.

    python bench/synthetic_speed.py                       # the default world, 10M tokens
    python bench/synthetic_speed.py --tokens 1e6 --entities 400 --richness 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import time


from harness.synthetic import WorldConfig, build_world
from harness.synthetic.entropy import document_logprob
from harness.synthetic.generator import stream

CHUNK = 10_000  # documents between checks of the token count


def generate(cfg: WorldConfig, tokens: int) -> dict:
    start = time.perf_counter()
    world = build_world(cfg)
    built = time.perf_counter()
    drafts = stream(world, seed=0)  # the documents of corpus(world, n, 0)
    n_docs = n_tokens = n_bytes = 0
    nats = 0.0
    while n_tokens < tokens:
        for draft in itertools.islice(drafts, CHUNK):
            text = draft.text()
            n_tokens += len(text.split())
            n_bytes += len(text.encode()) + 1
            nats -= draft.logprob
        n_docs += CHUNK
    seconds = time.perf_counter() - built
    return {"world_s": round(built - start, 3), "seconds": round(seconds, 2), "documents": n_docs,
            "tokens": n_tokens, "bytes": n_bytes, "tokens_per_s": round(n_tokens / seconds),
            "documents_per_s": round(n_docs / seconds), "mb_per_s": round(n_bytes / seconds / 1e6, 2),
            "tokens_per_document": round(n_tokens / n_docs, 1),
            "entropy_bits_per_byte": round(nats / 0.6931471805599453 / n_bytes, 4)}


def parse_cost(cfg: WorldConfig, n: int) -> dict:
    world = build_world(cfg)
    texts = [draft.text() for draft in itertools.islice(stream(world, seed=1), n)]
    start = time.perf_counter()
    for text in texts:
        document_logprob(world, text)
    return {"parse_ms_per_document": round((time.perf_counter() - start) / n * 1000, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=float, default=1e7)
    p.add_argument("--entities", type=int, default=40)
    p.add_argument("--richness", type=int, default=2)
    p.add_argument("--parse", type=int, default=200, help="documents to parse back (0: none)")
    args = p.parse_args()
    cfg = WorldConfig(entities=args.entities, richness=args.richness)
    result = {"entities": cfg.entities, "richness": cfg.richness, **generate(cfg, int(args.tokens))}
    if args.parse:
        result |= parse_cost(cfg, args.parse)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
