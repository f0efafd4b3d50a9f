"""The `harness` command line."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from harness.cli_eval import eval_subcommand, trained_run
from harness.errors import UserError

EPILOG = "Results go to RESULTS/<suite name>/ (default RESULTS: ./results). See README.md."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `harness eval bundle|worst|export-tasks ...` have parsers of their own (harness.cli_eval).
    parser, argv = eval_subcommand(argv, EPILOG) or (_parser(), argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", epilog=EPILOG, description=(
        "Compare language-model pretraining objectives at matched compute: train every "
        "objective x size x seed x budget of a suite with Ray and DeepSpeed, evaluate with lm-eval, report."))
    _version_arg(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train, evaluate and report a suite (resumes unfinished runs)",
                         epilog=EPILOG)
    _suite_args(run)
    run.add_argument("--address", metavar="auto|HOST:PORT",
                     help="join an existing Ray cluster instead of starting an embedded one")
    run.set_defaults(func=_cmd_run)

    sm = sub.add_parser(
        "submit", epilog=EPILOG, help="check a suite here, then run it on a Ray cluster as a Ray Job",
        description="Check a suite here as `harness validate` does, then submit `harness run ... "
                    "--address auto` to a Ray cluster through its Jobs API, and return. The job "
                    "carries this checkout's code and the suite; its results go to --results, an "
                    "absolute path on storage every node of the cluster mounts.")
    _suite_selection(sm)
    sm.add_argument("--results", required=True, metavar="DIR",
                    help="results root: an absolute path that every node of the cluster sees")
    _address_arg(sm)
    sm.add_argument("--insecure", action="store_true",
                    help="submit to a non-loopback cluster even though token authentication is off")
    sm.add_argument("--pip", action="store_true",
                    help="have Ray install pyproject.toml's requirements for the job (default: the "
                         "cluster's nodes already have them)")
    sm.set_defaults(func=_cmd_submit)

    jobs = sub.add_parser("jobs", help="list, follow and stop submitted suites (Ray Jobs)",
                          description="The Ray Jobs of a cluster, through Ray's Job SDK.")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")
    for name, what in (("list", "every job of the cluster"), ("status", "a job's state"),
                       ("logs", "a job's output (the progress lines of `harness run`)"),
                       ("stop", "stop a job")):
        one = jobs_sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        if name != "list":
            one.add_argument("job_id", metavar="JOB", help="the job's submission id")
        if name == "logs":
            one.add_argument("--follow", action="store_true", help="keep printing until the job ends")
        _address_arg(one)
        one.set_defaults(func=_cmd_jobs)

    val = sub.add_parser("validate", help="check a suite and print its run grid (params, FLOPs, steps)")
    _suite_args(val)
    val.set_defaults(func=_cmd_validate)

    obj = sub.add_parser("objectives", help="list the registered objectives")
    obj.set_defaults(func=_cmd_objectives)

    data = sub.add_parser("data", help="data commands (`harness data prepare`: an offline mirror)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prep = data_sub.add_parser(
        "prepare", epilog=EPILOG,
        help="materialize a suite's corpus shards, tokenizer and evaluation data into one directory",
        description="Materialize the corpus shards, tokenizer and evaluation data of a suite into one "
                    "directory, so that its runs need no network (HF_DATASETS_OFFLINE=1): prepare on a "
                    "machine with network, then set `data: {source: prepared, prepared: {dir: DIR}}`.")
    _suite_args(prep)
    prep.add_argument("--out", type=Path, metavar="DIR",
                      help="write here (default: the suite's cache, RESULTS/_data/<hash>/)")
    prep.set_defaults(func=_cmd_data_prepare)

    ev = sub.add_parser(
        "eval", epilog=EPILOG, help="evaluate a trained run on demand (and `harness eval bundle|worst|export-tasks`)",
        description="Evaluate a trained run with lm-eval (and optionally fine-tune it) without "
                    "retraining; results go to RUN_DIR/eval/ and RUN_DIR/finetune/, and the suite's "
                    "report is rebuilt. Every task is checked to load before anything runs. "
                    "`harness eval bundle TASKS --out DIR` stores tasks' data for offline use; "
                    "`harness eval worst RUN_DIR --task TASK` shows a task's worst-scored examples; "
                    "`harness eval export-tasks DIR --run RUN_DIR` writes the harness's tasks for "
                    "lm-eval's own command line.")
    ev.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="RESULTS/SUITE/RUN_ID of a trained run")
    ev.add_argument("--tasks", nargs="+", metavar="TASK",
                    help="lm-eval tasks, groups or tags (default: the suite's eval.tasks, and "
                         "harness_heldout for objectives that define a likelihood)")
    ev.add_argument("--finetune", nargs="+", default=[], metavar="TASK",
                    help="classification tasks of the fine-tuning track (the suite's recipe)")
    ev.add_argument("--bundle", type=Path, metavar="DIR", help="an offline task bundle (default: the suite's eval.bundle)")
    ev.add_argument("--num-fewshot", type=int, metavar="N", help="examples in each prompt (default: the suite's)")
    ev.add_argument("--limit", type=int, metavar="N", help="examples per task (default: the suite's)")
    ev.add_argument("--batch-size", type=int, metavar="N", help="default: the suite's")
    ev.add_argument("--log-samples", action=argparse.BooleanOptionalAction, default=None,
                    help="keep lm-eval's per-sample records beside each result, for `harness eval "
                         "worst` (default: the suite's eval.log_samples)")
    ev.set_defaults(func=_cmd_eval)

    _report_parsers(sub)
    _export_parser(sub)
    return p


def _report_parsers(sub) -> None:
    """`harness report` and `harness compare`: the commands that read results, never train."""
    rep = sub.add_parser("report", help="rebuild summary.csv, summary.parquet, report.md, report.html and plots/ from stored results")
    rep.add_argument("suite_dir", metavar="RESULTS/SUITE", type=Path)
    rep.set_defaults(func=_cmd_report)

    cmp = sub.add_parser(
        "compare", help="the report's paired tables across two suites that share objectives",
        description="Compare two suites' results objective by objective: the runs of one objective, "
                    "size and budget with the same seed in RESULTS_A and RESULTS_B are pairs, and every "
                    "outcome the report compares gets its paired difference A - B with a bootstrap "
                    "interval over seeds and a t-test. Prints markdown.")
    cmp.add_argument("results_a", metavar="RESULTS_A", type=Path, help="a suite's results folder, RESULTS/SUITE")
    cmp.add_argument("results_b", metavar="RESULTS_B", type=Path, help="another suite's results folder")
    cmp.add_argument("--out", type=Path, metavar="FILE", help="also write the markdown to FILE")
    cmp.set_defaults(func=_cmd_compare)


class _PrintVersion(argparse.Action):
    """`harness --version`: the version and the commit of the code that runs (harness.provenance),
    worked out only when asked for (it runs git)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the harness's version and commit, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from harness.provenance import version_line
        print(version_line())  # to stdout, as argparse's own version action prints
        parser.exit()


