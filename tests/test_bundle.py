"""harness.evaluate.bundle: stock lm-eval tasks evaluated offline from a bundle of their data.

The hub cannot be reached here, so a stand-in plays it: small data in the stock tasks' own
schemas, in local directories named like the hub repositories (`cais/mmlu`, `Rowan/hellaswag`,
`nyu-mll/glue`), each with a README whose front matter declares its configs and features as hub
repositories do. With the working directory at the stand-in's root, the real
`datasets.load_dataset("cais/mmlu", "abstract_algebra")` reads them, unchanged. Everything
after that (the bundle, lm-eval's `simple_evaluate` with its `hf` model) is the real code path,
on a tiny causal LM built here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
import transformers
import yaml
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from harness.errors import UserError
from harness.evaluate.bundle import bundle_include, bundle_tasks, make_bundle
from stock_hub import HELLASWAG_QUERY, HELLASWAG_ROW, MMLU_SUBJECTS, STOCK, write_stock_hub

@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[Path, dict]:
    """The stand-in hub's root, and the rows it holds: {task: {split: rows}}."""
    root = tmp_path_factory.mktemp("hub")
    return root, write_stock_hub(root)


@pytest.fixture(scope="module")
def bundle(hub, tmp_path_factory) -> Path:
    """mmlu (a group of groups of tags), hellaswag, sst2 and mnli, bundled from the stand-in hub."""
    root, out = hub[0], tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))
        lines = []
        make_bundle(["mmlu", "hellaswag", "sst2", "mnli"], out, progress=lines.append)
    assert len(lines) == len(MMLU_SUBJECTS) + 3 and any(line.startswith("hellaswag:") for line in lines)
    return out


@pytest.fixture(scope="module")
def model_dir(hub, tmp_path_factory) -> Path:
    """A tiny causal LM, from scratch, with a byte-level BPE tokenizer trained on the rows."""
    text = [json.dumps(row) for splits in hub[1].values() for rows in splits.values() for row in rows]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[EOS]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="[EOS]",
                                                     pad_token="[PAD]", unk_token="[UNK]")
    eos = tokenizer.eos_token_id
    config = transformers.ModernBertDecoderConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, layer_types=["full_attention"] * 2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, bos_token_id=eos, cls_token_id=eos, sep_token_id=eos)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    transformers.ModernBertDecoderForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def evaluate(bundle_dir: Path, model_dir: Path, tasks: list[str]) -> dict:
    """lm-eval's own `simple_evaluate` and `hf` model, on tasks found only in the bundle."""
    manager = TaskManager(include_path=str(bundle_include(bundle_dir)), include_defaults=False)
    eos = transformers.AutoTokenizer.from_pretrained(model_dir).eos_token_id
    return simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32", "add_bos_token": False,
                                "prefix_token_id": eos},
        tasks=tasks, task_manager=manager, batch_size=32, device="cpu", log_samples=True, random_seed=0)


