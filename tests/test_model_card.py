"""Model cards (harness.export.card), `harness export` (harness.export.share), and what train.json
records of the environment (harness.provenance) as the report shows it.

Runs are written by hand (tests/test_report.py), some with a real model folder: a tiny ModernBERT
decoder built as the harness builds it, saved with its tokenizer, that transformers loads back.
(tests/test_train.py checks what a real training writes into train.json.) The Hub is a network
service: uploads go to a stand-in HfApi that records what it was given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import ModelCard

from harness import provenance
from harness.cli import main
from harness.errors import UserError
from harness.export import share
from harness.export.card import CARD_NAME, card_text, eval_results, usage_of, write_card, write_cards
from harness.report import write_report
from harness.results import RunDir, write_json
from test_report import lm_eval_file, prepared_data, write_plan, write_run


@pytest.fixture(scope="module")
def saved_decoder(tiny_data, tmp_path_factory) -> Path:
    """A tiny decoder and its tokenizer, saved as a run's model/ folder is."""
    from harness.data.tokenizer import load_tokenizer
    from harness.models.families import build_model
    from harness.models.sizes import SIZES

    folder = tmp_path_factory.mktemp("decoder")
    model = build_model("decoder", SIZES["tiny"], vocab_size=tiny_data.vocab_size,
                        special=tiny_data.special_tokens, max_len=32)
    model.save_pretrained(folder)
    load_tokenizer(tiny_data.tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def finished_run(saved_decoder, tmp_path) -> Path:
    """A clm run with every kind of result (test_report.write_run), this process's environment in
    its train.json, and the saved decoder as its model."""
    run = write_run(tmp_path / "cards", "clm", 0, prepared_data(tmp_path / "data"))
    shutil.copytree(saved_decoder, run / "model")
    train = json.loads((run / "train.json").read_text())
    write_json(run / "train.json", train | {"environment": provenance.environment(),
                                            "deepspeed_config": {"zero_optimization": {"stage": 2}}})
    return run


def test_the_card_carries_every_result_with_its_scoring_and_the_folder_loads(finished_run):
    from transformers import AutoModelForCausalLM

    write_report(finished_run.parent, "Cards")
    assert write_cards(finished_run.parent) == [finished_run / "model" / CARD_NAME]
    card = ModelCard.load(finished_run / "model" / CARD_NAME)
    results = {(r.dataset_type, r.metric_type): r for r in card.data.eval_results}
    tasks = ("synthetic_cola", "synthetic_glue", "synthetic_mmlu", "synthetic_rte", "synthetic_sst2")
    assert set(results) == {*((task, "acc") for task in tasks), ("synthetic_hellaswag", "acc"),
                            ("synthetic_hellaswag", "acc_norm"), ("harness_heldout", "bits_per_byte"),
                            ("harness_heldout", "byte_perplexity"), ("harness_heldout", "word_perplexity"),
                            ("synthetic_sst2", "mcc"), ("synthetic_cola", "mcc")}  # fine-tuning: acc and mcc
    assert results["synthetic_glue", "acc"].metric_value == 0.60
    assert results["synthetic_glue", "acc"].metric_config == "loglikelihood"  # the scoring method
    assert results["synthetic_sst2", "mcc"].task_type == "text-classification"
    assert results["synthetic_sst2", "mcc"].metric_config == "last-token head"
    assert results["synthetic_sst2", "mcc"].dataset_split == "validation"
    assert card.data.model_name == finished_run.name and card.data.pipeline_tag == "text-generation"
    train = json.loads((finished_run / "train.json").read_text())
    facts = card.data.harness
    assert (facts["objective"], facts["size"], facts["seed"], facts["steps"]) == ("clm", "mini", 0, 100)
    assert (facts["params"], facts["flops"], facts["commit"]) == (train["params"], train["flops_spent"],
                                                                  provenance.commit()["commit"])
    assert "| zero-shot | synthetic_glue | acc | 0.6000 | 0.0200 | 0.5 | loglikelihood | 0 |" in card.text
    assert "| fine-tuning (median of 3 seeds, validation split) | synthetic_sst2 | acc | 0.8000 |" in card.text
    assert "AutoModelForCausalLM.from_pretrained" in card.text and "synthetic world" in card.text
    assert AutoModelForCausalLM.from_pretrained(finished_run / "model").config.model_type == "modernbert-decoder"

    report = (finished_run.parent / "report.md").read_text()
    environment = report.split("## Environment", 1)[1].split("\n## ", 1)[0]
    assert f"harness {provenance.harness_version()}" in environment
    assert f"torch {train['environment']['versions']['torch']}" in environment
    sha = train["environment"]["commit"]
    assert ("commit unknown" if sha == "unknown" else f"commit `{sha[:12]}`") in environment


def test_an_export_copies_the_folder_with_its_card_and_loads(finished_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "export"
    files = share.export_run(finished_run, out)
    model_files = sorted(p.relative_to(finished_run / "model") for p in (finished_run / "model").iterdir())
    assert files == sorted({*model_files, Path(CARD_NAME)})
    assert (out / CARD_NAME).read_text() == card_text(finished_run)
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(AutoTokenizer.from_pretrained(out))
    share.export_run(finished_run, out)  # an earlier export is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cards", "export"]  # no staging folder left


# --- runs written by hand --------------------------------------------------------------------------


def _environment(sha: str, torch: str) -> dict:
    return {"versions": {"python": "3.11.7", "harness": "0.1.0", "torch": torch}, "commit": sha, "dirty": False,
            "hardware": {"platform": "Linux x86_64", "cpu": "AMD EPYC", "cpus": 8, "gpus": ["NVIDIA H100", "NVIDIA H100"]}}


def test_the_environment_section_has_one_line_per_environment_and_summary_csv_is_unchanged(tmp_path):
    suite, data = tmp_path / "demo", prepared_data(tmp_path / "data")
    runs = [write_run(suite, "clm", seed, data) for seed in range(3)] + [write_run(suite, "mlm", 0, data)]
    csv_before = write_report(suite, "Demo")[0].read_text()  # train.json without environment
    for run, environment in zip(runs[:3], [_environment("a" * 40, "2.13.0"), _environment("a" * 40, "2.13.0"),
                                           _environment("b" * 40, "2.12.1")]):
        train = json.loads((run / "train.json").read_text())
        write_json(run / "train.json", train | {"environment": environment,
                                                "deepspeed_config": {"zero_optimization": {"stage": 2}}})
    csv_path, md_path = write_report(suite, "Demo")
    assert pd.read_csv(csv_path).columns.tolist() == pd.read_csv(pd.io.common.StringIO(csv_before)).columns.tolist()
    assert csv_path.read_text() == csv_before
    section = md_path.read_text().split("## Environment\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(lines) == 3
    assert lines[0].startswith(f"- 2 runs (`{runs[0].name}`, `{runs[1].name}`): harness 0.1.0, commit `aaaaaaaaaaaa`;")
    assert "python 3.11.7, torch 2.13.0; Linux x86_64, AMD EPYC, 8 logical CPUs, 2 x NVIDIA H100." in lines[0]
    assert lines[1].startswith(f"- 1 run (`{runs[2].name}`): harness 0.1.0, commit `bbbbbbbbbbbb`;")
    assert lines[2] == f"- 1 run (`{runs[3].name}`): not recorded (trained before the harness recorded its environment)"
    assert md_path.read_text().index("## Environment") > md_path.read_text().index("## Reading this report")


def _model_folder(run: Path, export: dict | None) -> None:
    write_json(run / "model" / "config.json", {"model_type": "modernbert"} | ({"harness_export": export} if export else {}))


def test_cards_are_deterministic_rewritten_with_new_results_and_written_by_harness_report(tmp_path):
    suite, data = tmp_path / "demo", prepared_data(tmp_path / "data")
    run = write_run(suite, "mlm", 0, data)
    write_run(suite, "mlm", 1, data)  # no model folder: no card
    old = write_run(suite, "clm", 0, data)  # trained for settings the suite no longer plans: left alone
    for each in (run, old):
        _model_folder(each, None)
    write_json(suite / "suite.json", {"name": "demo", "runs": sorted(p.name for p in suite.iterdir() if p != old)})
    assert main(["report", str(suite)]) == 0
    path = run / "model" / CARD_NAME
    first, stamp = path.read_bytes(), path.stat().st_mtime_ns
    assert write_card(run) == path and path.read_bytes() == first and path.stat().st_mtime_ns == stamp  # unchanged
    assert [card.parent.parent for card in suite.glob("*/model/README.md")] == [run]
    card = ModelCard.load(path)
    assert card.data.pipeline_tag == "fill-mask" and "AutoModelForMaskedLM" in card.text
    assert {r.metric_config for r in card.data.eval_results} == {"pseudo-loglikelihood", "encoder-mean head"}
    write_json(run / "eval" / "synthetic_rte.json",
               lm_eval_file("synthetic_rte", "synthetic_rte", "pseudo-loglikelihood", {"acc": 0.61}, 0.5))
    assert main(["report", str(suite)]) == 0
    assert ("synthetic_rte", 0.61) in {(r.dataset_type, r.metric_value) for r in ModelCard.load(path).data.eval_results}
    assert "| zero-shot | synthetic_rte | acc | 0.6100 |" in path.read_text()


def test_the_card_follows_harness_export_and_falls_back_on_the_architecture(tmp_path):
    data = prepared_data(tmp_path / "data")
    prefix = write_run(tmp_path / "demo", "clm", 0, data)
    export = {"format": 1, "objective": "prefix_lm", "auto_class": "AutoModelForCausalLM", "trust_remote_code": False,
              "scoring": "prefix-loglikelihood", "attention": "prefix", "mode_token": "[S2S]",
              "heads": {"pair_head": {"file": "pair_head.safetensors", "labels": {"0": "in order"}}},
              "use": "Give the context as a bidirectional prefix."}
    _model_folder(prefix, export)
    text = card_text(prefix, repo_id="someone/prefix-model")
    assert 'AutoModelForCausalLM.from_pretrained("someone/prefix-model")' in text and "trust_remote_code" not in text
    assert "Scored by `prefix-loglikelihood`. Give the context as a bidirectional prefix." in text
    assert "Attention: `prefix`, mode token `[S2S]` first in the context." in text
    assert 'Extra head `pair_head`: `{"file": "pair_head.safetensors", "labels": {"0": "in order"}}`.' in text
    assert "load_exported" in text
    expected = {"clm": ("AutoModelForCausalLM", False), "mlm": ("AutoModelForMaskedLM", False),
                "electra": ("AutoModelForTokenClassification", False), "span_corruption": ("AutoModelForSeq2SeqLM", True)}
    for objective, (auto_class, remote) in expected.items():
        plan = write_plan(tmp_path / "plans" / objective, objective, 0, data)
        usage = usage_of(plan, tmp_path / "nowhere")
        assert (usage["auto_class"], usage["trust_remote_code"], usage["scoring"]) == (auto_class, remote, plan.scoring)
    run = write_run(tmp_path / "other", "clm", 0, data)
    write_json(run / "eval" / "broken.json", {"results": {}})
    with pytest.raises(UserError, match="harness' block"):
        eval_results(RunDir(run))


# --- harness export: refusals and the push ------------------------------------------------------------


class FakeHub:
    """Stands in for huggingface_hub.HfApi (a network service): records what would be sent."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
        FakeHub.calls.append(("create_repo", repo_id, private, self.token))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        FakeHub.calls.append(("upload_folder", repo_id, files, commit_message))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(share, "HfApi", FakeHub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", "/nonexistent/hf-token")
    FakeHub.calls = []
    return FakeHub


def _finished_run(tmp_path: Path) -> Path:
    run = write_run(tmp_path / "demo", "clm", 0, prepared_data(tmp_path / "data"))
    _model_folder(run, None)
    (run / "model" / "model.safetensors").write_bytes(b"weights")  # copied, never read here
    return run


def test_push_uploads_the_export_with_its_card(tmp_path, hub, monkeypatch, capsys):
    run = _finished_run(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--push", "someone/tiny-clm", "--private"]) == 0
    (_, repo, private, token), (_, uploaded_repo, files, message) = hub.calls
    assert (repo, private, token, uploaded_repo) == ("someone/tiny-clm", True, "hf_test", "someone/tiny-clm")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"] and files["model.safetensors"] == b"weights"
    assert 'from_pretrained("someone/tiny-clm")' in files["README.md"].decode() and run.name in message
    assert "exported 3 files" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["no token", "offline", "bad repo id"])
def test_a_push_that_cannot_happen_is_one_error_and_writes_nothing(tmp_path, hub, monkeypatch, problem):
    run, out = _finished_run(tmp_path), tmp_path / "out"
    repo = "not a repo id!" if problem == "bad repo id" else "someone/tiny"
    if problem != "no token":
        monkeypatch.setenv("HF_TOKEN", "hf_test")
    if problem == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        share.export_run(run, out, push=repo)
    assert error.value.where == "--push"
    assert {"no token": "no Hugging Face token", "offline": "HF_HUB_OFFLINE",
            "bad repo id": "not a Hub repository id"}[problem] in error.value.message
    assert not out.exists() and not hub.calls and [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_export_refuses_a_folder_it_would_clobber(tmp_path, capsys):
    run = _finished_run(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for out in (foreign, run / "model", run, run / "model" / "inside"):
        with pytest.raises(UserError):
            share.export_run(run, out)
    assert (foreign / "notes.txt").read_text() == "keep me" and not (run / "model" / "inside").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--private"]) == 2
    assert "--push" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (run / "model" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="pickle"):
        share.export_run(run, tmp_path / "y")
