"""Training loop: config validation, run ids, records, cosine schedule, divergence, failure, resume."""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from _experiments_helpers import CallAt, raising, tiny_config, tiny_model
from ndlib import cpu_memory
from ndlib.checkpoint import checkpoint_position
from ndlib.records import load_runs, timing_settings_mixed
from ndlib.train import TrainConfig, run


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
def test_paper_defaults_per_table():
    cifar = TrainConfig(arch="vgg16", dataset="cifar10")
    assert (cifar.batch_size, cifar.weight_decay, cifar.lr, cifar.momentum) == (128, 1e-3, 0.1, 0.9)
    imagenet = TrainConfig(arch="resnet18_imagenet", dataset="imagenet", epochs=90)
    assert (imagenet.batch_size, imagenet.weight_decay, imagenet.table) == (256, 1e-4, 2)
    assert not cifar.amp and not cifar.channels_last


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"arch": "alexnet"}, "valid:"),
        ({"arch": "vgg11_imagenet"}, "unknown arch"),  # a Table 2 arch on CIFAR
        ({"norm": "gn"}, "valid:"),
        ({"norm": "none"}, "vgg11_imagenet only"),
        ({"dataset": "mnist"}, "valid:"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"deconv_refresh_every": 0}, "deconv_refresh_every"),
        ({"deconv_refresh_every": 4, "deconv_refresh_stats": "ema"}, "deconv_refresh_stats must be one of"),
        ({"deconv_refresh_stats": "last"}, "set deconv_refresh_every > 1"),
        ({"deconv_refresh_every": 1, "deconv_refresh_stats": "last"}, "set deconv_refresh_every > 1"),
        ({"deconv_refresh_warmup": 100}, "set deconv_refresh_every > 1"),
        ({"deconv_refresh_every": 4, "deconv_refresh_warmup": -1}, "deconv_refresh_warmup must be a non-negative"),
        ({"norm": "nd", "amp": True, "deconv_covariance_grad": "bf16"}, "deconv_covariance_grad must be one of"),
        ({"norm": "nd", "deconv_covariance_grad": "input"}, "only changes a bf16 autocast run"),
        ({"norm": "bn", "amp": True, "deconv_covariance_grad": "input"}, "only apply to ND models"),
    ],
)
def test_bad_config_raises_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_config_is_frozen():
    config = TrainConfig()
    with pytest.raises(dataclasses_frozen_error()):
        config.lr = 1.0  # type: ignore[misc]


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_run_id_names_the_cell_and_hashes_other_options():
    base = TrainConfig(arch="vgg16", norm="nd", dataset="cifar10", epochs=1, seed=0)
    assert base.run_id == "t1-cifar10-vgg16-nd-e1-s0"
    # Placement does not change the id; a changed hyper-parameter does.
    assert TrainConfig(arch="vgg16", norm="nd", device="cpu", num_threads=1, note="x",
                       keep_freed_memory=False).run_id == base.run_id
    changed = TrainConfig(arch="vgg16", norm="nd", lr=0.05)
    assert changed.run_id.startswith("t1-cifar10-vgg16-nd-e1-s0-o") and changed.run_id != base.run_id
    assert TrainConfig(arch="vgg16", norm="nd", lr=0.05).run_id == changed.run_id  # stable
    assert TrainConfig(arch="vgg16", norm="nd", batch_size=128).run_id == base.run_id  # default made explicit
    assert "-syn-" in TrainConfig(arch="vgg16", synthetic=True).run_id


def test_refresh_options_reach_the_model_and_name_the_run():
    from ndlib.layers import FastDeconv
    from ndlib.train import create_model

    running = TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4)
    last = TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4, deconv_refresh_stats="last")
    ids = {TrainConfig(arch="vgg16", norm="nd").run_id, running.run_id, last.run_id}
    assert len(ids) == 3  # the paper's layer and the two refresh modes never share a record
    explicit = TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4, deconv_refresh_stats="running")
    assert explicit == running and explicit.run_id == running.run_id  # the default spelled out: same run
    same = TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4, deconv_refresh_warmup=0)
    assert same.run_id == running.run_id
    warm = TrainConfig(arch="vgg16", norm="nd", deconv_refresh_every=4, deconv_refresh_warmup=100)
    assert warm.run_id not in ids and warm.deconv_options()["refresh_warmup"] == 100
    assert last.deconv_options() == {"refresh_every": 4, "refresh_stats": "last"}
    with torch.device("meta"):
        model = create_model(last)
    layers = [m for m in model.modules() if isinstance(m, FastDeconv)]
    assert layers and all((m.refresh_every, m.refresh_stats) == (4, "last") for m in layers)


