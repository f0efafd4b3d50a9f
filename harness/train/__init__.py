"""Training: one run's DeepSpeed engine on every worker. The only package that drives deepspeed.

    worker.py      train_worker: set up the engine, resume, the loop, validation, the export
    checkpoint.py  checkpoints that can be trusted: manifests of digests, weights-only loads,
                   the preflight that refuses a checkpoint that cannot be resumed
    lr.py          the warmup-stable-decay (wsd) schedule, a LambdaLR for compute sweeps
    attempts.py    the heartbeat rank 0 beats, each attempt in RUN/attempts.jsonl, and the
                   scheduler's clock on the heartbeat (Watch)
"""
