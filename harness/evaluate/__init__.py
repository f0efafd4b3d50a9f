"""Evaluation of trained runs: lm-eval zero/few-shot scoring and the fine-tuning track. The one
package of the harness that imports lm_eval.

    run.py        `evaluate_entry`: lm-eval's `simple_evaluate` on one entry of a suite's
                  `eval.tasks` with the model class for the objective's scoring method, written
                  to `eval/<entry>.json` with the rows, metrics and chance level the report shows;
                  `register_models` makes the harness's model classes known to lm-eval
    documents.py  each document's score beside an entry's result (`<entry>.documents.jsonl`)
                  and `read_documents`, for the report's paired comparisons
    samples.py    lm-eval's per-sample records beside an entry's result, gzipped, in lm-eval's
                  own samples format (`<entry>.samples/<task>.jsonl.gz`, `eval.log_samples`)
    worst.py      a task's worst-scored documents from those records (`harness eval worst`)
    export.py     the shipped tasks and their data as a folder lm-eval's own command line
                  reads from anywhere (`harness eval export-tasks`)
    tasks.py      where tasks come from (shipped YAML templates in `tasks/`, an offline bundle,
                  lm-eval's stock registry), `materialize_tasks`, and the `check_tasks` preflight
    weights.py    `safetensors_weights` (only safetensors is loaded) and `model_sha256`
    cache.py      lm-eval's response cache, kept as JSON rather than pickles
    bundle.py     offline bundles of stock tasks' data (`harness eval bundle`)
    adapters.py   lm-eval model classes: the shared base, causal decoders, masked-LM encoders
    prefix.py, seq2seq.py, electra.py
                  lm-eval model classes for prefix LMs and UL2, encoder-decoders, ELECTRA
    finetune.py   the fine-tuning track: a classification head on each model, trained per task

Importing this package imports nothing heavy: `tasks.py`, `weights.py`, `documents.py`, `samples.py`,
`worst.py` and `export.py` are light (the report reads `HELDOUT_TASK`); `run.py`, the model classes
and `finetune.py` import lm_eval or torch.
"""
