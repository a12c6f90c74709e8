"""What every subcommand shares: the one-line usage errors, the exit codes, and the options
built from :class:`~ndlib.config.TrainConfig` (:func:`config_options`, the one table of flags:
the parsers are built from it, and :meth:`TrainConfig.command_line` writes its flags from it).

``ndlib.cli`` (the ``train`` subcommand and the entry point), ``ndlib.grid`` and
``ndlib.bench`` import from here; nothing here imports them, so the modules form no cycle.

Bad input never ends in a traceback: :class:`ArgumentParser` prints one line that names the
problem (and, in the message, the fix) and exits with code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["EXIT_CODES", "ArgumentParser", "usage_error", "ConfigOption", "config_options", "add_config_arguments",
           "config_from_args"]

#: 0 success, 1 a run failed, 2 bad input, 3 a run diverged, 130 interrupted.
EXIT_CODES = {"completed": 0, "failed": 1, "usage": 2, "diverged": 3, "interrupted": 130}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: ``<prog>: error: <problem> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CODES["usage"], f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def usage_error(prog: str, message: str) -> int:
    """Print a one-line usage error for ``prog`` and return exit code 2 (for handlers)."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_CODES["usage"]


def _choices(name: str) -> list | None:
    """The values option ``name`` accepts where they are a fixed set, else None (imported here, when
    a parser is built, so that importing this module imports no model code)."""
    from ndlib.config import known_archs
    from ndlib.data import DATASETS
    from ndlib.layers import COVARIANCE_GRADS, REFRESH_STATS
    from ndlib.models import NORMS

    if name == "arch":
        return known_archs()
    fixed = {"norm": list(NORMS), "dataset": sorted(DATASETS), "deconv_refresh_stats": list(REFRESH_STATS),
             "deconv_covariance_grad": list(COVARIANCE_GRADS)}
    return fixed.get(name)

_HELP = {
    "arch": "architecture (ndlib.models.available(extras=True))",
    "batch_size": "global batch size (default: the paper's, 128 CIFAR / 256 ImageNet)",
    "weight_decay": "default: the paper's, 1e-3 CIFAR / 1e-4 ImageNet",
    "deconv_refresh_every": "ND only: re-estimate the whitening every k-th training step "
                            "(default: every step, the paper's layer)",
    "deconv_refresh_stats": "ND with --deconv-refresh-every > 1: whiten between refreshes with the running "
                            "statistics (default) or the last refresh's estimate",
    "deconv_refresh_warmup": "ND with --deconv-refresh-every > 1: estimate on every one of the first N training "
                             "steps, then every k-th (default 0)",
    "deconv_covariance_grad": "ND with --amp: run the covariance's backward product in float32 like the "
                              "statistics (default) or in bfloat16, the dtype its result is cast to",
    "synthetic": "train on labelled SYNTHETIC data of the dataset's shape (smoke runs)",
    "device": "auto (CUDA if available), cpu, cuda or cuda:N",
    "num_threads": "torch CPU threads (default: torch's choice)",
    "keep_freed_memory": "CPU runs: keep freed memory in the process instead of page-faulting every step's "
                         "tensors in again (glibc; bit-identical results, faster steps)",
    "deterministic": "deterministic kernels (default: on for CPU, off for CUDA)",
    "amp": "bfloat16 autocast (off in the paper's settings)",
    "channels_last": "channels_last memory format",
    "data_dir": "folder with <dataset>_train/test.npz or torchvision's folders (default: <project>/data)",
    "download": "let torchvision download CIFAR into --data-dir (needs internet)",
    "checkpoint_interval_s": "also checkpoint within an epoch every this many seconds (0: every step)",
    "runs_dir": "where the run record goes (default: <project>/results/runs)",
    "checkpoint_dir": "default: <project>/checkpoints",
    "note": "free text stored in the record: the machine and its load (e.g. 'shared 2-core machine, 2 runs')",
}


def _base_type(annotation) -> type:
    """``int | None`` -> int; ``bool`` -> bool (annotations are strings under future annotations)."""
    hints = {"int": int, "float": float, "str": str, "bool": bool}
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return hints[text.split("|")[0].strip()]


@dataclass(frozen=True)
class ConfigOption:
    """The command-line option of one :class:`~ndlib.config.TrainConfig` field: ``flag``
    (``--batch-size``) takes a value of type ``kind``; a bool field is a pair ``--amp`` / ``--no-amp``."""

    name: str
    flag: str
    kind: type
    default: object
    help: str

    @property
    def negative_flag(self) -> str | None:
        return "--no-" + self.flag[2:] if self.kind is bool else None

    def words(self, value) -> list[str]:
        """The argv words that set the field to ``value`` (none for None, the parser's default)."""
        if self.kind is bool:
            return [self.flag if value else self.negative_flag]
        return [] if value is None else [self.flag, str(value)]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.kind is bool:
            parser.add_argument(self.flag, dest=self.name, action=argparse.BooleanOptionalAction, default=self.default,
                                help=self.help)
        else:
            choices = _choices(self.name)
            parser.add_argument(self.flag, dest=self.name, type=self.kind, default=self.default, choices=choices,
                                help=self.help + (f" (default: {self.default})" if self.default is not None else ""))


def config_options(skip: tuple[str, ...] = ()) -> list[ConfigOption]:
    """One :class:`ConfigOption` per :class:`~ndlib.config.TrainConfig` field (but ``skip``), in field order."""
    from ndlib.config import TrainConfig

    return [ConfigOption(item.name, "--" + item.name.replace("_", "-"), _base_type(item.type), item.default,
                         _HELP.get(item.name, ""))
            for item in dataclasses.fields(TrainConfig) if item.name not in skip]


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per :class:`~ndlib.config.TrainConfig` field: ``--batch-size``, ``--amp/--no-amp``..."""
    for option in config_options(skip):
        option.add_to(parser)


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Build the TrainConfig; a validation error becomes a usage error (exit 2) with its message."""
    from ndlib.config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    try:
        return TrainConfig(**values)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
