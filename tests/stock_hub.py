"""A stand-in for the Hugging Face hub, for tests: small data in the stock lm-eval tasks' own
schemas, in local directories named like the hub repositories (`cais/mmlu`, `Rowan/hellaswag`,
`nyu-mll/glue`), each with a README whose front matter declares its configs and features as hub
repositories do. With the working directory at the root, the real
`datasets.load_dataset("cais/mmlu", "abstract_algebra")` reads them, unchanged.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lm_eval.tasks
import yaml

STOCK = Path(lm_eval.tasks.__file__).resolve().parent
MMLU_SUBJECTS = sorted(yaml.safe_load(path.read_text())["dataset_name"]
                       for path in (STOCK / "mmlu" / "default").glob("mmlu_*.yaml"))
WORDS = "the a cat dog bread river stone green quick slow large small runs makes sees holds".split()

# One HellaSwag row written out, with what lm-eval's stock preprocessing makes of it: " [title]"
# becomes ". ", other [bracketed] markers go, double spaces close up, ctx_b is capitalized.
HELLASWAG_ROW = {
    "ind": 7, "activity_label": "Baking", "ctx_a": "How to bake bread [title] Mix the flour. [step] Let it rest.",
    "ctx_b": "then knead the dough", "ctx": "How to bake bread [title] Mix the flour. [step] Let it rest. then knead the dough",
    "endings": ["for ten minutes.", "with a stone.", "in the river.", "and sing."], "source_id": "wikihow~1",
    "split": "val", "split_type": "indomain", "label": "0",
}
HELLASWAG_QUERY = "Baking: How to bake bread. Mix the flour. Let it rest. Then knead the dough"

STRING, INT, LIST = {"dtype": "string"}, {"dtype": "int32"}, {"list": "string"}


def labels(*names: str) -> dict:
    return {"dtype": {"class_label": {"names": dict(enumerate(names))}}}


SCHEMAS = {  # the hub datasets' features, as their READMEs declare them
    "mmlu": {"question": STRING, "subject": STRING, "choices": LIST, "answer": labels(*"ABCD")},
    "hellaswag": {"ind": INT, "activity_label": STRING, "ctx_a": STRING, "ctx_b": STRING, "ctx": STRING,
                  "endings": LIST, "source_id": STRING, "split": STRING, "split_type": STRING, "label": STRING},
    "sst2": {"sentence": STRING, "label": labels("negative", "positive"), "idx": INT},
    "mnli": {"premise": STRING, "hypothesis": STRING, "label": labels("entailment", "neutral", "contradiction"),
             "idx": INT},
}


def sentence(rng: random.Random, n: int = 5) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def mmlu_rows(rng, subject: str, n: int) -> list[dict]:
    return [{"question": sentence(rng), "subject": subject, "choices": [sentence(rng, 2) for _ in range(4)],
             "answer": rng.randrange(4)} for _ in range(n)]


def hellaswag_rows(rng, n: int) -> list[dict]:
    rows = [dict(HELLASWAG_ROW)]
    for i in range(1, n):
        ctx_a, ctx_b = sentence(rng), sentence(rng, 3).lower()
        rows.append({**HELLASWAG_ROW, "ind": i, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": f"{ctx_a} {ctx_b}",
                     "endings": [sentence(rng, 3) for _ in range(4)], "label": str(rng.randrange(4))})
    return rows


def glue_rows(rng, task: str, n: int, labelled: bool) -> list[dict]:
    classes = 2 if task == "sst2" else 3
    fields = ["sentence"] if task == "sst2" else ["premise", "hypothesis"]
    return [{**{field: sentence(rng) for field in fields}, "label": rng.randrange(classes) if labelled else -1, "idx": i}
            for i in range(n)]


def write_repo(root: Path, repo_id: str, configs: dict[str, dict[str, list[dict]]], schema_of) -> None:
    """A dataset repository laid out as on the hub: README front matter naming each config's
    splits (data_files) and features, rows in JSON Lines."""
    repo = root / repo_id
    meta = {"configs": [], "dataset_info": []}
    for config, splits in configs.items():
        for split, rows in splits.items():
            path = repo / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        meta["configs"].append({"config_name": config, "data_files": [
            {"split": split, "path": f"{config}/{split}.jsonl"} for split in splits]})
        meta["dataset_info"].append({"config_name": config, "features": [
            {"name": name, **feature} for name, feature in schema_of(config).items()]})
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n")


def write_stock_hub(root: Path, seed: int = 0) -> dict:
    """Write the stand-in hub under `root`: cais/mmlu (every subject), Rowan/hellaswag and
    nyu-mll/glue (sst2, mnli). Returns the rows it holds: {task: {split: rows}}."""
    rng = random.Random(seed)
    mmlu = {subject: {"test": mmlu_rows(rng, subject, 2), "validation": mmlu_rows(rng, subject, 1),
                      "dev": mmlu_rows(rng, subject, 2)} for subject in MMLU_SUBJECTS}
    hellaswag = {"default": {"train": hellaswag_rows(rng, 3), "validation": hellaswag_rows(rng, 5),
                             "test": hellaswag_rows(rng, 2)}}
    glue = {"sst2": {"train": glue_rows(rng, "sst2", 4, True), "validation": glue_rows(rng, "sst2", 6, True),
                     "test": glue_rows(rng, "sst2", 2, False)},
            "mnli": {split: glue_rows(rng, "mnli", n, not split.startswith("test")) for split, n in [
                ("train", 4), ("validation_matched", 5), ("validation_mismatched", 3),
                ("test_matched", 2), ("test_mismatched", 2)]}}
    write_repo(root, "cais/mmlu", mmlu, lambda config: SCHEMAS["mmlu"])
    write_repo(root, "Rowan/hellaswag", hellaswag, lambda config: SCHEMAS["hellaswag"])
    write_repo(root, "nyu-mll/glue", glue, lambda config: SCHEMAS[config])
    rows = {f"mmlu_{subject}": splits for subject, splits in mmlu.items()}
    return rows | {"hellaswag": hellaswag["default"], **glue}


