"""How large the per-sample records (`eval.log_samples`) are: the figures behind its default.

1. Measured: a small random causal model (the records' size hardly depends on the model) is
   evaluated with the harness's `evaluate_entry` on the synthetic world's tasks and held-out
   text, and the samples files it writes are weighed, raw and gzipped, per document.
2. Estimated: records shaped as lm-eval builds them for MMLU (0-shot and 5-shot: the subject
   header, the question, four choices, four requests) and HellaSwag (context, four endings, the
   preprocessed document), with stand-in English prose of typical lengths taken from the Markdown
   files of the installed packages (real benchmark text compresses somewhat less), and the time to
   write 10,000 HellaSwag-like records.

    python bench/samples_size.py                 # the default world: 40 entities, 200 examples per task
    python bench/samples_size.py --skip-measure  # the estimates only
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from harness.evaluate.samples import encode_samples, samples_dir

TASKS = ["synthetic_hellaswag", "synthetic_mmlu", "synthetic_glue", "synthetic_cola", "synthetic_sst2",
         "synthetic_rte", "harness_heldout"]


def measure(root: Path) -> None:
    import torch
    import transformers

    from harness.data.config import SyntheticData
    from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
    from harness.evaluate.run import evaluate_entry
    from harness.synthetic import WorldConfig

    data = prepare(SyntheticData(synthetic=WorldConfig(entities=40, documents=6000, seed=0), seq_len=128),
                   list(BASE_SPECIAL_TOKENS), root / "data")
    tokenizer = transformers.AutoTokenizer.from_pretrained(data.tokenizer_dir)
    torch.manual_seed(0)
    config = transformers.ModernBertDecoderConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=128, layer_types=["full_attention"] * 2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    transformers.ModernBertDecoderForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    for task in TASKS:
        evaluate_entry(root / "model", "loglikelihood", task, tasks_dir=data.tasks_dir, out_dir=root / "eval")
        path = samples_dir(root / "eval", task) / f"{task}.jsonl.gz"
        raw = gzip.decompress(path.read_bytes())
        n = raw.count(b"\n")
        print(f"{task:<20} {n:>4} documents: {len(raw) / n:>6.0f} B raw, {path.stat().st_size / n:>4.0f} B gzipped per document")


class StandIn:
    """Records shaped as lm-eval's for MMLU and HellaSwag, with stand-in prose."""

    def __init__(self, seed: int = 0):
        site = Path(transformers_site())  # the installed packages' folder: their Markdown files
        prose = " ".join(p.read_text(errors="ignore") for p in sorted(site.rglob("*.md")))
        self.words = [w for w in prose.split() if w.isalpha()]
        self.rng = random.Random(seed)

    def text(self, chars: int) -> str:
        start, out, length = self.rng.randrange(max(1, len(self.words) - 500)), [], 0
        while length < chars:
            out.append(self.words[(start + len(out)) % len(self.words)])
            length += len(out[-1]) + 1
        return " ".join(out)

    def record(self, doc_id: int, doc: dict, context: str, choices: list[str], target, metrics: dict) -> dict:
        sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
        answers = [(self.rng.uniform(-60, -1), False) for _ in choices]
        return {"doc_id": doc_id, "doc": doc, "target": target, "arguments": [(context, c) for c in choices],
                "resps": [[a] for a in answers], "filtered_resps": answers, "filter": "none",
                "metrics": list(metrics), "doc_hash": sha(json.dumps(doc)), "prompt_hash": sha(context),
                "target_hash": sha(str(target)), **metrics}

    def mmlu(self, doc_id: int, shots: list[tuple[str, list[str]]]) -> dict:
        question, choices = self.text(280), [self.text(45) for _ in range(4)]
        prompt = lambda q, ch: q + "\n" + "".join(f"{l}. {c}\n" for l, c in zip("ABCD", ch)) + "Answer:"  # noqa: E731
        context = ("The following are multiple choice questions (with answers) about high school biology.\n\n"
                   + "".join(prompt(q, ch) + " B\n\n" for q, ch in shots) + prompt(question, choices))
        doc = {"question": question, "subject": "high_school_biology", "choices": choices, "answer": 2}
        return self.record(doc_id, doc, context, [" A", " B", " C", " D"], 2, {"acc": 1.0})

    def hellaswag(self, doc_id: int) -> dict:
        ctx_a, ctx_b, endings = self.text(200), self.text(40), [self.text(120) for _ in range(4)]
        query = f"Cooking: {ctx_a} {ctx_b.capitalize()}"
        doc = {"ind": doc_id, "activity_label": "Cooking", "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": f"{ctx_a} {ctx_b}",
               "endings": endings, "source_id": f"activitynet~v_{doc_id}", "split": "val",
               "split_type": "indomain", "label": "1", "query": query, "choices": endings, "gold": 1}
        return self.record(doc_id, doc, query, [" " + e for e in endings], 1, {"acc": 1.0, "acc_norm": 0.0})


def transformers_site() -> str:
    import transformers
    return str(Path(transformers.__file__).resolve().parents[1])


def estimate(n: int = 2000) -> None:
    make = StandIn()
    shots = [(make.text(280), [make.text(45) for _ in range(4)]) for _ in range(5)]
    for name, build, total in (("MMLU 0-shot", lambda i: make.mmlu(i, []), 14_042),
                               ("MMLU 5-shot", lambda i: make.mmlu(i, shots), 14_042),
                               ("HellaSwag", make.hellaswag, 10_042)):
        records = [build(i) for i in range(n)]
        raw = sum(len(json.dumps(r)) + 1 for r in records)
        gz = len(encode_samples(records))
        print(f"{name:<12} {raw / n:>6.0f} B raw, {gz / n:>4.0f} B gzipped per document; "
              f"{total:,} documents: {gz / n * total / 1e6:.1f} MB")
    records = [make.hellaswag(i) for i in range(10_000)]
    start = time.perf_counter()
    encode_samples(records)
    print(f"writing 10,000 HellaSwag-like records: {time.perf_counter() - start:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-measure", action="store_true", help="the estimates only")
    args = parser.parse_args()
    if not args.skip_measure:
        with tempfile.TemporaryDirectory() as tmp:
            measure(Path(tmp))
    estimate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
