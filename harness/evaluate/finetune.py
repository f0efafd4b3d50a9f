"""The fine-tuning track: each pretrained model, given a classification head, trained on each task.

Zero-shot scores undersell encoders; BERT, ELECTRA and T5 report GLUE after fine-tuning. So
every run's saved model gets a fresh linear head on a pooled hidden state. The head reads the
position that suits the architecture (`HEADS`):

    encoder          first-token    training added no [CLS], so the text's own first token; it
                                    attends to the whole input in both directions
    decoder          last-token     the last real token; under the causal mask it alone has read
                                    the whole input (padding is on the right, after it)
    encoder-decoder  encoder-mean   the mean of the encoder's output over real tokens: span
                                    corruption trains no position to summarize (the decoder reads
                                    them all through cross-attention), and mean pooling was the
                                    better T5-encoder sentence embedding (Ni et al. 2021, Sentence-T5)

Text is tokenized as the training text was, `tokenizer.encode(text, add_special_tokens=False)`.
A sentence pair is joined by [EOS], the separator the model saw between packed documents:

    premise "lamo lives in paris ." + hypothesis "lamo has a home in paris ."
    -> [lamo, lives, in, paris, ., [EOS], lamo, has, a, home, in, paris, .]

Each seed fine-tunes every weight with AdamW, linear warmup then linear decay, for `epochs` over
the training split (at most `max_steps`), then scores the evaluation split. The track reports
the median over seeds, as the ELECTRA paper does, in the task's standard metric: accuracy,
binary F1 (MRPC) or Matthews correlation (CoLA). A run of `finetune_model` on synthetic_sst2
with seeds [0, 1, 2] writes `out_dir/synthetic_sst2.json`:

    {"task": "synthetic_sst2", "metric": "acc", "head": "last-token", "majority": 0.5,
     "chance": 0.5, "runs": [{"seed": 0, "acc": 0.93, "f1": 0.93, "mcc": 0.86, ...}, ...],
     "median": {"acc": 0.93, "f1": 0.93, "mcc": 0.86}, ...}

The synthetic-world tasks read `tasks_dir/<task>/{train,validation}.jsonl` (the data step writes
them). GLUE tasks read an offline bundle's `bundle_dir/data/<task>/<split>.parquet` when it
holds them, else the hub's nyu-mll/glue through `datasets`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import runtime
from harness.errors import UserError, did_you_mean
from harness.evaluate.weights import safetensors_weights
from harness.models.tensors import pad_right
from harness.results import write_json
from harness.schema import FinetuneConfig

GLUE_PATH = "nyu-mll/glue"
WHERE = "eval.finetune.tasks"
HEADS = {"encoder": "first-token", "decoder": "last-token", "encoder-decoder": "encoder-mean"}


@dataclass(frozen=True)
class FinetuneTask:
    """A classification task: where its rows come from, what they hold and how it is scored."""

    name: str
    fields: tuple[str, ...]
    """The text of a row: one field, or two joined by [EOS]."""
    num_labels: int
    metric: Literal["acc", "f1", "mcc"]
    """The task's standard metric, the one the report ranks by."""
    source: Literal["synthetic", "glue"]
    """"synthetic": tasks_dir/<name>/<split>.jsonl; "glue": the bundle's parquet or nyu-mll/glue."""
    train_split: str = "train"
    eval_split: str = "validation"


FINETUNE_TASKS: dict[str, FinetuneTask] = {task.name: task for task in (
    FinetuneTask("synthetic_sst2", ("sentence",), 2, "acc", "synthetic"),
    FinetuneTask("synthetic_cola", ("sentence",), 2, "mcc", "synthetic"),
    FinetuneTask("synthetic_rte", ("sentence1", "sentence2"), 2, "acc", "synthetic"),
    FinetuneTask("synthetic_glue", ("sentence",), 2, "acc", "synthetic"),
    FinetuneTask("sst2", ("sentence",), 2, "acc", "glue"),
    FinetuneTask("mnli", ("premise", "hypothesis"), 3, "acc", "glue", eval_split="validation_matched"),
    FinetuneTask("qnli", ("question", "sentence"), 2, "acc", "glue"),
    FinetuneTask("rte", ("sentence1", "sentence2"), 2, "acc", "glue"),
    FinetuneTask("cola", ("sentence",), 2, "mcc", "glue"),
    FinetuneTask("mrpc", ("sentence1", "sentence2"), 2, "f1", "glue"),
)}


# ---------------------------------------------------------------- data


