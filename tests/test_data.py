import json
import pickle
import re
import time

import numpy as np
import pytest
from transformers import AutoTokenizer

from harness.synthetic import TASK_SPLITS, TASKS
from harness.data.config import FilesData, SyntheticData, TokenizerConfig
from harness.data.entry import data_card
from harness.data.prepare import BASE_SPECIAL_TOKENS, META, PreparedData, prepare, split_sizes
from harness.data.sampler import BlockSampler
from harness.data.sources.synthetic import CORPUS_SEED
from harness.data.tokenizer import load_tokenizer
from harness.data.tokens import token_dtype, write_split
from harness.errors import UserError
from harness.synthetic import WorldConfig, build_world, corpus

CFG = SyntheticData(synthetic=WorldConfig(entities=10, documents=300), tokenizer={"vocab_size": 160},
                    seq_len=16, eval_examples=20)
SPECIALS = ["[MASK]", "[CLS]", "[EOS]", "<extra_id_10>", "<extra_id_2>", "[MASK]"]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(cache_root):
    return prepare(CFG, SPECIALS, cache_root)


@pytest.fixture(scope="module")
def documents():
    """(training, validation) documents, generated the way prepare() does."""
    texts = corpus(build_world(CFG.synthetic), CFG.synthetic.documents, CORPUS_SEED)
    n_train, _ = split_sizes(len(texts), CFG.val_fraction)
    return texts[:n_train], texts[n_train:]


def text_bytes(documents: list[str]) -> int:
    """UTF-8 bytes, and one for each document's [EOS] (as the data card counts them)."""
    return sum(len(d.encode("utf-8")) + 1 for d in documents)


def document_spans(tokens: np.ndarray, eos: int) -> list[tuple[int, int]]:
    """(start, stop) of every document of a token file, each ending with its [EOS]."""
    stops = (np.flatnonzero(tokens == eos) + 1).tolist()
    return list(zip([0, *stops[:-1]], stops))


def decoded_documents(prepared, path):
    """The documents of a token file, decoded one by one (split at [EOS])."""
    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    tokens = np.fromfile(path, dtype=prepared.dtype).tolist()
    eos = prepared.special_tokens["[EOS]"]
    assert tokens[-1] == eos
    ends = [i for i, t in enumerate(tokens) if t == eos]
    return [tokenizer.decode(tokens[a + 1 : b]) for a, b in zip([-1] + ends, ends)]


def test_tokens_decode_to_the_exact_documents(prepared, documents):
    train, val = documents
    assert decoded_documents(prepared, prepared.train_tokens) == train
    assert decoded_documents(prepared, prepared.val_tokens) == val


def test_validation_documents_are_the_held_out_tail(prepared, documents):
    train, val = documents
    assert len(train) + len(val) == CFG.synthetic.documents
    assert len(val) == round(CFG.synthetic.documents * CFG.val_fraction)
    assert prepared.n_val_bytes == text_bytes(val)
    assert prepared.n_train_tokens == len(np.fromfile(prepared.train_tokens, dtype=prepared.dtype))


def test_special_tokens_are_present_once_each(prepared):
    tokenizer = AutoTokenizer.from_pretrained(prepared.tokenizer_dir)
    expected = list(BASE_SPECIAL_TOKENS) + ["<extra_id_2>", "<extra_id_10>", "[CLS]", "[MASK]"]
    assert list(prepared.special_tokens) == expected
    ids = list(prepared.special_tokens.values())
    assert len(set(ids)) == len(ids) and all(0 <= i < prepared.vocab_size for i in ids)
    assert all(tokenizer.convert_tokens_to_ids(t) == i for t, i in prepared.special_tokens.items())
    roles = tokenizer.pad_token, tokenizer.eos_token, tokenizer.mask_token, tokenizer.cls_token
    assert roles == ("[PAD]", "[EOS]", "[MASK]", "[CLS]")
    assert tokenizer.sep_token is None and len(tokenizer) == prepared.vocab_size


def test_the_prompt_and_the_answer_tokenize_as_in_the_corpus(prepared):
    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    together = tokenizer("claim : x verdict : true").input_ids
    answer = tokenizer(" true").input_ids
    assert together[-len(answer):] == answer == tokenizer("true").input_ids


def test_small_vocabulary_uses_uint16(prepared):
    assert prepared.dtype == "uint16" and prepared.vocab_size <= CFG.tokenizer.vocab_size


def test_task_files_hold_the_configured_rows(prepared):
    for task in TASKS:
        for split in TASK_SPLITS:
            lines = (prepared.tasks_dir / task / f"{split}.jsonl").read_text().splitlines()
            assert len(lines) == CFG.eval_examples
            assert isinstance(json.loads(lines[0]), dict)


def test_cache_hit_returns_the_entry_without_rewriting(prepared, cache_root):
    meta = prepared.root / META
    before = meta.stat().st_mtime_ns, prepared.train_tokens.stat().st_mtime_ns
    again = prepare(CFG, list(reversed(SPECIALS)), cache_root)
    assert again == prepared
    assert (meta.stat().st_mtime_ns, prepared.train_tokens.stat().st_mtime_ns) == before
    assert [p.name for p in cache_root.iterdir()] == [prepared.root.name]