def test_manifest_records_stock_yamls_splits_rows_and_hashes(bundle, hub):
    rows = hub[1]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["requested"] == ["mmlu", "hellaswag", "sst2", "mnli"]
    assert set(manifest["groups"]) == {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    assert manifest["groups"]["mmlu"]["yaml"] == "mmlu/default/_mmlu.yaml"
    tasks = manifest["tasks"]
    assert set(tasks) == {f"mmlu_{s}" for s in MMLU_SUBJECTS} | {"hellaswag", "sst2", "mnli"}
    assert tasks["hellaswag"]["yaml"] == "hellaswag/hellaswag.yaml"
    assert tasks["mmlu_anatomy"]["dataset_name"] == "anatomy"
    # Only the splits each stock task reads: MMLU test + few-shot dev, MNLI's validation_matched.
    assert set(tasks["mmlu_anatomy"]["splits"]) == {"test", "dev"}
    assert set(tasks["hellaswag"]["splits"]) == {"train", "validation"}
    assert set(tasks["mnli"]["splits"]) == {"train", "validation_matched"}
    for name, entry in tasks.items():
        for split, record in entry["splits"].items():
            assert record["file"] == f"data/{name}/{split}.parquet"
            assert record["rows"] == len(rows[name][split])
            assert record["sha256"] == hashlib.sha256((bundle / record["file"]).read_bytes()).hexdigest()
    assert bundle_tasks(bundle)[:4] == ["mmlu", "hellaswag", "sst2", "mnli"]
    assert set(bundle_tasks(bundle)) == set(manifest["requested"]) | set(tasks) | set(manifest["groups"])


def test_parquet_keeps_rows_and_schema(bundle, hub, tmp_path):
    def read(relative: str) -> datasets.Dataset:
        return datasets.Dataset.from_parquet(str(bundle / relative), cache_dir=str(tmp_path))

    sst2 = read("data/sst2/validation.parquet")
    assert sst2.features["label"] == datasets.ClassLabel(names=["negative", "positive"])
    assert sst2.to_list() == hub[1]["sst2"]["validation"]
    hellaswag = read("data/hellaswag/validation.parquet")
    assert hellaswag.to_list() == hub[1]["hellaswag"]["validation"]


def test_stock_tasks_evaluate_from_the_bundle(bundle, hub, model_dir):
    rows = hub[1]
    results = evaluate(bundle, model_dir, ["mmlu", "hellaswag", "sst2", "mnli"])
    for name in ["mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_anatomy", "hellaswag", "sst2", "mnli"]:
        assert 0 <= results["results"][name]["acc,none"] <= 1
    evaluated = {"hellaswag": "validation", "sst2": "validation", "mnli": "validation_matched"}
    evaluated |= {f"mmlu_{subject}": "test" for subject in MMLU_SUBJECTS}
    for name, split in evaluated.items():
        assert results["n-samples"][name]["effective"] == len(rows[name][split])

    # HellaSwag: the stock process_docs ran on the stored row.
    sample = next(s for s in results["samples"]["hellaswag"] if s["doc"]["ind"] == HELLASWAG_ROW["ind"])
    assert [context for context, _ in sample["arguments"]] == [HELLASWAG_QUERY] * 4
    assert [ending for _, ending in sample["arguments"]] == [" " + e for e in HELLASWAG_ROW["endings"]]
    # MMLU: the stock description and A-D prompt around the stored question.
    row = rows["mmlu_abstract_algebra"]["test"][0]
    context = results["samples"]["mmlu_abstract_algebra"][0]["arguments"][0][0]
    assert context == ("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                       f"{row['question']}\nA. {row['choices'][0]}\nB. {row['choices'][1]}\n"
                       f"C. {row['choices'][2]}\nD. {row['choices'][3]}\nAnswer:")
    # MNLI: the stock utils.doc_to_text.
    premise = rows["mnli"]["validation_matched"][0]["premise"]
    assert results["samples"]["mnli"][0]["arguments"][0][0].startswith(f"{premise}\nQuestion: ")


def test_bundle_survives_a_move(bundle, hub, model_dir, tmp_path):
    moved = shutil.copytree(bundle, tmp_path / "elsewhere" / "bundle")
    include = bundle_include(moved)
    texts = {path.name: path.read_text() for path in include.glob("*.yaml")}
    assert len(texts) == len(MMLU_SUBJECTS) + 3 + 5
    assert all(str(bundle) not in text for text in texts.values())
    hellaswag = yaml.safe_load(texts["hellaswag.yaml"])
    assert hellaswag["include"] == str(STOCK.resolve() / "hellaswag" / "hellaswag.yaml")
    assert hellaswag["dataset_kwargs"]["data_files"]["validation"] == str(moved / "data/hellaswag/validation.parquet")

    stamps = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in include.glob("*.yaml")}
    bundle_include(moved)  # nothing changed: nothing rewritten
    assert stamps == {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in include.glob("*.yaml")}

    results = evaluate(moved, model_dir, ["hellaswag", "sst2"])
    assert results["n-samples"]["sst2"]["effective"] == len(hub[1]["sst2"]["validation"])


def test_changed_data_file_is_refused(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    data = copy / "data/sst2/validation.parquet"
    payload = bytearray(data.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    data.write_bytes(bytes(payload))
    with pytest.raises(UserError, match="sha256") as error:
        bundle_include(copy)
    assert error.value.where == str(data)


@pytest.mark.parametrize("manifest", [None, "{not json", '{"format": 1}'])
def test_missing_or_corrupt_manifest_is_refused(tmp_path, manifest):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(UserError, match="harness eval bundle TASKS --out DIR") as error:
        bundle_include(tmp_path)
    assert error.value.where == str(tmp_path / "manifest.json")


def test_unknown_name_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(UserError, match="did you mean 'hellaswag'"):
        make_bundle(["helaswag"], tmp_path)


def test_without_the_hub_the_dataset_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stand-in repositories here
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    with pytest.raises(UserError, match="Rowan/hellaswag.*needs the network") as error:
        make_bundle(["hellaswag"], tmp_path / "out")
    assert error.value.where == "hellaswag"
    assert not (tmp_path / "out" / "manifest.json").exists()
