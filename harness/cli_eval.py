"""The `harness eval` commands with a parser of their own (harness.cli dispatches to them):

    harness eval bundle TASK ... --out DIR              offline copy of stock lm-eval tasks
    harness eval worst RUN_DIR --task TASK [-n 10]      the worst-scored examples, from stored samples
    harness eval export-tasks DIR --run RUN_DIR         the harness's tasks for lm-eval's own CLI

They share the command word with `harness eval RUN_DIR ...`, whose parser would take `bundle`,
`worst` or `export-tasks` for a run directory; `eval_subcommand` picks their parser first.
Light: argparse at import, everything else inside the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError


def eval_subcommand(argv: list[str], epilog: str) -> tuple[argparse.ArgumentParser, list[str]] | None:
    """For `harness eval bundle|worst|export-tasks ...`: that command's parser and the arguments
    after its name; None for any other command line."""
    parsers = {"bundle": _bundle_parser, "worst": _worst_parser, "export-tasks": _export_tasks_parser}
    if argv[:1] == ["eval"] and len(argv) > 1 and argv[1] in parsers:
        return parsers[argv[1]](epilog), argv[2:]
    return None


def _bundle_parser(epilog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness eval bundle", epilog=epilog,
        description="Store the datasets that lm-eval tasks read, with task YAMLs that read the stored "
                    "copies and keep each stock task's prompt, choices and metrics. Run it where the "
                    "network is; then `eval: {bundle: DIR}` in a suite (or `harness eval RUN_DIR "
                    "--bundle DIR`) evaluates those tasks with no network.")
    p.add_argument("tasks", nargs="+", metavar="TASK", help="lm-eval tasks, groups or tags (mmlu, hellaswag, glue, sst2, ...)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle directory")
    p.set_defaults(func=_cmd_eval_bundle)
    return p


def _worst_parser(epilog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness eval worst", epilog=epilog,
        description="Show the worst-scored examples of a task for a run, from the samples its "
                    "evaluation kept (eval.log_samples): for multiple choice, the documents where the "
                    "gold choice's log-likelihood is furthest below the best wrong choice's, with the "
                    "prompt, every choice's log-likelihood, the gold and the chosen one.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="RESULTS/SUITE/RUN_ID of an evaluated run")
    p.add_argument("--task", required=True, metavar="TASK",
                   help="a task evaluated for the run (a group or a tag: all of its tasks)")
    p.add_argument("-n", type=_positive, default=10, metavar="N", help="examples to show (default: %(default)s)")
    p.set_defaults(func=_cmd_eval_worst)
    return p


def _export_tasks_parser(epilog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness eval export-tasks", epilog=epilog,
        description="Write the harness's own tasks (synthetic_*, harness_heldout), with the data a run "
                    "was evaluated on, into DIR as task YAMLs that lm-eval's own command line reads "
                    "from any working directory (`lm_eval --include_path DIR`); print the `lm_eval` "
                    "command that scores the run as the harness does.")
    p.add_argument("out", metavar="DIR", type=Path, help="the folder to write")
    p.add_argument("--run", dest="run_dir", required=True, type=Path, metavar="RUN_DIR",
                   help="RESULTS/SUITE/RUN_ID: the run whose task data and settings to export")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="default: every shipped task")
    p.set_defaults(func=_cmd_eval_export_tasks)
    return p


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def trained_run(run_dir: Path):
    """The RunDir of a run that finished training; else a UserError saying what is missing."""
    from harness.results import RunDir

    run = RunDir(run_dir)
    if not run.run_yaml.is_file():
        raise UserError("not a run directory (run.yaml is missing)", where=str(run_dir))
    if not run.train_json.is_file() or not run.model.is_dir():
        raise UserError("this run has not finished training (train.json or model/ is missing); "
                        "`harness run` its suite first", where=str(run_dir))
    return run


def _cmd_eval_bundle(args) -> int:
    from harness.evaluate.bundle import make_bundle
    make_bundle(args.tasks, args.out)
    print(f"bundle written to {args.out.resolve()}; use it with `eval: {{bundle: {args.out.resolve()}}}` "
          "in a suite, or `harness eval RUN_DIR --bundle DIR`")
    return 0


def _cmd_eval_worst(args) -> int:
    from harness.evaluate.worst import worst_of_run
    if not (args.run_dir / "run.yaml").is_file():
        raise UserError("not a run directory (run.yaml is missing)", where=str(args.run_dir))
    print(worst_of_run(args.run_dir / "eval", args.task, args.n), end="")
    return 0


def _cmd_eval_export_tasks(args) -> int:
    from harness.evaluate.export import export_tasks, lm_eval_command
    from harness.jobs import RunPlan

    run = trained_run(args.run_dir)
    plan = RunPlan.read(run.run_yaml)
    tasks = export_tasks(plan.data.tasks_dir, args.out, args.tasks)
    print(f"wrote {len(tasks)} tasks and their data to {args.out.resolve()}")
    if plan.scoring != "loglikelihood":
        print(f"this run's model is scored by {plan.scoring}, through a model class of the harness "
              "that lm-eval's own command line does not have: `harness eval` scores it")
        return 0
    evaluated = [task for task in plan.eval.tasks if task in tasks] or tasks
    command = lm_eval_command(run.model, args.out, evaluated, batch_size=plan.eval.batch_size, seed=plan.seed,
                              limit=plan.eval.limit, num_fewshot=plan.eval.num_fewshot,
                              scoring_args=plan.scoring_args)
    print(f"to score the run on them as the harness does:\n  {command}")
    return 0
