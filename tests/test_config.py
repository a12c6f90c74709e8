"""TrainConfig's own run id and command line: parsed back, through the real CLI parser, to an equal config."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from ndlib.cli import build_parser, config_from_args
from ndlib.config import RunId, TrainConfig, parse_run_id, run_id_options

CONFIGS = [
    TrainConfig(),
    TrainConfig(arch="resnet18", norm="nd", dataset="cifar100", epochs=20, seed=3),
    TrainConfig(arch="vgg11_imagenet", norm="none", dataset="imagenet", epochs=90, seed=2),
    TrainConfig(arch="efficientnetb0_allnd", norm="nd", epochs=100, seed=4_294_967_295),
    TrainConfig(arch="densenet121", norm="bn", synthetic=True, synthetic_train_size=64, synthetic_image_size=32),
    TrainConfig(arch="vgg16", norm="nd", lr=0.05, deconv_refresh_every=4, deconv_refresh_stats="last",
                deconv_eps=1e-5),
    TrainConfig(arch="resnet18_imagenet", dataset="imagenet", epochs=90, batch_size=128, weight_decay=5e-5, amp=True,
                channels_last=True),
    TrainConfig(arch="mobilenetv2", norm="nd", dataset="cifar100", epochs=20, amp=True, channels_last=True,
                deconv_covariance_grad="input"),
]

# fields that say where and how fast, not what: in the command line, never in the run id
PLACEMENT = dict(device="cuda:1", num_threads=3, keep_freed_memory=False, deterministic=True, num_workers=0,
                 data_dir="data dir/with 'quotes'", checkpoint=False, checkpoint_interval_s=0.0,
                 runs_dir="results/other runs", checkpoint_dir="ckpt", note="shared machine, 2 runs")


def _placement(synthetic: bool) -> dict:
    """:data:`PLACEMENT` (a synthetic run reads no data folder)."""
    return {k: v for k, v in PLACEMENT.items() if not (synthetic and k == "data_dir")}


def _options(config: TrainConfig) -> dict:
    """The fields the run id does not spell out, where they differ from the defaults."""
    cell = {"arch", "norm", "dataset", "epochs", "seed", "synthetic"}
    default = TrainConfig(arch=config.arch, dataset=config.dataset)
    return {k: v for k, v in config.to_dict().items() if k not in cell and getattr(default, k) != v}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.run_id)
def test_from_run_id_round_trips(config):
    parsed = parse_run_id(config.run_id)
    assert (parsed.arch, parsed.norm, parsed.dataset, parsed.epochs, parsed.seed, parsed.synthetic, parsed.table) == (
        config.arch, config.norm, config.dataset, config.epochs, config.seed, config.synthetic, config.table)
    assert parsed.options == run_id_options(config.run_id)
    rebuilt = TrainConfig.from_run_id(config.run_id, **_options(config))
    assert rebuilt == config and rebuilt.run_id == config.run_id


def test_from_run_id_of_the_papers_settings_needs_nothing_else():
    config = TrainConfig.from_run_id("t1-cifar100-resnet18-nd-e20-s3")
    assert config == TrainConfig(arch="resnet18", norm="nd", dataset="cifar100", epochs=20, seed=3)
    assert TrainConfig.from_run_id("t1-cifar10-vgg16-bn-e1-s0", device="cpu").device == "cpu"  # placement is free
    assert parse_run_id("t1-cifar10-syn-vgg16-nd-e2-s0-o1a2b3c4d") == RunId(1, "cifar10", True, "vgg16", "nd", 2, 0,
                                                                           "o1a2b3c4d")


@pytest.mark.parametrize("run_id, message", [
    ("t1-cifar10-vgg16-nd-e20-s0-o1a2b3c4d", "pass them as fields"),  # the hash cannot be inverted
    ("t2-cifar10-vgg16-nd-e20-s0", "belongs to Table 1"),
    ("t1-cifar10-vgg16-gn-e20-s0", "is not a run id"),
    ("cifar10-vgg16", "is not a run id"),
    ("t1-cifar10-alexnet-nd-e20-s0", "unknown arch"),
])
def test_from_run_id_refuses_what_it_cannot_rebuild(run_id, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_run_id(run_id)
    with pytest.raises(ValueError, match="leave out the non-default fields"):
        TrainConfig.from_run_id("t1-cifar10-vgg16-nd-e20-s0", lr=0.05)
    with pytest.raises(ValueError, match="sets arch itself"):
        TrainConfig.from_run_id("t1-cifar10-vgg16-nd-e20-s0", arch="resnet18")


def test_run_id_options_reads_any_value():
    assert run_id_options("t1-cifar10-vgg16-nd-e1-s1-o1a2b3c4d") == "o1a2b3c4d"
    assert run_id_options("t1-cifar10-vgg16-nd-e1-s1") == "" and run_id_options(float("nan")) == ""


@pytest.mark.parametrize("placement", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.run_id)
def test_command_line_parses_back_to_an_equal_config(config, placement):
    import dataclasses

    if placement:
        config = dataclasses.replace(config, **_placement(config.synthetic))
    argv = config.command_line()
    assert argv[:4] == ["python", "-m", "ndlib", "train"]
    parser = build_parser()
    args = parser.parse_args(argv[3:])
    again = config_from_args(args, parser)
    assert again == config and again.to_dict() == config.to_dict()  # note included (it is not compared)
    assert again.run_id == config.run_id
    # the shell string is the same argv once a shell has split it
    words = subprocess.run(["bash", "-c", 'printf "%s\\n" ' + config.shell_command().split(" ", 1)[1]],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert words == argv[1:]
    assert shlex.split(config.shell_command()) == argv


def test_command_line_flags_come_from_the_parsers_table():
    from ndlib.cliargs import config_options

    options = config_options()
    flags = {option.flag for option in options} | {option.negative_flag for option in options if option.negative_flag}
    argv = dataclasses_replace_all().command_line()
    assert {word for word in argv if word.startswith("--")} <= flags


def dataclasses_replace_all() -> TrainConfig:
    return TrainConfig(arch="vgg16", norm="nd", synthetic=True, synthetic_image_size=32, amp=True,
                       **_placement(True))
