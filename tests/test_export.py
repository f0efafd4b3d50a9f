"""Exported models of real tiny runs of all nine objectives: each loads with plain transformers in
an interpreter where this project cannot be imported, as its config.json's `harness_export`
says, and harness.export.loader scores each one as the harness's own evaluation does."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

import harness.export.loader
import harness.plan
from conftest import split_tokens
from harness.errors import UserError
from harness.evaluate.weights import safetensors_weights
from harness.export.loader import load_exported
from harness.models.families import build_model
from harness.models.sizes import SIZES
from harness.plan import plan_suite, vocab_of
from harness.schema import Suite
from children import spawn
from isolated import run_isolated
from objectives import registry

SEQ_LEN = 64  # the every_objective_data corpus's
USAGE_KEYS = {"format", "objective", "auto_class", "trust_remote_code", "scoring", "attention", "mode_token",
              "heads", "use", "seq_len", "scoring_args"}


def _suite() -> Suite:
    """Every registered objective, tiny, trained for about three optimizer steps of 4 x 64 tokens."""
    return Suite.model_validate({
        "name": "export", "objectives": registry.names(), "sizes": ["tiny"], "seeds": [0],
        "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": SEQ_LEN,
                 "val_fraction": 0.1, "eval_examples": 20},
        "budget": {"tokens": 3 * 4 * SEQ_LEN, "min_steps": 1},
        "train": {"micro_batch_size": 4, "grad_accum": 1, "log_every": 100, "eval_every": 100,
                  "checkpoint_every": 100, "val_batches": 1},
        "resources": {"workers_per_run": 1}})


def _train_all(jobs: list[dict], probes: dict, out: str) -> None:
    """Child process: train every job in turn (one import of torch and DeepSpeed for all).

    Two probes are written to `out`: as NSP/SOP export, the trained module's pair logits on
    `probes[name]`; after training, the loader's scores of the span corruption export on
    `probes["span_corruption"]` (its code runs from the modules cache HF_MODULES_CACHE names).
    """
    import harness.train.worker as worker
    from harness.export.loader import load_exported
    from objectives.segments import SegmentPairObjective

    export, recorded = SegmentPairObjective.export, {}

    def recording(self, module, seq_len):
        batch = {k: torch.tensor(v) for k, v in probes[self.name].items()}
        with torch.no_grad():
            recorded[self.name] = module.eval()(**batch).pair_logits.float().tolist()
        return export(self, module, seq_len)
    SegmentPairObjective.export = recording
    for job in jobs:
        worker.train_worker(job)
    encdec = next(Path(job["run_dir"]) / "model" for job in jobs if job["objective"] == "span_corruption")
    loaded = load_exported(encdec)
    recorded["span_corruption"] = [loaded.loglikelihood(*pair) for pair in probes["span_corruption"]]
    Path(out).write_text(json.dumps(recorded))


def _pair_batch(data, name: str) -> dict[str, list]:
    """A validation batch of NSP/SOP rows: input_ids, attention_mask and (for the module) labels."""
    objective = registry.build(name, {}, vocab_of(data))
    tokens = np.memmap(data.val_tokens, dtype=data.dtype, mode="r")[: 3 * SEQ_LEN].reshape(3, SEQ_LEN)
    batch = objective.transform(np.asarray(tokens, dtype=np.int64), np.random.default_rng(5))
    return {k: batch[k].tolist() for k in ("input_ids", "attention_mask", "labels")}


def _requests(data) -> list[tuple[str, str]]:
    story = json.loads((data.tasks_dir / "synthetic_hellaswag" / "validation.jsonl").read_text().splitlines()[0])
    long_context = " ".join([story["ctx"]] * 6)  # longer than the 64 tokens trained on: cut from the left
    return [(story["ctx"], " " + story["endings"][0]), (story["ctx"], " " + story["endings"][1]),
            ("claim : bob lives in the town . verdict :", " true"), (long_context, " " + story["endings"][2])]


@pytest.fixture(scope="module")
def trained(every_objective_data, tmp_path_factory):
    """name -> RUN/model of each objective's tiny run, and what the child probed (`_train_all`)."""
    root = tmp_path_factory.mktemp("export")
    data = every_objective_data
    with pytest.MonkeyPatch.context() as patch:  # FLOPs do not matter here (a tokens budget): not counted
        patch.setattr(harness.plan, "step_cost",
                      lambda objective, make, blocks, seed: (1.0, objective.build_model(make)))
        plans = plan_suite(_suite(), data, root / "results")
    assert sorted(p.objective for p in plans) == sorted(registry.names()) and len(plans) == 9
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    probes = {"nsp": _pair_batch(data, "nsp"), "sop": _pair_batch(data, "sop"),
              "span_corruption": [split_tokens(tokenizer, *pair) for pair in _requests(data)]}
    jobs = [p.train_job().model_dump(mode="json") for p in plans]
    with pytest.MonkeyPatch.context() as patch:  # the child inherits it: remote code stays in the test's folder
        patch.setenv("HF_MODULES_CACHE", str(root / "modules"))
        assert spawn(_train_all, jobs, probes, str(root / "probes.json"), timeout=600) == 0
    return {"models": {p.objective: Path(p.run_dir) / "model" for p in plans}, "probes": probes,
            "recorded": json.loads((root / "probes.json").read_text())}