def task_named(name: str) -> FinetuneTask:
    if name not in FINETUNE_TASKS:
        raise UserError(f"unknown fine-tuning task '{name}'{did_you_mean(name, FINETUNE_TASKS)}; "
                        f"known: {', '.join(FINETUNE_TASKS)}", where=WHERE)
    return FINETUNE_TASKS[name]


def check_finetune_tasks(tasks: Sequence[str], tasks_dir: Path, bundle_dir: Path | None = None) -> None:
    """Preflight, before any training: every task is known and its data can be read.

    A GLUE task outside the bundle is checked by asking `datasets` for its builder, which reads
    no data; offline that fails at once, and the message says how to make a bundle.
    """
    for name in tasks:
        task = task_named(name)
        for split in (task.train_split, task.eval_split):
            if task.source == "synthetic":
                if not (path := Path(tasks_dir) / name / f"{split}.jsonl").is_file():
                    raise UserError(f"{path}: data for fine-tuning task '{name}' is missing "
                                    "(the data step writes it)", where=WHERE)
            elif _bundle_file(bundle_dir, name, split) is None:
                _check_hub(task, split, bundle_dir)


def load_rows(task: FinetuneTask, split: str, tasks_dir: Path, bundle_dir: Path | None = None) -> list[dict]:
    """The rows of one split, each with the task's text fields and "label"."""
    if task.source == "synthetic":
        lines = (Path(tasks_dir) / task.name / f"{split}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if (path := _bundle_file(bundle_dir, task.name, split)) is not None:
        import pandas as pd
        return pd.read_parquet(path).to_dict("records")
    return _hub_rows(task, split, bundle_dir)


def _bundle_file(bundle_dir: Path | None, name: str, split: str) -> Path | None:
    if bundle_dir is None:
        return None
    path = Path(bundle_dir) / "data" / name / f"{split}.parquet"
    return path if path.is_file() else None


def _hub_rows(task: FinetuneTask, split: str, bundle_dir: Path | None) -> list[dict]:
    import datasets

    with _glue_errors(task, split, bundle_dir):
        return datasets.load_dataset(GLUE_PATH, task.name, split=split).to_list()


def _check_hub(task: FinetuneTask, split: str, bundle_dir: Path | None) -> None:
    """The hub's nyu-mll/glue has the task: its builder loads (no data is read)."""
    import datasets

    with _glue_errors(task, split, bundle_dir):
        datasets.load_dataset_builder(GLUE_PATH, task.name)


@contextlib.contextmanager
def _glue_errors(task: FinetuneTask, split: str, bundle_dir: Path | None) -> Iterator[None]:
    """An unreachable hub becomes a UserError that says how to make an offline bundle."""
    from harness.data.sources.hf import unreachable
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unless the hub could not be reached
        if not unreachable(error):
            raise
        missing = (f"{bundle_dir} holds no data/{task.name}/{split}.parquet" if bundle_dir is not None
                   else "no offline bundle was given")
        raise UserError(f"cannot load '{GLUE_PATH}' ({task.name}, {split}) for fine-tuning: the hub "
                        f"cannot be reached and {missing}; on a machine with network, write a bundle "
                        f"with `harness eval bundle {task.name} --out DIR` and use it here", where=WHERE) from None


def join_pair(first: list[int], second: list[int], separator: int, max_length: int) -> list[int]:
    """first + [separator] + second in at most `max_length` tokens, cutting the end of the longer
    part one token at a time (the "longest first" rule of BERT's fine-tuning).

    >>> join_pair([1, 2, 3, 4], [7, 8], separator=0, max_length=5)
    [1, 2, 0, 7, 8]
    """
    first, second = list(first), list(second)
    while len(first) + len(second) + 1 > max_length and (first or second):
        (first if len(first) >= len(second) else second).pop()
    return first + [separator] + second


def encode_rows(tokenizer, task: FinetuneTask, rows: Sequence[dict], max_length: int) -> list[list[int]]:
    """Token ids of each row's text, as the training text was tokenized; pairs joined by [EOS]."""
    columns = [tokenizer([str(row[f]) for row in rows], add_special_tokens=False)["input_ids"] for f in task.fields]
    if len(columns) == 1:
        return [ids[:max_length] for ids in columns[0]]
    return [join_pair(a, b, tokenizer.eos_token_id, max_length) for a, b in zip(*columns)]


# ---------------------------------------------------------------- the classifier


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, head: str) -> torch.Tensor:
    """One vector (B, h) per row of `hidden` (B, T, h) under right padding: the first token, the
    last real token, or the mean over real tokens.

    >>> hidden = torch.tensor([[[1.], [2.], [3.]], [[4.], [5.], [0.]]])
    >>> mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> [pool(hidden, mask, head).flatten().tolist() for head in ("first-token", "last-token", "encoder-mean")]
    [[1.0, 4.0], [3.0, 5.0], [2.0, 4.5]]
    """
    if head == "first-token":
        return hidden[:, 0]
    if head == "last-token":
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if head == "encoder-mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown head '{head}'; known: {', '.join(HEADS.values())}")