def test_covariance_grad_option_reaches_the_model_and_names_the_run():
    from ndlib.layers import Delinear, FastDeconv
    from ndlib.train import create_model

    bf16 = TrainConfig(arch="vgg16", norm="nd", amp=True)
    low = TrainConfig(arch="vgg16", norm="nd", amp=True, deconv_covariance_grad="input")
    assert low.run_id != bf16.run_id and low.deconv_options() == {"covariance_grad": "input"}
    # the default spelled out is the same run
    assert TrainConfig(arch="vgg16", norm="nd", amp=True, deconv_covariance_grad="statistics") == bf16
    with torch.device("meta"):
        model = create_model(low)
    layers = [m for m in model.modules() if isinstance(m, (FastDeconv, Delinear))]
    assert layers and all(m.covariance_grad == "input" for m in layers)


def test_config_round_trips_through_dict():
    config = TrainConfig(arch="resnet18", norm="nd", deconv_block=32, lr=0.05)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"archh": "vgg16"})


# --------------------------------------------------------------------------------------
# Runs on tiny synthetic data
# --------------------------------------------------------------------------------------
def test_run_writes_a_complete_record(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    record = run(config, model=tiny_model(), progress=False)
    on_disk = json.loads((tmp_path / "runs" / f"{config.run_id}.json").read_text())
    assert on_disk["status"] == record["status"] == "completed"
    assert on_disk["label"] == "synthetic smoke run" and on_disk["data_source"]["synthetic"] is True
    assert on_disk["config"]["lr"] == 0.1 and on_disk["table"] == 1
    assert len(on_disk["history"]) == 2
    for key in ("ndlib_version", "git_commit", "git_dirty", "torch_version", "torchvision_version", "cuda_version",
                "cudnn_version", "device_name", "cpu_name", "cpu_bf16_isa", "num_threads"):
        assert key in on_disk["environment"]
    assert on_disk["environment"]["num_threads"] == 1 and on_disk["environment"]["deterministic"] is True
    assert on_disk["environment"]["keep_freed_memory"] is cpu_memory.is_kept()
    for entry in on_disk["history"]:
        assert 0 <= entry["train_acc"] <= 100 and 0 <= entry["test_acc"] <= entry["test_top5"] <= 100
        assert entry["train_time_s"] > 0 and entry["eval_time_s"] > 0 and entry["images_per_s"] > 0
        assert entry["train_images"] == 64 and entry["test_images"] == 32 and entry["peak_mem_mb"] > 0
    assert on_disk["final"] == on_disk["history"][-1]
    assert on_disk["started_at"] <= on_disk["finished_at"]
    # Cosine per step to zero: 4 steps per epoch, lr at the start of epoch 2 is lr/2, last step ends at 0.
    assert on_disk["history"][1]["lr"] == pytest.approx(0.05)
    assert on_disk["history"][1]["lr_end"] == pytest.approx(0.0, abs=1e-12)
    assert on_disk["history"][1]["global_step"] == 8
    assert (tmp_path / "checkpoints" / config.run_id / "last.pt").is_file()


def test_training_learns_the_synthetic_classes(tmp_path):
    config = tiny_config(tmp_path, epochs=4, synthetic_train_size=256, synthetic_num_classes=4, lr=0.05)
    record = run(config, model=tiny_model(num_classes=4), progress=False)
    history = record["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 50.0  # chance is 25%


def test_same_seed_same_result(tmp_path):
    first = run(tiny_config(tmp_path / "a"), model=tiny_model(nd=True), progress=False)
    second = run(tiny_config(tmp_path / "b"), model=tiny_model(nd=True), progress=False)
    assert first["final"]["train_loss"] == second["final"]["train_loss"]
    assert first["final"]["test_acc"] == second["final"]["test_acc"]


class _NanAfter(nn.Module):
    """Wraps a model; from the ``bad_call``-th training forward on, the output is NaN."""

    def __init__(self, model: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.model, self.bad_call, self.calls = model, bad_call, 0

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls > self.bad_call:
                out = out * float("nan")
        return out


def test_non_finite_loss_stops_with_diverged_and_the_step(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    record = run(config, model=_NanAfter(tiny_model(), bad_call=6), progress=False)  # steps 0-5 fine
    assert record["status"] == "diverged"
    assert record["divergence"]["step"] == 6 and record["divergence"]["epoch"] == 1  # second epoch (0-based)
    assert record["divergence"]["loss"] == "nan"
    assert len(record["history"]) == 1  # the first epoch finished
    on_disk = json.loads((tmp_path / "runs" / f"{config.run_id}.json").read_text())
    assert on_disk["status"] == "diverged"


def test_huge_learning_rate_diverges(tmp_path):
    record = run(tiny_config(tmp_path, lr=1e12, epochs=2), model=tiny_model(), progress=False)
    assert record["status"] == "diverged" and isinstance(record["divergence"]["step"], int)


def test_exception_records_failed_and_reraises(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run(config, model=CallAt(tiny_model(), 2, raising(RuntimeError("boom"))), progress=False)
    record = json.loads((tmp_path / "runs" / f"{config.run_id}.json").read_text())
    assert record["status"] == "failed" and "boom" in record["error"] and record["finished_at"]


def _weights(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("nd", [False, True])
def test_resume_after_interrupt_reaches_the_same_result(tmp_path, nd):
    straight_model = CallAt(tiny_model(nd=nd), 0, raising(RuntimeError("never")))  # same wrapper, never raises
    straight = run(tiny_config(tmp_path / "straight", epochs=2), model=straight_model, progress=False)

    config = tiny_config(tmp_path / "resumed", epochs=2)
    # Interrupt at the first training step of epoch 2 (4 steps per epoch).
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(nd=nd), 5, raising(KeyboardInterrupt())), progress=False)
    interrupted = json.loads((tmp_path / "resumed" / "runs" / f"{config.run_id}.json").read_text())
    assert interrupted["status"] == "interrupted" and len(interrupted["history"]) == 1

    # A different initialisation: the checkpoint must overwrite it.
    resumed_model = CallAt(tiny_model(nd=nd, seed=123), 0, raising(RuntimeError("never")))
    resumed = run(config, model=resumed_model, progress=False)
    assert resumed["status"] == "completed" and resumed["resumed_at_epochs"] == [1]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for key in ("train_loss", "train_acc", "test_acc", "test_top5", "test_loss"):
        assert resumed["final"][key] == straight["final"][key], key
    expected, got = _weights(straight_model), _weights(resumed_model)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def _stop_at_second_epoch(config: TrainConfig) -> Path:
    """Run ``config`` (4 steps per epoch) until a KeyboardInterrupt at the first step of epoch 2;
    returns the checkpoint it left."""
    with pytest.raises(KeyboardInterrupt):
        run(config, model=CallAt(tiny_model(), 5, raising(KeyboardInterrupt())), progress=False)
    return Path(config.checkpoint_dir) / config.run_id / "last.pt"


def test_checkpoint_position_says_where_a_run_resumes_and_refuses_what_it_cannot_use(tmp_path):
    at_epoch_end = tiny_config(tmp_path / "a", epochs=2)
    assert checkpoint_position(at_epoch_end) is None
    checkpoint = _stop_at_second_epoch(at_epoch_end)
    assert checkpoint_position(at_epoch_end).describe() == "resumes from its checkpoint: 1 of 2 epochs done, step 4"
    assert checkpoint_position(at_epoch_end).fraction_done == 0.5  # 1 of 2 epochs

    mid_epoch = tiny_config(tmp_path / "b", epochs=2, checkpoint_interval_s=0)  # a checkpoint after every step
    with pytest.raises(KeyboardInterrupt):
        run(mid_epoch, model=CallAt(tiny_model(), 3, raising(KeyboardInterrupt())), progress=False)
    assert checkpoint_position(mid_epoch).describe() == (
        "resumes from its checkpoint: epoch 1 of 2, 32 training images in, step 2")
    assert checkpoint_position(mid_epoch).fraction_done == 0.25  # 2 of the 4 steps of epoch 1 of 2
    # ``seen`` counts the writing process's shard: with 2 processes, twice the images were used
    mid_checkpoint = Path(mid_epoch.checkpoint_dir) / mid_epoch.run_id / "last.pt"
    state = torch.load(mid_checkpoint, weights_only=True)
    assert state["world_size"] == 1
    torch.save({**state, "world_size": 2}, mid_checkpoint)
    assert checkpoint_position(mid_epoch).images_in == 64 and checkpoint_position(mid_epoch).fraction_done == 0.25

    state = torch.load(checkpoint, weights_only=True)
    state["identity_json"] = json.dumps({**json.loads(state["identity_json"]), "lr": 0.5}, sort_keys=True)
    torch.save(state, checkpoint)
    assert checkpoint_position(at_epoch_end).describe() == (
        f"checkpoint belongs to another configuration: delete {checkpoint} to start the run over")
    assert checkpoint_position(at_epoch_end).fraction_done == 0.0  # the run would start over
    checkpoint.write_bytes(b"")
    assert checkpoint_position(at_epoch_end).describe().startswith("checkpoint cannot be read (")
    assert checkpoint_position(at_epoch_end).fraction_done == 0.0


def test_a_resumed_run_kept_freed_memory_only_if_every_attempt_did(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    checkpoint = _stop_at_second_epoch(config)
    state = torch.load(checkpoint, weights_only=True)
    assert state["keep_freed_memory"] is cpu_memory.is_kept()
    del state["keep_freed_memory"]  # as written before the setting existed: that attempt did not keep it
    torch.save(state, checkpoint)
    resumed = run(config, model=CallAt(tiny_model(), 0, raising(RuntimeError("never"))), progress=False)
    assert resumed["status"] == "completed" and resumed["resumed_at_epochs"] == [1]
    assert resumed["environment"]["keep_freed_memory"] is False


def test_a_run_records_its_training_segments_and_whether_their_settings_mixed(tmp_path):
    """Each start and resume is a segment with the settings that time it; resumed at another
    thread count, the record's time mixes settings (its accuracy is exact either way)."""
    never = RuntimeError("never")
    straight = run(tiny_config(tmp_path / "straight", epochs=2), model=tiny_model(), progress=False)
    assert [s["from_step"] for s in straight["segments"]] == [0]
    assert straight["segments"][0]["num_threads"] == 1 and straight["segments"][0]["device_type"] == "cpu"
    assert straight["segments"][0]["machine_id"] == straight["environment"]["machine_id"]
    assert not timing_settings_mixed(straight)

    same = tiny_config(tmp_path / "same", epochs=2)
    _stop_at_second_epoch(same)
    resumed_same = run(same, model=CallAt(tiny_model(), 0, raising(never)), progress=False)
    assert [s["from_step"] for s in resumed_same["segments"]] == [0, 4]
    assert not timing_settings_mixed(resumed_same)

    config = tiny_config(tmp_path / "mixed", epochs=2)
    _stop_at_second_epoch(config)
    more_threads = dataclasses.replace(config, num_threads=2)  # not part of the run's identity: it resumes
    assert more_threads.run_id == config.run_id
    mixed = run(more_threads, model=CallAt(tiny_model(), 0, raising(never)), progress=False)
    assert mixed["status"] == "completed" and mixed["resumed_at_steps"] == [4]
    assert [(s["from_step"], s["num_threads"]) for s in mixed["segments"]] == [(0, 1), (4, 2)]
    assert timing_settings_mixed(mixed)
    assert mixed["final"]["test_acc"] == straight["final"]["test_acc"]
    (row,) = load_runs(tmp_path / "mixed" / "runs").itertuples()
    assert row.timing_mixed and row.num_threads == 2


def test_a_checkpoint_without_segments_resumes_with_its_first_settings_unknown(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    checkpoint = _stop_at_second_epoch(config)
    state = torch.load(checkpoint, weights_only=True)
    assert [s["from_step"] for s in json.loads(state["segments_json"])] == [0]
    del state["segments_json"]  # as written before segments were recorded
    torch.save(state, checkpoint)
    never_called = CallAt(tiny_model(), 0, raising(RuntimeError("never")))
    resumed = run(dataclasses.replace(config, num_threads=2), model=never_called, progress=False)
    first, second = resumed["segments"]
    assert first["unknown_settings"] and first["from_step"] == 0 and "num_threads" not in first
    assert second["from_step"] == 4 and second["num_threads"] == 2
    assert not timing_settings_mixed(resumed)  # nothing says the first segment differed


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    config = tiny_config(tmp_path)
    run(config, model=tiny_model(), progress=False)
    checkpoint = tmp_path / "checkpoints" / config.run_id / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["identity_json"] = "{}"
    torch.save(state, checkpoint)
    (tmp_path / "runs" / f"{config.run_id}.json").unlink()  # no completed record: it would be kept
    with pytest.raises(ValueError, match="different configuration"):
        run(config, model=tiny_model(), progress=False)


def test_checkpoint_written_before_a_config_field_existed_still_resumes(tmp_path):
    """A field added to TrainConfig later is missing from old checkpoints: it matches its default only."""
    config = tiny_config(tmp_path, epochs=2, norm="nd")  # ND: the deconv_* fields apply to it
    straight = run(config, model=tiny_model(nd=True), progress=False)
    checkpoint = tmp_path / "checkpoints" / config.run_id / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    old_identity = {k: v for k, v in json.loads(state["identity_json"]).items() if k != "deconv_refresh_stats"}
    state["identity_json"] = json.dumps(old_identity, sort_keys=True)
    torch.save(state, checkpoint)
    (tmp_path / "runs" / f"{config.run_id}.json").unlink()
    resumed = run(config, model=tiny_model(nd=True), progress=False)  # the final checkpoint: nothing left to train
    assert resumed["status"] == "completed" and resumed["final"]["test_acc"] == straight["final"]["test_acc"]
    # the same old checkpoint is not one of a run that sets the new field
    (tmp_path / "runs" / f"{config.run_id}.json").unlink()
    other = dataclasses.replace(config, deconv_refresh_every=2, deconv_refresh_stats="last")
    other_checkpoint = tmp_path / "checkpoints" / other.run_id / "last.pt"
    other_checkpoint.parent.mkdir(parents=True)
    other_checkpoint.write_bytes(checkpoint.read_bytes())
    with pytest.raises(ValueError, match="different configuration"):
        run(other, model=tiny_model(nd=True), progress=False)


def test_completed_checkpoint_resumes_to_the_end_without_training(tmp_path):
    config = tiny_config(tmp_path)
    first = run(config, model=CallAt(tiny_model(), 0, raising(RuntimeError("never"))), progress=False)
    again = run(config, model=CallAt(tiny_model(), 1, raising(RuntimeError("must not train"))), progress=False)
    assert again["status"] == "completed" and again["final"]["test_acc"] == first["final"]["test_acc"]


def test_run_restores_global_torch_settings(tmp_path):
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    run(tiny_config(tmp_path, num_threads=1), model=tiny_model(), progress=False)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_amp_and_channels_last_flags_run_on_cpu(tmp_path):
    config = tiny_config(tmp_path, amp=True, channels_last=True)
    record = run(config, model=tiny_model(), progress=False)
    assert record["status"] == "completed" and record["environment"]["amp"] is True
    assert math.isfinite(record["final"]["train_loss"])
    assert config.run_id != tiny_config(tmp_path).run_id


def test_a_channels_last_run_feeds_its_nd_layers_channels_last_inputs(tmp_path, monkeypatch):
    """The campaign's channels_last runs are faster only if the ND layers see channels-last
    activations (their patch route from channels-last memory): batches and model are converted."""
    import ndlib.layers as nd_layers
    import ndlib.patches as nd_patches

    seen = []
    route = nd_patches._patches_channels_last
    monkeypatch.setattr(nd_patches, "_patches_channels_last", lambda layer, x: seen.append(layer) or route(layer, x))
    torch.manual_seed(0)
    model = nn.Sequential(nd_layers.FastDeconv(3, 8, 3, padding=1), nn.ReLU(),
                          nd_layers.FastDeconv(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    record = run(tiny_config(tmp_path, norm="nd", channels_last=True), model=model, progress=False)
    assert record["status"] == "completed"
    steps = record["steps_per_epoch"]
    assert {id(layer) for layer in seen} == {id(model[0]), id(model[2])}
    assert len(seen) == 2 * steps  # every training step of both layers (evaluation uses the running statistics)
    seen.clear()
    run(tiny_config(tmp_path / "contiguous", norm="nd"), model=model, progress=False)
    assert not seen  # a contiguous run never takes it


def test_cuda_device_requested_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        run(tiny_config(tmp_path, device="cuda"), model=tiny_model(), progress=False)


@pytest.mark.slow
def test_real_vgg16_nd_smoke_run_from_the_registry(tmp_path):
    """The full path with ndlib.models.create (slow on CPU: VGG-16 ND, a few steps)."""
    config = tiny_config(tmp_path, norm="nd", synthetic_image_size=32, synthetic_train_size=32,
                         synthetic_test_size=16)
    record = run(config, progress=False)
    assert record["status"] == "completed" and record["model"]["source"] == "ndlib.models.create"


# --------------------------------------------------------------------------------------
# The notebooks' entry point
# --------------------------------------------------------------------------------------
def test_run_notebook_keeps_synthetic_records_out_of_the_project(tmp_path, monkeypatch):
    import ndlib.train as train_module
    from ndlib.paths import runs_dir

    monkeypatch.setattr(train_module, "create_model", lambda config: tiny_model())
    parameters = dict(arch="vgg16", norm="bn", dataset="cifar10", epochs=1, seed=0, batch_size=16, synthetic=True,
                      synthetic_train_size=32, synthetic_test_size=16, synthetic_image_size=8, device="cpu",
                      num_threads=1, records_dir="")
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    record = train_module.run_notebook(parameters)
    assert record["status"] == "completed" and record["label"] == "synthetic smoke run"
    assert record["record_path"] is None and not list(Path(runs_dir()).glob(f"{record['run_id']}*"))
    assert not list(scratch_root.glob("ndlib-synthetic-*"))  # the smoke run's folder (record, weights) is removed
    explicit = train_module.run_notebook({**parameters, "records_dir": str(tmp_path / "mine"),
                                          "checkpoint_dir": str(tmp_path / "ck")})
    assert explicit["record_path"] == str(tmp_path / "mine" / f"{record['run_id']}.json")
    assert (tmp_path / "ck" / record["run_id"] / "last.pt").is_file()  # a folder the user names is kept


def test_run_notebook_deletes_a_failed_smoke_runs_checkpoints(tmp_path, monkeypatch):
    import ndlib.train as train_module

    def crash(config, **_):
        Path(config.checkpoint_dir, config.run_id).mkdir(parents=True)
        Path(config.checkpoint_dir, config.run_id, "last.pt").write_bytes(b"weights")
        raise RuntimeError("crashed mid-run")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(train_module, "run", crash)
    with pytest.raises(RuntimeError, match="crashed mid-run"):
        train_module.run_notebook(dict(arch="vgg16", norm="bn", synthetic=True, device="cpu"))
    assert not list(tmp_path.glob("ndlib-synthetic-*"))


@pytest.mark.parametrize("parameters, message", [
    ({"arch": "vgg16", "epoch": 1}, "unknown notebook parameter"),
    ({"arch": "vgg16", "norm": "batchnorm"}, "valid"),
    ({"arch": "vgg16", "synthetic": "yes"}, "True or False"),
    ({"arch": "vgg16", "keep_freed_memory": "no"}, "keep_freed_memory must be True or False"),
])
def test_run_notebook_rejects_bad_parameters(parameters, message):
    from ndlib.train import run_notebook

    with pytest.raises((ValueError, TypeError), match=message):
        run_notebook(parameters)


def test_a_misspelled_notebook_parameter_is_refused_with_the_valid_names():
    """papermill -p epoch 3 -p Seed 5 injects new variables; they must not silently train the defaults."""
    from ndlib.train import notebook_parameters

    namespace = {"epochs": 1, "seed": 0, "In": [], "get_ipython": print, "_": 1, "run_notebook": print}
    assert notebook_parameters(namespace, ["epochs", "seed"], {"In"}) == {"epochs": 1, "seed": 0}
    injected = {**namespace, "epoch": 3, "Seed": 5}
    message = r"unknown notebook parameter\(s\) \['Seed', 'epoch'\]; valid: \['epochs', 'seed'\]"
    with pytest.raises(ValueError, match=message):
        notebook_parameters(injected, ["epochs", "seed"], {"In"})


def test_papermill_with_a_misspelled_parameter_fails_the_notebook(tmp_path):
    papermill = pytest.importorskip("papermill")
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "table1_cifar.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter.*epoch"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), parameters={"epoch": 3},
                                   progress_bar=False, kernel_name="python3")


def test_imagenet_class_folders_train_through_run(tmp_path):
    from test_data import _fake_imagenet

    _fake_imagenet(tmp_path / "imagenet")
    config = TrainConfig(arch="resnet18_imagenet", dataset="imagenet", data_dir=str(tmp_path / "imagenet"),
                         batch_size=4, num_workers=0, device="cpu", num_threads=1, runs_dir=str(tmp_path / "runs"),
                         checkpoint_dir=str(tmp_path / "ck"))
    record = run(config, model=tiny_model(num_classes=2), progress=False)
    assert record["status"] == "completed" and record["data_source"]["kind"] == "imagefolder"
    assert record["label"] == "" and record["history"][0]["train_images"] == 6
    assert record["history"][0]["test_top5"] == 100.0  # top-k with k = min(5, 2 classes)
