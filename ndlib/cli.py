"""Command line: ``python -m ndlib <subcommand> ...``.

Each subcommand lives with the code it drives and registers itself through a function
``add_parser(subparsers)`` that adds its parser and sets ``handler`` (a function taking the
parsed arguments and returning an exit code).  :data:`SUBCOMMAND_MODULES` lists the modules
asked to register; a module that is not importable (e.g. an optional one not written yet) is
skipped.  To add a subcommand, write ``add_parser`` in its module and append the module here.

Exit codes: 0 success, 1 a run failed, 2 bad arguments (argparse), 3 a run diverged,
130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import sys

__all__ = ["main", "build_parser", "add_config_arguments", "config_from_args", "SUBCOMMAND_MODULES",
           "EXIT_CODES"]

SUBCOMMAND_MODULES = ("ndlib.cli", "ndlib.grid", "ndlib.bench")

EXIT_CODES = {"completed": 0, "failed": 1, "usage": 2, "diverged": 3, "interrupted": 130}

_CHOICES = {
    "arch": lambda: __import__("ndlib.train", fromlist=["known_archs"]).known_archs(),
    "norm": lambda: ["bn", "nd", "none"],
    "dataset": lambda: sorted(__import__("ndlib.data", fromlist=["DATASETS"]).DATASETS),
}

_HELP = {
    "arch": "architecture (ndlib.models.available())",
    "batch_size": "global batch size (default: the paper's, 128 CIFAR / 256 ImageNet)",
    "weight_decay": "default: the paper's, 1e-3 CIFAR / 1e-4 ImageNet",
    "deconv_refresh_every": "ND only: re-estimate the whitening every k-th training step (default: every step, the paper's layer)",
    "synthetic": "train on labelled SYNTHETIC data of the dataset's shape (smoke runs)",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "num_threads": "torch CPU threads (default: torch's choice)",
    "deterministic": "deterministic kernels (default: on for CPU, off for CUDA)",
    "amp": "bfloat16 autocast (off in the paper's settings)",
    "channels_last": "channels_last memory format",
    "data_dir": "folder with <dataset>_train/test.npz or torchvision's folders (default: <project>/data)",
    "download": "let torchvision download CIFAR into --data-dir (needs internet)",
    "runs_dir": "where the run record goes (default: <project>/results/runs)",
    "checkpoint_dir": "default: <project>/checkpoints",
    "note": "free text stored in the record (e.g. 'shared machine, 2 runs concurrently')",
}


def _base_type(annotation) -> type:
    """``int | None`` -> int; ``bool`` -> bool (annotations are strings under future annotations)."""
    hints = {"int": int, "float": float, "str": str, "bool": bool}
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return hints[text.split("|")[0].strip()]


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per :class:`~ndlib.train.TrainConfig` field: ``--batch-size``, ``--amp/--no-amp``..."""
    from ndlib.train import TrainConfig

    for item in dataclasses.fields(TrainConfig):
        if item.name in skip:
            continue
        flag = "--" + item.name.replace("_", "-")
        kind = _base_type(item.type)
        help_text = _HELP.get(item.name, "")
        if kind is bool:
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction, default=item.default,
                                help=help_text)
        else:
            choices = _CHOICES[item.name]() if item.name in _CHOICES else None
            parser.add_argument(flag, dest=item.name, type=kind, default=item.default, choices=choices,
                                help=help_text + (f" (default: {item.default})" if item.default is not None else ""))


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Build the TrainConfig; a validation error becomes a usage error (exit 2) with its message."""
    from ndlib.train import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    try:
        return TrainConfig(**values)
    except (ValueError, TypeError) as error:
        parser.error(str(error))


def _train(args: argparse.Namespace) -> int:
    from ndlib.distributed import context_from_env
    from ndlib.grid import ClaimTaken, claim
    from ndlib.train import run

    config = config_from_args(args, args.parser)
    print(f"run {config.run_id}", file=sys.stderr)
    # The grid's claim: never two trainers on one configuration.  Under torchrun only rank 0
    # claims (the other ranks are part of the same run).
    is_main = context_from_env().is_main
    try:
        with claim(config.run_id) if is_main else contextlib.nullcontext():
            record = run(config, progress=not args.no_progress, resume=args.resume)
    except ClaimTaken as taken:
        print(f"not started: {taken}", file=sys.stderr)
        return EXIT_CODES["failed"]
    except KeyboardInterrupt:
        print(f"run {config.run_id} interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except Exception as error:  # recorded as "failed" by run(); report it and exit non-zero
        print(f"run {config.run_id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_CODES["failed"]
    final = record.get("final") or {}
    summary = {k: final.get(k) for k in ("train_loss", "train_acc", "test_acc", "test_top5", "train_time_s")}
    print(f"{config.run_id}: {record['status']} {summary}")
    return EXIT_CODES.get(record["status"], 1)


def add_parser(subparsers) -> None:
    """Register ``train``."""
    parser = subparsers.add_parser("train", help="train one configuration and write its run record",
                                   description="Train one configuration (paper defaults) and write "
                                               "results/runs/<run_id>.json.")
    add_config_arguments(parser)
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from the run's last checkpoint if there is one (default: yes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_train, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ndlib", description="Network deconvolution, reproduced.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = sys.modules[__name__] if name == __name__ else importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # the module exists but one of its imports is missing: a real bug
                raise
            continue
        register = getattr(module, "add_parser", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))