def test_another_config_gets_another_entry(prepared, cache_root):
    other = prepare(CFG.model_copy(update={"seq_len": 8}), SPECIALS, cache_root)
    assert other.root != prepared.root


def test_prepared_data_round_trips_through_json(prepared):
    d = json.loads(json.dumps(prepared.to_dict()))
    assert PreparedData.from_dict(d) == prepared
    meta = json.loads((prepared.root / META).read_text())
    assert {k: meta[k] for k in d} == d
    assert meta["card"] == data_card(prepared) and meta["config"] == CFG.identity(mode="json")


def test_too_small_vocabulary_is_a_user_error(tmp_path):
    cfg = CFG.model_copy(update={"tokenizer": TokenizerConfig(vocab_size=64)})
    with pytest.raises(UserError, match="vocab_size"):
        prepare(cfg, SPECIALS, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- BlockSampler


@pytest.fixture
def counting_file(tmp_path):
    """A token file whose token i is i, so every block shows where it was read from."""
    path = tmp_path / "tokens.bin"
    np.arange(1000, dtype=np.uint32).tofile(path)
    return path


def test_batches_are_a_function_of_their_arguments(prepared):
    sampler = BlockSampler(prepared.train_tokens, prepared.dtype, seq_len=16, seed=0)
    batch = sampler.batch(step=3, micro=1, rank=0, batch_size=8)
    assert batch.shape == (8, 16) and batch.dtype == np.int64
    fresh = BlockSampler(prepared.train_tokens, prepared.dtype, seq_len=16, seed=0)
    assert np.array_equal(batch, fresh.batch(3, 1, 0, 8))
    for other in [(4, 1, 0), (3, 0, 0), (3, 1, 1)]:
        assert not np.array_equal(batch, sampler.batch(*other, batch_size=8))
    assert batch.min() >= 0 and batch.max() < prepared.vocab_size


def test_batches_are_contiguous_windows(counting_file):
    batch = BlockSampler(counting_file, "uint32", seq_len=10, seed=1).batch(0, 0, 0, batch_size=32)
    assert (np.diff(batch, axis=1) == 1).all() and batch.max() < 1000


def test_val_batches_are_fixed_and_disjoint_across_ranks(counting_file):
    sampler = BlockSampler(counting_file, "uint32", seq_len=10, seed=0)
    per_rank = [sampler.val_batches(4, batch_size=3, rank=r, world_size=2) for r in (0, 1)]
    assert [len(b) for b in per_rank] == [4, 4] and per_rank[0][0].shape == (3, 10)
    seen = [set(np.concatenate(b).ravel()) for b in per_rank]
    assert not seen[0] & seen[1]
    again = sampler.val_batches(n_batches=4, batch_size=3, rank=1, world_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(again, per_rank[1]))


def test_val_batches_shrink_equally_when_the_file_is_short(counting_file):
    sampler = BlockSampler(counting_file, "uint32", seq_len=10, seed=0)
    counts = {len(sampler.val_batches(100, 4, rank, 3)) for rank in range(3)}
    assert counts == {100 // 3 // 4}
    with pytest.raises(UserError):
        sampler.val_batches(1, 200, 0, 1)


def test_sampler_pickles_as_its_arguments(counting_file):
    sampler = BlockSampler(counting_file, "uint32", seq_len=10, seed=5)
    assert len(pickle.dumps(sampler)) < 1000
    copy = pickle.loads(pickle.dumps(sampler))
    assert np.array_equal(copy.batch(1, 0, 0, 4), sampler.batch(1, 0, 0, 4))


# ---------------------------------------------------------------- sentences, card, shards


def test_data_card_counts_match_the_files(prepared, documents):
    train, val = documents
    card = data_card(prepared)
    assert card["source"].startswith("synthetic") and card["tokenizer"] == "bpe"
    assert (card["train_documents"], card["val_documents"]) == (len(train), len(val))
    assert card["train_tokens"] == len(np.fromfile(prepared.train_tokens, dtype=prepared.dtype))
    assert card["val_tokens"] == len(np.fromfile(prepared.val_tokens, dtype=prepared.dtype))
    assert (card["train_bytes"], card["val_bytes"]) == (text_bytes(train), text_bytes(val))
    assert card["vocab_size"] == prepared.vocab_size and card["val_fraction"] == CFG.val_fraction
    entropy = card["entropy_bits_per_byte"]
    assert entropy is None or 0 < entropy < 8


def sentence_cuts(tokens: np.ndarray, start: int, stop: int, sentence_end) -> list[int]:
    """Where the sentences of the document tokens[start:stop] start, then where its [EOS] is:
    after every sentence-end token but the last (as NSP and SOP cut)."""
    ends = set(sentence_end)
    return [start, *(j + 1 for j in range(start, stop - 2) if int(tokens[j]) in ends), stop - 1]


def test_the_sentence_ends_cut_every_document_into_its_sentences(prepared, documents):
    train, _ = documents
    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    tokens = np.fromfile(prepared.train_tokens, dtype=prepared.dtype)
    spans = document_spans(tokens, prepared.special_tokens["[EOS]"])
    assert len(spans) == len(train) and spans[-1][1] == len(tokens) and prepared.sentence_end
    for i in range(0, len(train), 7):
        cuts = sentence_cuts(tokens, *spans[i], prepared.sentence_end)
        sentences = [tokenizer.decode(tokens[a:b]).strip() for a, b in zip(cuts, cuts[1:])]
        assert sentences == reference_sentences(train[i])


def reference_sentences(text: str) -> list[str]:
    """Sentences cut at the text's sentence-final punctuation ("." "?" "!")."""
    return [s.strip() for s in re.findall(r"[^.!?]*[.!?]+|[^.!?]+$", text) if s.strip()]


def test_blocks_decode_to_the_documents_they_were_cut_from(prepared, documents):
    train, _ = documents
    tokenizer = load_tokenizer(prepared.tokenizer_dir)
    eos = prepared.special_tokens["[EOS]"]
    tokens = np.fromfile(prepared.train_tokens, dtype=prepared.dtype)
    spans = document_spans(tokens, eos)
    sampler = BlockSampler(prepared.train_tokens, prepared.dtype, seq_len=128, seed=3)
    starts = sampler.starts(step=2, micro=0, rank=0, batch_size=16)
    blocks = sampler.batch(2, 0, 0, 16)
    n_whole = 0
    for start, block in zip(starts, blocks):
        assert np.array_equal(block, tokens[start : start + 128])
        ids = np.searchsorted([a for a, _ in spans], start + np.arange(128), side="right") - 1
        for doc in np.unique(ids):
            piece = block[ids == doc]
            text = tokenizer.decode(piece[piece != eos])
            first, stop = spans[doc]
            if start <= first and stop <= start + 128:  # the whole document is in the block
                n_whole += 1
                assert text == train[doc] and piece[-1] == eos
            else:
                assert text.strip() in train[doc]
    assert n_whole > 0


def test_resumed_sampling_equals_uninterrupted_sampling(prepared):
    args = (prepared.train_tokens, prepared.dtype, 16, 11)
    keys = [(step, micro, rank) for step in range(8) for micro in range(2) for rank in range(2)]
    uninterrupted = [BlockSampler(*args).batch(*key, batch_size=4) for key in keys]
    first = BlockSampler(*args)
    before = [first.batch(*key, batch_size=4) for key in keys if key[0] < 5]
    resumed = pickle.loads(pickle.dumps(first))  # what a restarted worker builds
    after = [resumed.batch(*key, batch_size=4) for key in keys if key[0] >= 5]
    assert len(before) + len(after) == len(uninterrupted)
    assert all(np.array_equal(a, b) for a, b in zip(before + after, uninterrupted))


def test_ids_beyond_uint16_are_written_as_uint32(tmp_path):
    import datasets
    assert token_dtype(2**16) == "uint16" and token_dtype(2**16 + 1) == "uint32"
    docs = [[70_000, 5, 9, 2], [65_536, 2], [9, 9, 9, 9, 9, 2]]
    features = datasets.Features({"ids": datasets.List(datasets.Value("uint32")), "bytes": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"ids": docs, "bytes": [4, 2, 6]}, features=features)
    stats = write_split(table, tmp_path / "t.bin")
    assert (stats.documents, stats.tokens, stats.bytes) == (3, 12, 12)
    assert np.fromfile(tmp_path / "t.bin", dtype="uint32").tolist() == sum(docs, [])


def test_more_processes_change_neither_the_key_nor_the_shards(prepared, tmp_path):
    parallel = prepare(CFG.model_copy(update={"num_proc": 2}), SPECIALS, tmp_path)
    assert parallel.root.name == prepared.root.name
    for name in ("train.bin", "val.bin"):
        assert (parallel.root / name).read_bytes() == (prepared.root / name).read_bytes()
    assert "num_proc" not in CFG.model_dump()


def test_the_default_synthetic_corpus_prepares_quickly(tmp_path):
    started = time.perf_counter()
    data = prepare(SyntheticData(), BASE_SPECIAL_TOKENS, tmp_path)
    assert time.perf_counter() - started < 10
    assert data.n_train_documents + data.n_val_documents == SyntheticData().synthetic.documents


def test_special_tokens_written_in_a_document_are_text(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("ann said [MASK] .\nbob said [EOS] twice .\n" * 20)
    cfg = FilesData(files={"paths": [str(path)]}, tokenizer={"vocab_size": 100})
    data = prepare(cfg, SPECIALS, tmp_path / "cache")
    tokens = np.fromfile(data.train_tokens, dtype=data.dtype)
    eos, mask = data.special_tokens["[EOS]"], data.special_tokens["[MASK]"]
    assert mask not in tokens and (tokens == eos).sum() == data.n_train_documents
