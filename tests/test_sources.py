"""Every source reads the same documents through `datasets`; user errors name the key and the fix.

The hub cannot be reached here (conftest sets HF_DATASETS_OFFLINE=1), so the `hf` source is
read from what `datasets` reads the same way: a directory written by `save_to_disk`, and a
local directory of data files (the `json` builder). A hub name then fails as an unreachable
hub does, with the message a user without network would see.
"""

import json
import random
import re
import shutil

import datasets
import numpy as np
import pydantic
import pytest
import yaml

from harness import cli
from harness.data.config import DataConfig
from harness.data.prepare import BASE_SPECIAL_TOKENS, cache_key, prepare, special_token_order
from harness.data.sources.common import read_documents
from harness.data.sources.synthetic import CORPUS_SEED
from harness.data.tokenizer import load_tokenizer, train_tokenizer, wrap_tokenizer
from harness.errors import UserError
from harness.pipeline import special_tokens
from harness.runtime import quiet
from harness.suite import load_suite
from harness.synthetic import WorldConfig, build_world, corpus

WORLD = WorldConfig(entities=10, documents=120)
DOCS = corpus(build_world(WORLD), WORLD.documents, CORPUS_SEED)
SPECIALS = [*BASE_SPECIAL_TOKENS, "[MASK]", "[CLS]"]
SHARD_FILES = ("train.bin", "val.bin")