def _version_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action=_PrintVersion)


def _export_parser(sub) -> None:
    """`harness export`: a run's model folder, with its model card, copied (and uploaded)."""
    ex = sub.add_parser(
        "export", epilog=EPILOG, help="copy a trained run's model (with its model card) to a folder, and push it",
        description="Copy RUN_DIR/model (weights, tokenizer, config, code and extra heads) with a model card "
                    "to DIR, atomically; with --push, upload DIR to the Hugging Face Hub (needs a token: "
                    "`hf auth login` or HF_TOKEN).")
    ex.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="RESULTS/SUITE/RUN_ID of a trained run")
    ex.add_argument("--out", required=True, type=Path, metavar="DIR",
                    help="the export folder: new, empty, or an earlier export (it is replaced)")
    ex.add_argument("--push", metavar="REPO_ID", help="also upload DIR to this Hub repository (OWNER/NAME)")
    ex.add_argument("--private", action="store_true", help="with --push: create the repository private")
    ex.set_defaults(func=_cmd_export)


def _suite_selection(p: argparse.ArgumentParser) -> None:
    """The suite file, its profile and overrides: every command that reads a suite."""
    p.add_argument("suite", metavar="SUITE.yaml", type=Path)
    p.add_argument("--profile", default="default", help="a named profile of the suite (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.lr=3e-4 (repeatable)")


def _suite_args(p: argparse.ArgumentParser) -> None:
    _suite_selection(p)
    p.add_argument("--results", type=results_root, default=Path("results"), metavar="DIR",
                   help="results root, a folder every node sees on a cluster (default: %(default)s)")


