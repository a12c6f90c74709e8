"""Command line: ``python -m ndlib <subcommand> ...``.

Each subcommand lives with the code it drives and registers itself through a function
``add_parser(subparsers)`` that adds its parser and sets ``handler`` (a function taking the
parsed arguments and returning an exit code).  :func:`subcommand_modules` imports and lists
them, in the order ``--help`` shows them; to add a subcommand, write ``add_parser`` in its
module and add the module there.  (They are imported when the parser is built, not when this
module is, so ``import ndlib.cli`` stays light.)
What the subcommands share (one-line usage errors, exit codes, TrainConfig options) lives in
:mod:`ndlib.cliargs`.

Exit codes: 0 success (or nothing to do), 1 a run failed, 2 bad input (one line, no
traceback), 3 a run diverged, 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from ndlib.cliargs import EXIT_CODES, ArgumentParser, add_config_arguments, config_from_args, usage_error

__all__ = ["main", "build_parser", "subcommand_modules", "subcommand_argv", "add_config_arguments", "config_from_args",
           "EXIT_CODES"]


def subcommand_modules() -> tuple:
    """The modules whose ``add_parser`` registers a subcommand: train (here), grid, campaign,
    bench and gpu-check."""
    from ndlib import bench, campaign, grid
    from ndlib.checks import gpu

    return (sys.modules[__name__], grid, campaign, bench, gpu)


def _summary(record: dict) -> dict:
    final = record.get("final") or {}
    return {k: final.get(k) for k in ("train_loss", "train_acc", "test_acc", "test_top5", "train_time_s")}


def _train(args: argparse.Namespace) -> int:
    from ndlib.checkpoint import CheckpointWriteError
    from ndlib.claims import ClaimTaken, claim, claims_folder
    from ndlib.distributed import context_from_env
    from ndlib.paths import portable_path
    from ndlib.records import RecordWriteError, attempts_dir, completed_record, record_path
    from ndlib.train import BadRunInput, promote_pending_rerun, run

    config = config_from_args(args, args.parser)
    prog = args.parser.prog
    try:
        promoted = promote_pending_rerun(config) if context_from_env().is_main else None
        if promoted is not None:
            print(f"{config.run_id}: a rerun that had completed is now the record ({_summary(promoted)}); "
                  "nothing trained", file=sys.stderr)
        done = completed_record(config.run_id, config.runs_dir)
    except ValueError as error:  # a damaged record: name it, touch nothing
        return usage_error(prog, error)
    except RecordWriteError as error:
        return usage_error(prog, f"{config.run_id}: a completed rerun could not be promoted: {error}")
    if done is not None and not args.rerun:
        where = portable_path(record_path(config.run_id, config.runs_dir))
        pending = attempts_dir(config.runs_dir) / f"{config.run_id}.rerun.json"
        extra = ""
        if pending.is_file():
            extra = f"; an unfinished rerun is in {portable_path(pending)} (--rerun resumes it)"
        print(f"{config.run_id}: already completed ({where}): {_summary(done)}; nothing to do "
              f"(--rerun trains it again and replaces the record only if the new run completes){extra}")
        return EXIT_CODES["completed"]
    print(f"run {config.run_id}" + (" (rerun)" if done is not None else ""), file=sys.stderr)
    # The grid's claim: never two trainers on one configuration.  Under torchrun only rank 0
    # claims (the other ranks are part of the same run).
    is_main = context_from_env().is_main
    try:
        with claim(config.run_id, claims_folder(config.runs_dir)) if is_main else contextlib.nullcontext():
            record = run(config, progress=not args.no_progress, resume=args.resume, rerun=args.rerun)
    except ClaimTaken as taken:
        print(f"not started: {taken}", file=sys.stderr)
        return EXIT_CODES["failed"]
    except CheckpointWriteError as error:  # the trained epochs are in the record (interrupted)
        return usage_error(prog, f"{config.run_id} stopped: {error}")
    except (BadRunInput, RecordWriteError) as error:  # bad input, or an unwritable runs folder or claim
        return usage_error(prog, f"{config.run_id} not trained: {error}")
    except KeyboardInterrupt:
        print(f"run {config.run_id} interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except Exception as error:  # recorded as "failed" by run(); report it and exit non-zero
        print(f"run {config.run_id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_CODES["failed"]
    print(f"{config.run_id}: {record['status']} {_summary(record)}")
    return EXIT_CODES.get(record["status"], 1)


def add_parser(subparsers) -> None:
    """Register ``train``."""
    parser = subparsers.add_parser("train", help="train one configuration and write its run record",
                                   description="Train one configuration (paper defaults) and write "
                                               "results/runs/<run_id>.json. A configuration with a completed "
                                               "record is not trained again unless --rerun.")
    add_config_arguments(parser)
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from the run's last checkpoint if there is one (default: yes)")
    parser.add_argument("--rerun", action="store_true",
                        help="train a configuration that already has a completed record again; the record is "
                             "replaced only when the new run completes (the old one goes to attempts/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_train, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m ndlib", description="Network deconvolution, reproduced.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in subcommand_modules():
        module.add_parser(subparsers)
    return parser


def subcommand_argv(command: str, **values) -> list[str]:
    """``[command, *options]``: the arguments that give ``values`` (argument name -> value, in the
    order given) to subcommand ``command``, spelled with that subcommand's own option strings, so
    a printed command cannot drift from its parser.  A list becomes one option with several
    values, ``True`` a bare flag; ``None`` and ``False`` are left out.  Raises ValueError for a
    name the subcommand has no option for, and checks that the words parse back to ``values``."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if command not in subparsers.choices:
        raise ValueError(f"no subcommand {command!r}; known: {sorted(subparsers.choices)}")
    sub = subparsers.choices[command]
    options = {action.dest: action for action in sub._actions if action.option_strings}
    words: list[str] = [command]
    for name, value in values.items():
        if name not in options:
            raise ValueError(f"`python -m ndlib {command}` has no option for {name!r}")
        if value is None or value is False:
            continue
        flag = max(options[name].option_strings, key=len)  # the long form
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    parsed = vars(parser.parse_args(words))
    wrong = {name: parsed[name] for name, value in values.items()
             if value is not None and value is not False and parsed[name] != value
             and parsed[name] != (list(value) if isinstance(value, tuple) else value)}
    if wrong:
        raise ValueError(f"`python -m ndlib {command}` reads {wrong} from {words[1:]}, not the values given")
    return words


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))