def _usage(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["harness_export"]


def test_every_export_says_how_it_must_be_used(trained):
    expected = {  # objective: (auto class, attention, mode token)
        "clm": ("AutoModelForCausalLM", "causal", None), "mtp": ("AutoModelForCausalLM", "causal", None),
        "prefix_lm": ("AutoModelForCausalLM", "prefix", None), "ul2": ("AutoModelForCausalLM", "prefix", "[S2S]"),
        "mlm": ("AutoModelForMaskedLM", "bidirectional", None), "nsp": ("AutoModelForMaskedLM", "bidirectional", None),
        "sop": ("AutoModelForMaskedLM", "bidirectional", None),
        "electra": ("AutoModelForTokenClassification", "bidirectional", None),
        "span_corruption": ("AutoModelForSeq2SeqLM", "encoder-decoder", None)}
    for name, folder in trained["models"].items():
        usage = _usage(folder)
        assert set(usage) == USAGE_KEYS, name
        assert (usage["auto_class"], usage["attention"], usage["mode_token"]) == expected[name], name
        assert usage["format"] == 1 and usage["objective"] == name and usage["seq_len"] == SEQ_LEN
        assert usage["scoring"] == registry.get(name).scoring
        assert usage["trust_remote_code"] is (name == "span_corruption")
        assert bool(usage["heads"]) is (name in ("nsp", "sop")) and len(usage["use"]) > 40
    assert "extra heads" in _usage(trained["models"]["mtp"])["use"]
    electra = json.loads((trained["models"]["electra"] / "config.json").read_text())
    assert electra["id2label"] == {"0": "replaced"} and electra["architectures"] == ["ModernBertForTokenClassification"]
    encdec = trained["models"]["span_corruption"]
    assert {"encdec.py", "tensors.py"} <= {p.name for p in encdec.iterdir()}
    assert json.loads((encdec / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "encdec.EncoderDecoderConfig", "AutoModelForSeq2SeqLM": "encdec.ModernEncoderDecoder"}


def test_pair_heads_are_described_with_their_labels(trained):
    labels = {"nsp": ("not next", "is next"), "sop": ("swapped", "in order")}
    for name, (zero, one) in labels.items():
        head = _usage(trained["models"][name])["heads"]["pair_head"]
        assert head["file"] == "pair_head.safetensors" and head["module"] == "torch.nn.Linear"
        assert head["out_features"] == 2 and "[CLS]" in head["input"]
        assert head["labels"]["0"].startswith(zero) and head["labels"]["1"].startswith(one)


LOAD_EVERY_EXPORT = """
import json, sys, torch, transformers
folders, report = json.loads(FOLDERS), {}
for name, folder in folders.items():
    usage = json.load(open(folder + "/config.json"))["harness_export"]
    auto_class = getattr(transformers, usage["auto_class"])
    entry = report[name] = {}
    if usage["trust_remote_code"]:  # refused without it, as documented
        try:
            auto_class.from_pretrained(folder)
        except Exception as error:
            entry["untrusted"] = type(error).__name__
    model = auto_class.from_pretrained(folder, trust_remote_code=usage["trust_remote_code"]).eval()
    ids = torch.tensor([transformers.AutoTokenizer.from_pretrained(folder).encode("bob lives in the town .")])
    with torch.no_grad():
        if usage["attention"] == "encoder-decoder":
            start = torch.tensor([[model.config.decoder_start_token_id]])
            logits = model(input_ids=ids, decoder_input_ids=start).logits
            generated = model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
            entry["generated"] = generated.tolist()[0]
            # min_new_tokens bars [EOS] from the first new tokens
            entry["greedy_first"] = int(logits[0, -1].index_fill(0, torch.tensor([model.config.eos_token_id]),
                                                                 -torch.inf).argmax())
        else:
            logits = model(input_ids=ids).logits
    entry.update(cls=type(model).__name__, tokens=ids.shape[1], shape=list(logits.shape),
                 finite=bool(logits.isfinite().all()), vocab=model.config.vocab_size)
print("REPORT" + json.dumps(report))
"""


def test_every_export_loads_with_plain_transformers_without_the_project(trained, tmp_path):
    folders = {name: str(folder) for name, folder in trained["models"].items()}
    done = run_isolated(f"FOLDERS = {json.dumps(folders)!r}\n" + LOAD_EVERY_EXPORT, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    for name, entry in report.items():
        tokens, vocab = entry["tokens"], entry["vocab"]
        width = {"AutoModelForTokenClassification": 1}.get(_usage(trained["models"][name])["auto_class"], vocab)
        expected = [1, 1, vocab] if name == "span_corruption" else [1, tokens, width]
        assert entry["shape"] == expected and entry["finite"], (name, entry)
    encdec = report["span_corruption"]
    assert encdec["untrusted"] == "ValueError" and encdec["cls"] == "ModernEncoderDecoder"
    assert len(encdec["generated"]) == 5 and encdec["generated"][1] == encdec["greedy_first"]  # start + 4 new
    assert report["electra"]["cls"] == "ModernBertForTokenClassification"
    assert report["ul2"]["cls"] == "ModernBertDecoderForCausalLM"


def _sharpened(folder: Path, into: Path) -> Path:
    """A copy of an export with every attention weight 20 times larger: three training steps leave
    attention nearly uniform and weak, so that its pattern would barely change a score, while
    here reading the context causally or bidirectionally makes a difference the test can see."""
    copy = shutil.copytree(folder, into)
    weights = load_file(copy / "model.safetensors")
    save_file({k: v * 20 if ".attn." in k else v for k, v in weights.items()}, copy / "model.safetensors")
    return copy


@pytest.mark.parametrize("name, mode_token", [("prefix_lm", None), ("ul2", "[S2S]")])
def test_the_loader_scores_a_prefix_model_as_the_harness_does(trained, every_objective_data, tmp_path, name,
                                                             mode_token):
    from lm_eval.api.instance import Instance

    from harness.evaluate.prefix import PrefixLM

    folder, pairs = _sharpened(trained["models"][name], tmp_path / "model"), _requests(every_objective_data)
    adapter = PrefixLM(pretrained=str(folder), batch_size=2, device="cpu", max_length=SEQ_LEN, mode_token=mode_token)
    expected = [score for score, _ in adapter.loglikelihood(
        [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)]
    exported = load_exported(folder)
    scores = [exported.loglikelihood(*split_tokens(exported.tokenizer, *pair)) for pair in pairs]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    # read causally, as a plain load would, the same model scores otherwise
    causal = type(exported)(exported.model, exported.tokenizer, exported.usage | {"attention": "causal"})
    misread = [causal.loglikelihood(*split_tokens(exported.tokenizer, *pair)) for pair in pairs]
    assert np.abs(np.subtract(misread, scores)).max() > 1e-2


def test_the_pair_head_gives_the_trained_modules_pair_logits(trained):
    for name in ("nsp", "sop"):
        batch = {k: torch.tensor(v) for k, v in trained["probes"][name].items()}
        exported = load_exported(trained["models"][name])
        logits = exported.pair_logits(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(logits, torch.tensor(trained["recorded"][name]), rtol=1e-5, atol=1e-5)


def test_the_loader_gives_electras_replaced_probabilities(trained):
    exported = load_exported(trained["models"]["electra"])
    ids = torch.tensor([exported.tokenizer.encode("bob lives in the town .")])
    probability = exported.replaced_probability(ids)
    assert probability.shape == ids.shape and ((probability > 0) & (probability < 1)).all()
    torch.testing.assert_close(probability, exported.model(input_ids=ids).logits[..., 0].sigmoid())
    with pytest.raises(ValueError, match="no replaced-token detector"):
        load_exported(trained["models"]["mlm"]).replaced_probability(ids)


def test_the_loader_scores_the_encoder_decoder_as_the_harness_does(trained, every_objective_data):
    from lm_eval.api.instance import Instance

    from harness.evaluate.seq2seq import EncoderDecoderLM

    pairs = _requests(every_objective_data)
    adapter = EncoderDecoderLM(pretrained=str(trained["models"]["span_corruption"]), batch_size=2, device="cpu",
                               max_length=SEQ_LEN)
    expected = [score for score, _ in adapter.loglikelihood(
        [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)]
    np.testing.assert_allclose(trained["recorded"]["span_corruption"], expected, rtol=1e-5, atol=1e-5)


def test_the_encoder_decoder_generates_what_its_forward_predicts():
    special = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    model = build_model("encoder-decoder", SIZES["tiny"], vocab_size=300, special=special, max_len=32).eval()
    prompt = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt)
    mask[1, 6:] = 0  # the second prompt is padded: generate hands the mask to every step
    generated = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=5, min_new_tokens=5)
    decoded = torch.full((2, 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(5):  # greedy, [EOS] barred as min_new_tokens bars it
            logits = model(input_ids=prompt, attention_mask=mask, decoder_input_ids=decoded).logits[:, -1]
            next_token = logits.index_fill(-1, torch.tensor([special["[EOS]"]]), -torch.inf).argmax(-1, keepdim=True)
            decoded = torch.cat([decoded, next_token], 1)
    assert torch.equal(generated, decoded)
    with pytest.raises(ValueError, match="no cache"):
        model.generate(input_ids=prompt, max_new_tokens=2, use_cache=True)


def test_a_planted_pickle_is_refused_in_an_export(trained, tmp_path):
    folder = shutil.copytree(trained["models"]["nsp"], tmp_path / "model")
    assert [p.name for p in safetensors_weights(folder)] == ["model.safetensors", "pair_head.safetensors"]
    torch.save({"weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickle-based format"):
        safetensors_weights(folder)
    with pytest.raises(UserError, match="pickle-based format"):
        load_exported(folder)


def test_the_loaders_examples_hold():
    assert doctest.testmod(harness.export.loader).failed == 0