def config(**settings):
    """The data section of these settings, as a suite would validate it (source: the default)."""
    return pydantic.TypeAdapter(DataConfig).validate_python(
        {"synthetic": WORLD, "tokenizer": {"vocab_size": 200}, "seq_len": 16, "eval_examples": 8, **settings})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same documents as a text file, JSONL, Parquet, `save_to_disk` directories and a
    directory of data files that `load_dataset` reads as a dataset."""
    root = tmp_path_factory.mktemp("sources")
    (root / "docs").mkdir()  # documents hold blank lines: one file each
    for i, text in enumerate(DOCS):
        (root / "docs" / f"{i:04d}.txt").write_text(text)
    (root / "docs.jsonl").write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(DOCS)))
    with quiet():
        datasets.Dataset.from_dict({"content": DOCS}).to_parquet(str(root / "docs.parquet"))
        saved = datasets.Dataset.from_dict({"text": DOCS, "id": list(range(len(DOCS)))})
        saved.save_to_disk(str(root / "saved"))
        datasets.DatasetDict({"train": saved, "validation": saved.select(range(3))}).save_to_disk(str(root / "splits"))
    (root / "hub").mkdir()
    (root / "hub" / "train.jsonl").write_text((root / "docs.jsonl").read_text())
    return root


SOURCES = {
    "synthetic": lambda f: {},
    "text": lambda f: {"source": "files", "files": {"paths": [str(f / "docs" / "*.txt")], "sample_by": "document"}},
    "jsonl": lambda f: {"source": "files", "files": {"paths": [str(f / "docs.jsonl")], "text_field": "body"}},
    "parquet": lambda f: {"source": "files", "files": {"paths": [str(f / "docs.parquet")], "text_field": "content"}},
    "save_to_disk": lambda f: {"source": "hf", "hf": {"path": str(f / "saved")}},
    "save_to_disk, streamed": lambda f: {"source": "hf", "hf": {"path": str(f / "saved"), "streaming": True,
                                                                "max_documents": 1000}},
    "save_to_disk splits": lambda f: {"source": "hf", "hf": {"path": str(f / "splits"), "split": "train"}},
    "json builder": lambda f: {"source": "hf", "hf": {"path": str(f / "hub"), "text_field": "body"}},
    "json builder, streamed": lambda f: {"source": "hf", "hf": {"path": str(f / "hub"), "text_field": "body",
                                                                "streaming": True, "max_documents": 1000}},
}


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_reads_the_same_documents(name, files, tmp_path):
    assert read_documents(config(**SOURCES[name](files)), tmp_path)["text"] == DOCS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return prepare(config(), SPECIALS, tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("name", ["text", "parquet", "save_to_disk", "json builder, streamed"])
def test_every_source_writes_the_same_shards_and_tokenizer(name, files, reference, tmp_path):
    data = prepare(config(**SOURCES[name](files)), SPECIALS, tmp_path)
    for file in SHARD_FILES:
        assert (data.root / file).read_bytes() == (reference.root / file).read_bytes()
    vocab = load_tokenizer(data.tokenizer_dir).get_vocab()
    assert vocab == load_tokenizer(reference.tokenizer_dir).get_vocab()
    assert data.source.startswith(SOURCES[name](files)["source"])


def test_max_documents_reads_the_first_documents(files, tmp_path):
    streamed = {"path": str(files / "hub"), "text_field": "body", "streaming": True, "max_documents": 30}
    assert read_documents(config(source="hf", hf=streamed), tmp_path)["text"] == DOCS[:30]
    capped = {"paths": [str(files / "docs.parquet")], "text_field": "content", "max_documents": 7}
    assert read_documents(config(source="files", files=capped), tmp_path / "b")["text"] == DOCS[:7]


def test_empty_documents_are_dropped(tmp_path):
    (tmp_path / "a.txt").write_text("one .\n\n   \ntwo .\n")
    cfg = config(source="files", files={"paths": [str(tmp_path / "a.txt")]})
    assert read_documents(cfg, tmp_path / "scratch")["text"] == ["one .", "two ."]
    paragraphs = config(source="files", files={"paths": [str(tmp_path / "a.txt")], "sample_by": "paragraph"})
    assert len(read_documents(paragraphs, tmp_path / "scratch2")["text"]) == 2


def test_an_edited_file_is_a_new_cache_entry(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one .\ntwo .\n")
    cfg = config(source="files", files={"paths": [str(path)]})
    before = cache_key(cfg, SPECIALS)
    assert cache_key(cfg, SPECIALS) == before
    path.write_text("one .\ntwo .\nthree .\n")
    assert cache_key(cfg, SPECIALS) != before


# ---------------------------------------------------------------- tokenizers on natural text

SENTENCES = ["The café opened at nine.", 'Did Zoë really say "no"?', "Prices rose again in 2023!",
             "It rained all day.", "«Bonjour», she said.", "Nobody knew why.", "The end—or was it?",
             "Numbers like 1024 and 65536 matter.", "Ünïcödé is fine.", "Use ## for headings.", "Tabs\tand  double spaces stay."]


def natural_documents(n: int) -> list[list[str]]:
    """Documents as lists of sentences: capitals, quotes, digits, accents, ! and ?."""
    rng = random.Random(0)
    return [rng.sample(SENTENCES, rng.randint(1, 4)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_each_tokenizer_kind_round_trips_documents_and_sentences(kind, tmp_path):
    docs = natural_documents(150)
    path = tmp_path / "natural.jsonl"
    path.write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in docs))
    cfg = config(source="files", files={"paths": [str(path)]}, tokenizer={"kind": kind, "vocab_size": 400})
    data = prepare(cfg, SPECIALS, tmp_path / "cache")
    tokenizer = load_tokenizer(data.tokenizer_dir)
    tokens = np.fromfile(data.train_tokens, dtype=data.dtype)
    stops = (np.flatnonzero(tokens == data.special_tokens["[EOS]"]) + 1).tolist()
    assert data.tokenizer == kind and len(stops) == data.n_train_documents and stops[-1] == len(tokens)
    ends = set(data.sentence_end)
    for i in range(0, data.n_train_documents, 5):
        start, stop = ([0, *stops])[i], stops[i]
        assert tokenizer.decode(tokens[start : stop - 1]) == " ".join(docs[i])
        # NSP and SOP cut sentences after each sentence-end token.
        cuts = [start, *(j + 1 for j in range(start, stop - 2) if int(tokens[j]) in ends), stop - 1]
        assert [tokenizer.decode(tokens[a:b]).strip() for a, b in zip(cuts, cuts[1:])] == docs[i]


def test_a_pretrained_tokenizer_gets_each_missing_special_token_once(tmp_path):
    base = tmp_path / "pretrained"
    wrap_tokenizer(train_tokenizer(DOCS, 150, ["[UNK]", "[CLS]"])).save_pretrained(base)
    before = load_tokenizer(base)
    data = prepare(config(tokenizer={"pretrained": str(base)}), SPECIALS, tmp_path / "cache")
    tokenizer = load_tokenizer(data.tokenizer_dir)
    assert data.tokenizer == f"pretrained:{base}" and data.vocab_size == len(before) + 3 == len(tokenizer)
    assert list(data.special_tokens) == special_token_order(SPECIALS)
    assert data.special_tokens["[CLS]"] == before.convert_tokens_to_ids("[CLS]")
    added = [data.special_tokens[t] for t in ("[PAD]", "[EOS]", "[MASK]")]
    assert sorted(added) == list(range(len(before), len(before) + 3))
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.mask_token) == ("[EOS]", "[PAD]", "[MASK]")
    ids = np.fromfile(data.val_tokens, dtype=data.dtype)
    eos = data.special_tokens["[EOS]"]
    texts = [tokenizer.decode(d) for d in np.split(ids, np.flatnonzero(ids == eos) + 1)[:-1]]
    assert [t.removesuffix("[EOS]") for t in texts] == DOCS[-data.n_val_documents:]


# ---------------------------------------------------------------- the user's mistakes


@pytest.fixture
def cache_root(tmp_path):
    root = tmp_path / "cache"
    yield root
    assert not root.exists() or list(root.iterdir()) == []  # a failure leaves nothing behind


ERRORS = {
    "hub unreachable": (lambda f: {"source": "hf", "hf": {"path": "someone/some-corpus"}}, "data.hf.path",
                        ["cannot reach the Hugging Face hub", "harness data prepare", "source: prepared"]),
    "missing dataset": (lambda f: {"source": "hf", "hf": {"path": str(f / "nowhere")}}, "data.hf.path",
                        ["no dataset", "save_to_disk"]),
    "missing split": (lambda f: {"source": "hf", "hf": {"path": str(f / "splits"), "split": "test"}},
                      "data.hf.split", ["no split 'test'", "train, validation"]),
    "missing field (save_to_disk)": (lambda f: {"source": "hf", "hf": {"path": str(f / "saved"), "text_field": "body"}},
                                     "data.hf.text_field", ["no field 'body'", "text, id"]),
    "missing field (json builder)": (lambda f: {"source": "hf", "hf": {"path": str(f / "hub")}},
                                     "data.hf.text_field", ["no field 'text'", "body, n"]),
    "missing field (jsonl)": (lambda f: {"source": "files", "files": {"paths": [str(f / "docs.jsonl")]}},
                              "data.files.text_field", ["no field 'text'", "body, n"]),
    "missing field (parquet)": (lambda f: {"source": "files", "files": {"paths": [str(f / "docs.parquet")]}},
                                "data.files.text_field", ["no field 'text'", "content"]),
    "glob matching nothing": (lambda f: {"source": "files", "files": {"paths": [str(f / "docs.jsonl"), str(f / "*.nope")]}},
                              "data.files.paths[1]", ["matches no file"]),
    "mixed formats": (lambda f: {"source": "files", "files": {"paths": [str(f / "docs" / "0000.txt"), str(f / "docs.jsonl")]}},
                      "data.files.paths", ["mix formats"]),
    "missing pretrained tokenizer": (lambda f: {"tokenizer": {"pretrained": "someone/some-tokenizer"}},
                                     "data.tokenizer.pretrained", ["cannot load the tokenizer", "harness data prepare"]),
    "missing prepared directory": (lambda f: {"source": "prepared", "prepared": {"dir": str(f / "nowhere")}},
                                   "data.prepared.dir", ["holds no prepared data", "harness data prepare"]),
}


@pytest.mark.parametrize("name", ERRORS)
def test_user_errors_name_the_key_and_what_to_do(name, files, cache_root):
    settings, where, phrases = ERRORS[name]
    with pytest.raises(UserError) as error:
        prepare(config(**settings(files)), SPECIALS, cache_root)
    assert error.value.where == where
    for phrase in phrases:
        assert phrase in error.value.message


def test_a_source_without_its_section_or_a_stream_without_an_end_is_invalid(tmp_path):
    path = tmp_path / "suite.yaml"
    suite = {"objectives": ["clm"], "budget": {"tokens": 1e5}, "data": {"source": "hf"}}
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(UserError, match="source 'hf' needs a `hf` section") as error:
        load_suite(path)
    assert error.value.where == f"{path}: data"
    suite["data"]["hf"] = {"path": "x", "streaming": True}
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(UserError, match="streaming needs max_documents"):
        load_suite(path)


def test_a_section_of_another_source_an_unknown_source_and_a_bad_setting_are_named(tmp_path):
    path = tmp_path / "suite.yaml"
    suite = {"objectives": ["clm"], "budget": {"tokens": 1e5}, "data": {"hf": {"path": "x"}}}
    path.write_text(yaml.safe_dump(suite))  # source: synthetic, the default
    with pytest.raises(UserError, match="unknown key; expected one of: source, synthetic, tokenizer") as error:
        load_suite(path)
    assert error.value.where == f"{path}: data.hf"
    suite["data"]["source"] = "hf"
    path.write_text(yaml.safe_dump(suite))
    assert load_suite(path).data.hf.path == "x"
    with pytest.raises(UserError, match="unknown source 'web'; expected one of: synthetic, hf, files, prepared"):
        load_suite(path, overrides=["data.source=web"])
    with pytest.raises(UserError, match="greater than or equal to 2") as error:
        load_suite(path, overrides=["data.hf.max_documents=1"])
    assert error.value.where == "--set data.hf.max_documents"


# ---------------------------------------------------------------- the offline mirror


def write_suite(path, data: dict) -> None:
    path.write_text(yaml.safe_dump({"name": "mirror", "objectives": ["clm", "mlm"], "sizes": ["tiny"],
                                    "budget": {"tokens": 1e5}, "data": data}))


def test_data_prepare_writes_a_mirror_that_runs_offline(files, tmp_path, capsys, monkeypatch):
    source = tmp_path / "saved"
    datasets.load_from_disk(str(files / "saved")).save_to_disk(str(source))
    suite_path, mirror = tmp_path / "suite.yaml", tmp_path / "mirror"
    write_suite(suite_path, {"source": "hf", "hf": {"path": str(source)}, "synthetic": WORLD.model_dump(),
                             "tokenizer": {"vocab_size": 200}, "seq_len": 16, "eval_examples": 8})
    assert cli.main(["data", "prepare", str(suite_path), "--out", str(mirror),
                     "--results", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert f"data: {{source: prepared, prepared: {{dir: {mirror}}}}}" in printed
    assert "train.bin" in printed and "tasks/" in printed and "entropy_bits_per_byte" in printed
    suite = load_suite(suite_path)
    written = prepare(suite.data, special_tokens(suite), tmp_path / "unused", out=mirror)  # re-opened
    for file in SHARD_FILES:  # the mirror holds what the cache would
        cached = prepare(suite.data, special_tokens(suite), tmp_path / "cache")
        assert (mirror / file).read_bytes() == (cached.root / file).read_bytes()

    shutil.rmtree(source)  # the compute node: no source data, no network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    to_mirror = ["data.source=prepared", f"data.prepared.dir={mirror}"]
    with pytest.raises(UserError, match="unknown key; expected one of: source, synthetic") as error:
        load_suite(suite_path, overrides=to_mirror)  # the hf section belongs to another source
    assert error.value.where == f"{suite_path}: data.hf" and "prepared" in error.value.message
    offline = load_suite(suite_path, overrides=[*to_mirror, "data.hf=null"])  # null: no section
    opened = prepare(offline.data, special_tokens(offline), tmp_path / "elsewhere")
    assert opened == written and not (tmp_path / "elsewhere").exists()
    assert {k: v for k, v in opened.to_dict().items() if "/" not in str(v)} == \
           {k: v for k, v in cached.to_dict().items() if "/" not in str(v)}


def test_a_mirror_lacking_a_special_token_is_refused(reference):
    cfg = config(source="prepared", prepared={"dir": str(reference.root)})
    assert prepare(cfg, SPECIALS, reference.root.parent) == reference
    with pytest.raises(UserError, match=r"lacks the special tokens \[SEP\]") as error:
        prepare(cfg, [*SPECIALS, "[SEP]"], reference.root.parent)
    assert error.value.where == "data.prepared.dir"


def test_data_prepare_refuses_to_overwrite_another_directory(tmp_path, capsys):
    suite_path, out = tmp_path / "suite.yaml", tmp_path / "taken"
    write_suite(suite_path, {"synthetic": WORLD.model_dump(), "tokenizer": {"vocab_size": 200}})
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["data", "prepare", str(suite_path), "--out", str(out)]) == 2
    assert "error: --out:" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"


def test_data_prepare_reports_a_missing_glob_before_reading_anything(tmp_path, capsys):
    suite_path = tmp_path / "suite.yaml"
    write_suite(suite_path, {"source": "files", "files": {"paths": ["no/such/*.jsonl"]}})
    assert cli.main(["data", "prepare", str(suite_path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: data\.files\.paths\[0\]: 'no/such/\*\.jsonl' matches no file", err)
    assert not (tmp_path / "r").exists()
