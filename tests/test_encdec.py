"""harness.models.encdec, the ModernBERT encoder-decoder (attention patterns, layer split, persistence),
and harness-seq2seq, its lm-eval adapter, against a plain hand computation and through lm-eval's
simple_evaluate on the harness's own tasks, offline."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from transformers import AutoConfig, AutoModelForSeq2SeqLM
from transformers.models.modernbert.modeling_modernbert import ModernBertEncoderLayer
from transformers.models.modernbert_decoder.modeling_modernbert_decoder import ModernBertDecoderLayer

from harness.data.config import SyntheticData
from harness.data.prepare import BASE_SPECIAL_TOKENS, prepare
from harness.data.tokenizer import load_tokenizer
from harness.models.encdec import EncoderDecoderConfig, ModernEncoderDecoder, split_layers
from harness.evaluate.run import evaluate_entry
from harness.evaluate.seq2seq import EncoderDecoderLM, seq2seq_rows
from harness.models.families import build_model, parameter_count
from harness.models.sizes import SIZES, ModelSize
from harness.models.tensors import shift_right
from harness.synthetic import WorldConfig
from objectives.span_corruption import SENTINELS

SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
VOCAB = 500


def _model(size: ModelSize = SIZES["tiny"]) -> ModernEncoderDecoder:
    return build_model("encoder-decoder", size, vocab_size=VOCAB, special=SPECIAL, max_len=32).eval()


def _ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(len(SPECIAL), VOCAB, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model, x, y, **kw) -> torch.Tensor:
    return model(input_ids=x, decoder_input_ids=y, **kw).logits


def test_save_and_load_through_the_auto_classes(tmp_path):
    model = _model()
    x, y = _ids(2, 12), _ids(2, 7, seed=1)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "harness-encdec"
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is ModernEncoderDecoder
    assert loaded.lm_head.weight is loaded.shared.weight  # still tied after loading
    assert torch.equal(_logits(loaded, x, y), _logits(model, x, y))


def test_encoder_is_bidirectional_and_the_decoder_reads_it():
    model = _model()
    x, y = _ids(1, 12), _ids(1, 7, seed=1)
    changed = x.clone()
    changed[0, -1] = (x[0, -1] + 1 - len(SPECIAL)) % (VOCAB - len(SPECIAL)) + len(SPECIAL)
    with torch.no_grad():
        before, after = model.encode(x), model.encode(changed)
    assert not torch.allclose(before[0, 0], after[0, 0])  # the first position sees the last
    # every decoder position reads the encoder, the first one included
    difference = (_logits(model, x, y) - _logits(model, changed, y)).abs().amax(-1)
    assert (difference > 1e-6).all()


def test_decoder_is_causal():
    model = _model()
    x, y = _ids(1, 12), _ids(1, 9, seed=1)
    changed = y.clone()
    changed[0, 5] = (y[0, 5] + 1 - len(SPECIAL)) % (VOCAB - len(SPECIAL)) + len(SPECIAL)
    before, after = _logits(model, x, y), _logits(model, x, changed)
    assert torch.equal(before[0, :5], after[0, :5])
    assert (before[0, 5:] - after[0, 5:]).abs().amax(-1).gt(1e-6).all()


def test_encoder_padding_is_invisible():
    model = _model()
    x, y = _ids(1, 8), _ids(1, 6, seed=1)
    padded = torch.cat([x, torch.full((1, 4), SPECIAL["[PAD]"])], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1).long()
    torch.testing.assert_close(_logits(model, padded, y, attention_mask=mask), _logits(model, x, y),
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_logits(model, padded, y), _logits(model, x, y), atol=1e-5)


@pytest.mark.parametrize(("layers", "expected"), [(2, (1, 1)), (3, (2, 1)), (4, (2, 2)), (12, (6, 6))])
def test_layers_are_split_between_the_stacks(layers, expected):
    assert split_layers(layers) == expected
    config = EncoderDecoderConfig(num_hidden_layers=layers, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    assert (config.encoder_config().num_hidden_layers, config.decoder_config().num_hidden_layers) == expected


@pytest.mark.parametrize("size", ["tiny", "mini"])
def test_stacks_use_modernberts_layers_and_cross_attention_adds_parameters(size):
    model, h = _model(SIZES[size]), SIZES[size].hidden
    decoder_only = build_model("decoder", SIZES[size], vocab_size=VOCAB, special=SPECIAL, max_len=32)
    n_enc, n_dec = split_layers(SIZES[size].layers)
    assert len(model.encoder.layers) == n_enc and len(model.decoder.layers) == n_dec
    assert all(type(layer) is ModernBertEncoderLayer for layer in model.encoder.layers)
    assert all(isinstance(layer, ModernBertDecoderLayer) for layer in model.decoder.layers)
    # Against the decoder-only model: 4h^2 + a norm per cross-attention, the second stack's
    # embedding and final norms, less one attention norm (each stack's first layer has none).
    extra = n_dec * (4 * h * h + h) + 2 * h - h
    print(f"{size}: encoder-decoder {parameter_count(model):,} vs decoder {parameter_count(decoder_only):,} parameters")
    assert parameter_count(model) - parameter_count(decoder_only) == extra


def test_loss_is_the_cross_entropy_of_the_logits():
    model = _model()
    x, labels = _ids(2, 10), _ids(2, 6, seed=1)
    labels[0, 4:] = -100
    y = shift_right(labels, start_id=0, pad_id=0)
    out = model(input_ids=x, decoder_input_ids=y, labels=labels)
    reference = F.cross_entropy(out.logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, reference)
    # labels alone: the model shifts them right itself, starting with [PAD] as T5 does
    torch.testing.assert_close(model(input_ids=x, labels=labels).loss, out.loss)


def test_shift_right():
    labels = torch.tensor([[7, 8, 9, -100, -100]])
    assert shift_right(labels, start_id=0, pad_id=0).tolist() == [[0, 7, 8, 9, 0]]


# --- harness-seq2seq: the lm-eval adapter ----------------------------------------------------




@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny world whose tokenizer carries the sentinels, with its evaluation tasks."""
    cfg = SyntheticData(synthetic=WorldConfig(entities=12, documents=300, seed=3), seq_len=32, eval_examples=8)
    return prepare(cfg, [*BASE_SPECIAL_TOKENS, *SENTINELS], tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = build_model("encoder-decoder", SIZES["tiny"], vocab_size=data.vocab_size,
                        special=data.special_tokens, max_len=32)
    model.save_pretrained(root)
    load_tokenizer(data.tokenizer_dir).save_pretrained(root)
    return root


def requests(data) -> list[tuple[str, str]]:
    glue = json.loads((data.tasks_dir / "synthetic_glue" / "validation.jsonl").read_text().splitlines()[0])
    story = json.loads((data.tasks_dir / "synthetic_hellaswag" / "validation.jsonl").read_text().splitlines()[0])
    prompt = f"claim : {glue['sentence']} verdict :"
    return [(prompt, " true"), (prompt, " false"), (story["ctx"], " " + story["endings"][0]),
            ("", story["ctx"])]


def instances(pairs) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


@torch.no_grad()
def reference(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """T5's zero-shot scoring, one request at a time: "context <extra_id_0> [EOS]" in, and the
    sum of log P(token) over the continuation after "[PAD] <extra_id_0>" out."""
    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    if context:  # lm-eval's split: tokenize the whole, cut at the context's length
        context_ids = encode(context)
        continuation_ids = encode(context + continuation)[len(context_ids):]
    else:  # an empty context is the [EOS] that separated training documents
        context_ids, continuation_ids = [tokenizer.eos_token_id], encode(continuation)
    sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    encoder = context_ids + [sentinel, tokenizer.eos_token_id]
    decoder = [tokenizer.pad_token_id, sentinel] + continuation_ids
    logits = model(input_ids=torch.tensor([encoder]), decoder_input_ids=torch.tensor([decoder])).logits
    logprobs = logits[0].log_softmax(-1)
    predicted_at = range(1, len(decoder) - 1)  # position j predicts decoder[j + 1]
    total = sum(logprobs[j, decoder[j + 1]].item() for j in predicted_at)
    return total, all(logprobs[j].argmax().item() == decoder[j + 1] for j in predicted_at)


def test_loglikelihood_matches_a_hand_computation(data, model_dir):
    # batch_size 3 puts requests of different lengths in one padded batch and one alone
    lm = EncoderDecoderLM(pretrained=str(model_dir), batch_size=3, device="cpu", sentinel="<extra_id_0>")
    model = ModernEncoderDecoder.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    pairs = requests(data)
    scores = lm.loglikelihood(instances(pairs), disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(pairs, scores, strict=True):
        expected, expected_greedy = reference(model, tokenizer, context, continuation)
        assert score == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_evaluate_entry_runs_the_harness_tasks(data, model_dir, tmp_path):
    tasks = ["synthetic_hellaswag", "synthetic_glue"]
    summary = {}
    for task in tasks:
        section = evaluate_entry(model_dir, "seq2seq-loglikelihood", task, tasks_dir=data.tasks_dir,
                                 out_dir=tmp_path / "eval", batch_size=4, model_args={"sentinel": "<extra_id_0>"})
        assert section["scoring"] == "seq2seq-loglikelihood"
        summary[task] = {**section["tasks"][task]["metrics"], "chance": section["tasks"][task]["chance"]}
    assert summary["synthetic_hellaswag"]["chance"] == pytest.approx(0.25)
    assert summary["synthetic_glue"]["chance"] == pytest.approx(0.5)
    for task, entry in summary.items():
        assert 0.0 <= entry["acc"] <= 1.0
        written = json.loads((tmp_path / "eval" / f"{task}.json").read_text())
        assert written["config"]["model"] == "harness-seq2seq"
        assert written["n-samples"][task]["effective"] == 8
    # glue's accuracy is the adapter's own choice between " false" and " true" on each claim
    lm = EncoderDecoderLM(pretrained=str(model_dir), device="cpu")
    rows = [json.loads(line) for line in (data.tasks_dir / "synthetic_glue" / "validation.jsonl").open()]
    correct = []
    for row in rows:
        prompt = f"claim : {row['sentence']} verdict :"
        (false, _), (true, _) = lm.loglikelihood(instances([(prompt, " false"), (prompt, " true")]), disable_tqdm=True)
        correct.append(int(true > false) == row["label"])
    assert summary["synthetic_glue"]["acc"] == pytest.approx(sum(correct) / len(correct))


def test_refusals(model_dir):
    with pytest.raises(ValueError, match="no sentinel token '<extra_id_x>'"):
        EncoderDecoderLM(pretrained=str(model_dir), device="cpu", sentinel="<extra_id_x>")
    lm = EncoderDecoderLM(pretrained=str(model_dir), device="cpu")
    with pytest.raises(NotImplementedError, match="does not generate"):
        lm.generate_until([Instance("generate_until", {}, ("alice", {"until": ["."]}), 0)])


def test_rows_truncate_the_context_from_the_left():
    assert seq2seq_rows([5, 6, 7], [8, 9], sentinel=90, eos=2, start=0, max_length=4) == \
        ([6, 7, 90, 2], [0, 90, 8], [90, 8, 9])
    assert seq2seq_rows([5], [8, 9, 10, 11], sentinel=90, eos=2, start=0, max_length=3) == \
        ([5, 90, 2], [0, 90, 8], [90, 8, 9])
    assert seq2seq_rows([5, 6], [8], sentinel=90, eos=2, start=0, max_length=2) == ([90, 2], [0, 90], [90, 8])
