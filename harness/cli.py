"""The `harness` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError

EPILOG = "Results go to RESULTS/<suite name>/ (default RESULTS: ./results). See README.md."


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        "objective x size x seed of a suite with Ray and DeepSpeed, evaluate with lm-eval, report."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train, evaluate and report a suite (resumes unfinished runs)",
                         epilog=EPILOG)
    _suite_args(run)
    run.add_argument("--address", metavar="auto|HOST:PORT",
                     help="join an existing Ray cluster instead of starting an embedded one")
    run.set_defaults(func=_cmd_run)

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

    rep = sub.add_parser("report", help="rebuild summary.csv and report.md from stored results")
    rep.add_argument("suite_dir", metavar="RESULTS/SUITE", type=Path)
    rep.set_defaults(func=_cmd_report)
    return p


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE.yaml", type=Path)
    p.add_argument("--profile", default="default", help="a named profile of the suite (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--results", type=Path, default=Path("results"), metavar="DIR",
                   help="results root (default: %(default)s)")


def _load(args):
    from harness.suite import load_suite
    return load_suite(args.suite, args.profile, args.overrides)


def _cmd_run(args) -> int:
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
    print(f"{'run':<{w}} {'architecture':<15} {'params':>10} {'FLOPs/step':>11} {'steps':>6} "
          f"{'tokens':>12} {'FLOPs':>10}")
    for p in plans:
        print(f"{p.run_id:<{w}} {p.architecture:<15} {p.params:>10,} {p.flops_per_step:>11.3g} "
              f"{p.steps:>6} {p.total_tokens:>12,} {p.total_flops:>10.3g}")
    return 0


def _cmd_data_prepare(args) -> int:
    suite = _load(args)
    from harness.data import data_card, prepare
    from harness.pipeline import special_tokens
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


def _cmd_report(args) -> int:
    from harness.report import write_report
    if not args.suite_dir.is_dir():
        raise UserError("no such results directory", where=str(args.suite_dir))
    csv_path, md_path = write_report(args.suite_dir, f"Suite {args.suite_dir.name}")
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