class SequenceClassifier(nn.Module):
    """A pretrained backbone, pooled as its architecture suits, then dropout and a fresh linear head."""

    def __init__(self, backbone: nn.Module, head: str, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)  # BERT's head initialization
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels)."""
        if self.head == "encoder-mean":
            hidden = self.backbone.encode(input_ids, attention_mask)
        else:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(self.dropout(pool(hidden, attention_mask, self.head)))


def build_classifier(model_dir: Path, architecture: str, num_labels: int) -> SequenceClassifier:
    """The saved model's backbone (its LM head, ELECTRA's detector or the T5 decoder left out)
    with a fresh classification head."""
    if architecture not in HEADS:
        raise ValueError(f"unknown architecture '{architecture}'; known: {', '.join(HEADS)}")
    backbone = _load_backbone(Path(model_dir), architecture)
    return SequenceClassifier(backbone, HEADS[architecture], backbone.config.hidden_size, num_labels)


def _load_backbone(model_dir: Path, architecture: str) -> nn.Module:
    import transformers

    safetensors_weights(model_dir)  # nothing pickled is loaded
    # Loading a base model from a checkpoint with heads reports the heads' weights as unused,
    # which is the intent here: errors only, while loading.
    with runtime.quiet(logging.ERROR, loggers=("transformers",)):
        if architecture != "encoder-decoder":
            # The base model inside the saved head class: ModernBertModel or ModernBertDecoderModel.
            return transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        # Imported here, as transformers is: the preflight (check_finetune_tasks) needs neither.
        from harness.models.encdec import ModernEncoderDecoder
        model = ModernEncoderDecoder.from_pretrained(model_dir, dtype=torch.float32)
    del model.decoder, model.head, model.lm_head  # classification reads the encoder alone (`encode`)
    return model


# ---------------------------------------------------------------- metrics


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> dict[str, float]:
    """{"acc", "f1" (binary tasks: the positive class), "mcc"} of predictions against labels,
    by scikit-learn (MCC is 0 where undefined: a constant prediction or a single true class)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    metrics = {"acc": float(accuracy_score(labels, predictions))}
    if num_labels == 2:
        metrics["f1"] = float(f1_score(labels, predictions, zero_division=0))
    return metrics | {"mcc": float(matthews_corrcoef(labels, predictions))}


def baselines(task: FinetuneTask, train_labels: Sequence[int], eval_labels: Sequence[int]) -> tuple[float, float]:
    """(majority, chance) on the evaluation split. Majority: the accuracy of always predicting
    the most frequent training label. Chance: the standard metric of the constant guess that
    metric rewards most, the majority label (acc; MCC is 0 for any constant) or, for F1, the
    positive class."""
    majority_label = int(np.bincount(np.asarray(train_labels), minlength=task.num_labels).argmax())
    constant = 1 if task.metric == "f1" else majority_label
    majority = classification_metrics(eval_labels, [majority_label] * len(eval_labels), task.num_labels)["acc"]
    chance = classification_metrics(eval_labels, [constant] * len(eval_labels), task.num_labels)[task.metric]
    return majority, chance


# ---------------------------------------------------------------- training


