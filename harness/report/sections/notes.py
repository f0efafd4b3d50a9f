"""Reading this report: what each number means and how far to trust it (fixed text)."""

from __future__ import annotations


def reading_notes() -> str:
    return (
        "## Reading this report\n\n"
        "- Every run at a size and budget spends the same training FLOPs (counted on its real step); "
        "the FLOPs column shows it. `budget` is what the suite asked each run to spend (FLOPs or "
        "tokens); a suite with several budgets has a row per budget.\n"
        "- `val loss` is each objective's own loss on held-out text: comparable across seeds, not "
        "across objectives (masked LM predicts 15% of tokens with both-side context). "
        "`uniform loss ln V` is the loss of a uniform guess.\n"
        "- `bits/byte held-out` is the negative log-likelihood of the held-out text in bits per UTF-8 "
        "byte, scored with a sliding window (every token after the first window sees a full window of "
        "context), so tokenizers of any vocabulary compare. It exists only for objectives that define "
        "a likelihood of the text; `—` elsewhere.\n"
        "- Means and 95% intervals are over pretraining seeds: a percentile bootstrap of the mean "
        "(10,000 resamples). One seed gives no interval (`—`). With 2 or 3 seeds the interval is the "
        "range of the seeds: read it as the spread observed, not as a guarantee.\n"
        "- `stderr (lm-eval)` is a different noise: the sampling error of the task's documents, for "
        "one model. A score means something when it exceeds chance by several of both.\n"
        "- Scoring methods differ by architecture: `loglikelihood` for causal decoders, "
        "`pseudo-loglikelihood` (Salazar et al. 2020) for masked LMs, `seq2seq-loglikelihood`, "
        "`prefix-loglikelihood` and `discriminator` for the others. Their scores are not on one "
        "scale; the zero-shot and aggregate tables name the method on every row.\n"
        "- Centered score: (score − chance) / (1 − chance), 0 at chance and 1 at perfect, so tasks "
        "with two and four choices average fairly (Matthews correlation has chance 0). The "
        "aggregate is the mean centered score over a versioned task list: the same key always "
        "means the same tasks.")