def results_root(text: str) -> Path:
    """--results as a path. A URI (s3://, gs://, ...) is refused: training workers and evaluation
    units write results with plain file I/O on whichever node they run."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a URI; give a folder path instead. The harness writes results with plain "
            f"file I/O on every node, so on a cluster use a folder every node mounts at the same path "
            f"(NFS, Lustre, or the bucket mounted with a FUSE filesystem such as s3fs or gcsfuse)")
    return Path(text)


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", metavar="http://HOST:8265",
                   help="the cluster's dashboard (default: RAY_ADDRESS, else http://127.0.0.1:8265)")


def _load(args):
    from harness.suite import load_suite
    return load_suite(args.suite, args.profile, args.overrides)


def _cmd_run(args) -> int:
    from harness.lock import ray_job_id
    if (job := ray_job_id()) and not args.results.is_absolute():
        raise UserError(f"this `harness run` is Ray job {job}, which runs in a temporary copy of the "
                        f"working directory: results under the relative path {args.results} would stay "
                        "there and be lost. Give --results an absolute path on storage that every node "
                        "mounts (e.g. --results /shared/results), or use `harness submit`", where="--results")
    suite = _load(args)
    from harness.pipeline import run_suite
    return run_suite(suite, args.results.resolve(), address=args.address)


def _cmd_validate(args) -> int:
    suite = _load(args)
    from harness.pipeline import prepare_and_plan
    data, plans = prepare_and_plan(suite, args.results.resolve())
    print(f"suite {suite.name}, profile {suite.profile}: OK")
    print(f"data: {data.n_train_tokens:,} training tokens, {data.n_val_tokens:,} validation tokens, "
          f"vocabulary {data.vocab_size} ({data.root})")
    w = max(len(p.run_id) for p in plans)
    unit = "budget (tokens)" if suite.budget.unit == "tokens" else "budget (FLOPs)"
    print(f"{'run':<{w}} {'architecture':<15} {'params':>10} {unit:>15} {'FLOPs/step':>11} {'steps':>6} "
          f"{'tokens':>12} {'FLOPs':>10}")
    for p in plans:
        print(f"{p.run_id:<{w}} {p.architecture:<15} {p.params:>10,} {p.budget:>15.4g} {p.flops_per_step:>11.3g} "
              f"{p.steps:>6} {p.total_tokens:>12,} {p.total_flops:>10.3g}")
    return 0


def _cmd_submit(args) -> int:
    import tempfile
    from harness import submit
    args.results = submit.check_results(args.results)
    address = submit.address_of(args.address)
    submit.check_address(address, args.insecure)
    suite = _load(args)
    from harness.pipeline import prepare_and_plan
    # Every preflight of `harness validate`, here: in the results folder where this machine sees
    # it (its data cache then serves the job), else in a temporary one.
    with tempfile.TemporaryDirectory(prefix="harness-preflight-") as tmp:
        prepare_and_plan(suite, args.results if args.results.is_dir() else Path(tmp))
    job_id = submit.submit(args, suite, address)
    print(f"submitted suite {suite.name} (profile {suite.profile}) to {address} as Ray job {job_id}; "
          f"results: {args.results / suite.name}")
    print("follow it with:\n" + submit.follow_commands(job_id, address))
    return 0


def _cmd_jobs(args) -> int:
    from harness import submit
    address = submit.address_of(args.address)
    if args.jobs_command == "list":
        print("\n".join(submit.list_jobs(address)) or "no jobs")
    elif args.jobs_command == "status":
        print(submit.status(address, args.job_id))
    elif args.jobs_command == "logs":
        submit.logs(address, args.job_id, args.follow)
    else:
        print(submit.stop(address, args.job_id))
    return 0


def _cmd_data_prepare(args) -> int:
    suite = _load(args)
    from harness.data.entry import data_card
    from harness.data.prepare import prepare
    from harness.pipeline import check_writable, special_tokens
    check_writable(args.out.resolve() if args.out else args.results.resolve(),
                   where="--out" if args.out else "--results")
    data = prepare(suite.data, special_tokens(suite), cache_root=args.results.resolve() / "_data",
                   out=args.out)
    print(f"prepared data for suite {suite.name} in {data.root}:")
    for entry in sorted(data.root.iterdir()):
        files = [p for p in entry.rglob("*") if p.is_file()] if entry.is_dir() else [entry]
        size = sum(p.stat().st_size for p in files)
        what = f"{len(files)} files, " if entry.is_dir() else ""
        print(f"  {entry.name}{'/' if entry.is_dir() else ''}  ({what}{size:,} bytes)")
    for key, value in data_card(data).items():
        print(f"{key}: {value}")
    print("to use it, put in the suite (HF_DATASETS_OFFLINE=1 then suffices):")
    print(f"  data: {{source: prepared, prepared: {{dir: {data.root}}}}}")
    return 0


def _cmd_objectives(args) -> int:
    from objectives import registry
    for name in registry.names():
        cls = registry.get(name)
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<18} {cls.architecture:<16} {cls.scoring:<22} {doc}")
    return 0


def _cmd_eval(args) -> int:
    from harness.lock import SuiteLock
    from harness.export.card import write_card, write_cards
    from harness.report import write_report
    from harness.jobs import RunPlan
    from harness.units import check_loads, units_of

    run = trained_run(args.run_dir)
    plan = RunPlan.read(run.run_yaml)
    job = _eval_job(plan, args, run)
    todo = units_of(job, tasks=args.tasks, finetune=args.finetune)
    check_loads(todo)
    with SuiteLock(run.root.resolve().parent, "harness eval"):
        for i, unit in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {unit.label} ...", flush=True)
            print(f"    {_result_line(unit.kind, unit.run())}", flush=True)
        write_card(run.root)  # its model card, with the new results, whatever the suite plans now
        try:
            _, md_path = write_report(run.root.parent, f"Suite {plan.suite}")
            write_cards(run.root.parent)
            print(f"report: {md_path}")
        except FileNotFoundError:
            pass
    return 0


def _eval_job(plan, args, run):
    """The run's evaluation job with the command line's settings over the suite's. The directory
    given is the one evaluated and written, wherever the run was trained: a copied run must never
    write into its original."""
    given = {"bundle": args.bundle.resolve() if args.bundle else None, "num_fewshot": args.num_fewshot,
             "limit": args.limit, "batch_size": args.batch_size, "log_samples": args.log_samples}
    settings = plan.eval.model_copy(update={k: v for k, v in given.items() if v is not None})
    return plan.eval_job().model_copy(update={"eval": settings, "run_dir": run.root.resolve()})


def _result_line(kind: str, result: dict) -> str:
    if kind == "finetune":
        return f"{result['metric']} median {result['median'][result['metric']]:.4f} over seeds"
    rows = []
    for task, row in result["tasks"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items()
                          if isinstance(v, float) and not k.endswith("_stderr"))
        chance = f" (chance {row['chance']:.3f})" if row["chance"] is not None else ""
        rows.append(f"{task}: {shown}{chance}")
    return "; ".join(rows)


def _cmd_report(args) -> int:
    from harness.export.card import write_cards
    from harness.report import partial_notice, planned_runs, write_report
    if not args.suite_dir.is_dir():
        raise UserError("no such results directory", where=str(args.suite_dir))
    if not any(args.suite_dir.glob("*/run.yaml")):
        raise UserError("no runs here (no RUN_ID/run.yaml): expected the folder `harness run` writes "
                        "for a suite, RESULTS/SUITE", where=str(args.suite_dir))
    from harness.lock import SuiteLock
    with SuiteLock(args.suite_dir, "harness report"):
        csv_path, md_path = write_report(args.suite_dir, f"Suite {args.suite_dir.name}")
        write_cards(args.suite_dir)  # every finished run's model card, with every result
    print(f"wrote {md_path} and {csv_path}")
    if notice := partial_notice(planned_runs(args.suite_dir), markdown=False):
        print(notice)
    return 0


def _cmd_export(args) -> int:
    from harness.export.share import describe, export_run
    if args.private and not args.push:
        raise UserError("--private applies to the repository --push creates; give --push REPO_ID too",
                        where="--private")
    files = export_run(args.run_dir, args.out, push=args.push, private=args.private)
    print(describe(args.out.resolve(), files))
    if args.push:
        print(f"uploaded to the Hugging Face Hub: {args.push}")
    return 0


def _cmd_compare(args) -> int:
    from harness.report.compare import compare_suites
    from harness.results import write_atomic
    text = compare_suites(args.results_a, args.results_b)
    if args.out is not None:
        write_atomic(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
