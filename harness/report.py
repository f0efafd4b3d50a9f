"""pandas over every run of a suite: summary.csv and report.md.

One row per objective x size; every number is the mean and standard deviation over seeds.
Evaluation scores carry the scoring method that produced them and the task's chance level.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from harness.results import RunDir, read_json, write_atomic

def collect_runs(suite_dir: Path) -> pd.DataFrame:
    """One row per trained run: its plan, training summary and evaluation scores."""
    rows = []
    for run_yaml in sorted(Path(suite_dir).glob("*/run.yaml")):
        run = RunDir(run_yaml.parent)
        if not run.train_json.exists():
            continue
        plan = yaml.safe_load(run.run_yaml.read_text())
        row = {"run_id": plan["run_id"], "objective": plan.get("label", plan["objective"]), "size": plan["size"],
               "seed": plan["seed"], "scoring": plan["scoring"], **read_json(run.train_json)}
        for path in sorted(run.eval_dir.glob("*.json")):
            row.update(_eval_columns(read_json(path)))
        rows.append(row)
    return pd.DataFrame(rows)


def _eval_columns(result: dict) -> dict:
    task = result["task"]
    out = {f"{task}:chance": result["chance"], f"{task}:scoring": result["scoring"]}
    for metric, value in result["metrics"].items():
        out[f"{task}:{metric}"] = value
    return out


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every numeric column, per objective x size."""
    numeric = [c for c in runs.columns if c not in ("seed",) and pd.api.types.is_numeric_dtype(runs[c])]
    grouped = runs.groupby(["objective", "size"], sort=False)
    stats = grouped[numeric].agg(["mean", "std"])
    stats.columns = [f"{col}_{stat}" for col, stat in stats.columns]
    stats.insert(0, "seeds", grouped.size())
    stats.insert(1, "scoring", grouped["scoring"].first())
    return stats.reset_index()


def write_report(suite_dir: Path, title: str, description: str = "") -> tuple[Path, Path]:
    suite_dir = Path(suite_dir)
    runs = collect_runs(suite_dir)
    if runs.empty:
        raise FileNotFoundError(f"no finished runs under {suite_dir}")
    summary = summarize(runs)
    csv_path, md_path = suite_dir / "summary.csv", suite_dir / "report.md"
    write_atomic(csv_path, summary.to_csv(index=False))
    write_atomic(md_path, render_markdown(title, description, runs, summary, suite_data_card(suite_dir)))
    return csv_path, md_path


def suite_data_card(suite_dir: Path) -> dict | None:
    """The data card of the suite's data, read from any run's plan (every run shares the data)."""
    from harness.data import PreparedData, data_card
    run_yaml = next(iter(sorted(Path(suite_dir).glob("*/run.yaml"))), None)
    if run_yaml is None:
        return None
    return data_card(PreparedData.from_dict(yaml.safe_load(run_yaml.read_text())["data"]))


# --- markdown ----------------------------------------------------------------------------------


def render_markdown(title: str, description: str, runs: pd.DataFrame, summary: pd.DataFrame,
                    card: dict | None = None) -> str:
    parts = [f"# {title}", description.strip(), _data_table(card), _training_table(summary),
             _eval_table(runs, summary),
             _reading_notes(), "## Runs", runs[["run_id", "objective", "size", "seed", "steps",
                                                "val_loss", "wall_time_s"]].to_markdown(index=False)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _data_table(card: dict | None) -> str:
    """Source, size, tokenizer, validation split and (synthetic world) the entropy floor."""
    if not card:
        return ""
    rows = [{"split": split, "documents": f"{card[f'{split}_documents']:,}", "tokens": f"{card[f'{split}_tokens']:,}",
             "bytes": f"{card[f'{split}_bytes']:,}"} for split in ("train", "val")]
    floor = card.get("entropy_bits_per_byte")
    lines = [f"Source: {card['source']}. Tokenizer: {card['tokenizer']}, vocabulary {card['vocab_size']:,}. "
             f"Validation: the last {card['val_fraction']:.0%} of the documents, read by no training run."]
    if floor is not None:
        lines.append(f"Entropy floor of the validation text (the generator's true entropy): "
                     f"{floor:.4f} bits/byte; no model's `bits/byte` can be lower on average.")
    return "## Data\n\n" + " ".join(lines) + "\n\n" + pd.DataFrame(rows).to_markdown(index=False)


def _training_table(summary: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "objective": summary["objective"], "size": summary["size"], "seeds": summary["seeds"],
        "params": summary["params_mean"].map(lambda v: f"{v:,.0f}"),
        "params trained": summary.get("params_trained_mean", summary["params_mean"]).map(lambda v: f"{v:,.0f}"),
        "FLOPs spent": summary["flops_spent_mean"].map(lambda v: f"{v:.4g}"),
        "tokens seen": summary["tokens_seen_mean"].map(lambda v: f"{v:,.0f}"),
        "val loss": _pm(summary, "val_loss"),
        "uniform loss ln V": summary["uniform_loss_mean"].map(lambda v: f"{v:.3f}"),
        "bits/byte": _pm(summary, "bits_per_byte"),
        "wall time (s)": _pm(summary, "wall_time_s", digits=0),
    })
    return "## Training at matched compute\n\n" + table.to_markdown(index=False)


def _eval_table(runs: pd.DataFrame, summary: pd.DataFrame) -> str:
    tasks = sorted({c.split(":")[0] for c in runs.columns if c.endswith(":chance")})
    if not tasks:
        return ""
    rows = []
    for task in tasks:
        for metric in ("acc", "acc_norm"):
            if f"{task}:{metric}_mean" not in summary:
                continue
            for _, s in summary.iterrows():
                rows.append({"task": task, "metric": metric,
                             "chance": f"{runs[f'{task}:chance'].dropna().iloc[0]:.3f}",
                             "objective": s["objective"], "size": s["size"],
                             "scoring": s["scoring"], "mean ± sd over seeds": _pm_row(s, f"{task}:{metric}"),
                             "stderr (lm-eval)": _fmt(s.get(f"{task}:{metric}_stderr_mean"))})
    return "## Evaluation (lm-eval, zero-shot)\n\n" + pd.DataFrame(rows).to_markdown(index=False)


def _reading_notes() -> str:
    return (
        "## Reading this report\n\n"
        "- Every run at a size spends the same training FLOPs (counted on its real step); the "
        "FLOPs column shows it.\n"
        "- `val loss` is each objective's own loss on held-out text: comparable across seeds, not "
        "across objectives (masked LM predicts 15% of tokens with both-side context). "
        "`uniform loss ln V` is the loss of a uniform guess.\n"
        "- `bits/byte` is given only for objectives whose loss is a likelihood of the text.\n"
        "- Evaluation scores name their scoring method: `loglikelihood` for causal models, "
        "`pseudo-loglikelihood` (Salazar et al. 2020) for masked LMs; compare a score with the "
        "task's `chance` and with lm-eval's standard error.\n"
        "- `sd over seeds` is blank with a single seed.")


def _pm(summary: pd.DataFrame, col: str, digits: int = 3) -> pd.Series:
    return summary.apply(lambda s: _pm_row(s, col, digits), axis=1)


def _pm_row(row, col: str, digits: int = 3) -> str:
    mean, sd = row.get(f"{col}_mean"), row.get(f"{col}_std")
    if mean is None or _missing(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if _missing(sd) else f" ± {sd:.{digits}f}")


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None or _missing(value) else f"{value:.{digits}f}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