def resolve_steps(n_train: int, cfg: FinetuneConfig) -> tuple[int, int]:
    """(steps per epoch, optimizer steps): `epochs` passes, at most `max_steps`.

    >>> resolve_steps(100, FinetuneConfig(batch_size=32, epochs=2.5))
    (4, 10)
    """
    per_epoch = math.ceil(n_train / cfg.batch_size)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))
    return per_epoch, min(steps, cfg.max_steps or steps)


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each of `steps` batches: a fresh permutation every epoch, cut in batches
    (an epoch's last batch may be short).

    >>> [b.tolist() for b in batch_order(3, 2, steps=3, seed=1)]
    [[0, 1], [2], [2, 0]]
    """
    batches = (order[start : start + batch_size]
               for epoch in itertools.count()
               for order in [np.random.default_rng([seed, epoch]).permutation(n)]
               for start in range(0, n, batch_size))
    return itertools.islice(batches, steps)


def finetune_model(model_dir: Path, architecture: str, task: str, cfg: FinetuneConfig, *, tasks_dir: Path,
                   bundle_dir: Path | None = None, max_length: int, out_dir: Path, device: str | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Fine-tune the model saved in `model_dir` on `task` once per seed; write and return
    `out_dir/<task>.json` (see the module docstring). `max_length` is the run's seq_len, used
    unless the config sets its own; `device` None means CUDA when available, else CPU."""
    import transformers

    spec = task_named(task)
    safetensors_weights(model_dir)  # refused before any work, not after the data is read
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    length = cfg.max_length or max_length
    train, test = (load_rows(spec, split, tasks_dir, bundle_dir) for split in (spec.train_split, spec.eval_split))
    data = {"train": (encode_rows(tokenizer, spec, train, length), [int(r["label"]) for r in train]),
            "eval": (encode_rows(tokenizer, spec, test, length), [int(r["label"]) for r in test])}
    per_epoch, steps = resolve_steps(len(train), cfg)
    target = runtime.device(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    runs = []
    for seed in cfg.seeds:
        run = _one_seed(Path(model_dir), architecture, spec, cfg, data, steps, per_epoch, seed, pad_id, target)
        log(f"{task} seed {seed}: train loss {run['train_loss']:.4f}, {spec.metric} {run[spec.metric]:.4f} "
            f"({run['steps']} steps, {run['seconds']:.1f}s)")
        runs.append(run)
    majority, chance = baselines(spec, data["train"][1], data["eval"][1])
    record = {
        "task": task, "metric": spec.metric, "head": HEADS[architecture],
        "settings": cfg.model_dump(mode="json", exclude={"tasks"}),  # as the suite gave them
        "recipe": cfg.model_dump(exclude={"tasks"}) | {"max_length": length, "steps": steps,
                                                       "steps_per_epoch": per_epoch},
        "n_train": len(train), "n_eval": len(test), "eval_split": spec.eval_split,
        "majority": majority, "chance": chance, "runs": runs,
        "median": {name: statistics.median(run[name] for run in runs)
                   for name in ("acc", "f1", "mcc") if name in runs[0]},
    }
    write_json(Path(out_dir) / f"{task}.json", record)
    return record


def _one_seed(model_dir: Path, architecture: str, task: FinetuneTask, cfg: FinetuneConfig, data: dict,
              steps: int, per_epoch: int, seed: int, pad_id: int, device: torch.device) -> dict:
    """Seed everything, build the classifier, train it, score the evaluation split."""
    import transformers

    start = time.perf_counter()
    transformers.set_seed(seed)
    model = build_classifier(model_dir, architecture, task.num_labels).to(device)
    losses = _train(model, *data["train"], cfg, steps, seed, pad_id, device)
    eval_ids, eval_labels = data["eval"]
    predictions = _predict(model, eval_ids, cfg.batch_size, pad_id, device)
    return {"seed": seed, **classification_metrics(eval_labels, predictions, task.num_labels),
            # The last epoch's mean: one step's loss is noisy, the whole run's mean is stale.
            "train_loss": statistics.fmean(losses[-per_epoch:]), "steps": len(losses),
            "seconds": round(time.perf_counter() - start, 2)}


def _train(model: SequenceClassifier, inputs: list[list[int]], labels: list[int], cfg: FinetuneConfig,
           steps: int, seed: int, pad_id: int, device: torch.device) -> list[float]:
    """AdamW with linear warmup and decay, gradients clipped at norm 1 (as BERT); the loss of each step."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_fraction * steps), steps)
    targets = torch.tensor(labels, dtype=torch.long)
    losses = []
    model.train()
    for rows in batch_order(len(inputs), cfg.batch_size, steps, seed):
        input_ids, attention_mask = pad_right([inputs[i] for i in rows], pad_id)
        logits = model(input_ids.to(device), attention_mask.to(device))
        loss = F.cross_entropy(logits.float(), targets[rows].to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included), none on biases and norm weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


@torch.no_grad()
def _predict(model: SequenceClassifier, inputs: list[list[int]], batch_size: int, pad_id: int,
             device: torch.device) -> list[int]:
    model.eval()
    predictions = []
    for start in range(0, len(inputs), batch_size):
        input_ids, attention_mask = pad_right(inputs[start : start + batch_size], pad_id)
        predictions += model(input_ids.to(device), attention_mask.to(device)).argmax(-1).tolist()
    return predictions
