"""What network deconvolution costs: train-step timing of BN vs ND models, and where ND spends it.

``python -m ndlib bench --arch resnet18 --batch-size 128 --device cpu --threads 2`` builds the
BN and the ND variant of one architecture (and, by default, the ND variant with the faithful
re-implementation of the public code's layers, :mod:`ndlib._reference`) and times full train
steps -- forward, cross-entropy, backward, SGD step -- on a fixed batch of random tensors
(SYNTHETIC input: timing only, no accuracy is measured).

How the numbers are made fair on a shared machine:

* every variant first runs ``warmup`` steps (allocator, oneDNN/cuDNN kernel choice);
* then ``rounds`` rounds run the variants one after another (A/B/A/B; the order is reversed
  every other round, so no variant always runs right after another), ``steps`` steps each;
* a variant's time in a round is the median of its steps (the record keeps every step) -- or,
  with ``refresh_every = k > 1``, their mean over whole refresh cycles: a round then runs a
  multiple of ``k`` steps (``k`` by default), so it holds as many refresh steps as a training
  run has per step, and the ratio is the amortised cost (a median would drop the refresh
  step and time only the cheap steps in between);
* ``bn_step_s`` / ``nd_step_s`` are medians over rounds, ``ratio_nd_bn`` is the median of the
  per-round ratios ``nd / bn`` (both of one round saw about the same machine load), and the
  smallest and largest per-round ratio give the spread;
* on CUDA every step is bracketed by ``torch.cuda.synchronize()``;
* the record stores the CPU/GPU model, threads, versions, git state, and the load average
  before and after (the machine may be shared: read the ratios, not the seconds);
* and, per variant, how many of its convolutions write channels-last outputs
  (:func:`conv_layouts`): the layout is chosen by each conv from its input's and weight's
  strides, so a model can change layout part-way without being asked to, and a step in the
  other layout is another measurement (oneDNN's grouped convs are much faster channels-last
  on our CPUs).

``--stages`` adds a per-layer breakdown of every deconvolution layer of the ND model: patch
extraction, centering, covariance, Newton-Schulz, weight folding and the convolution, each
forward and backward, timed in isolation on the layer's real input (see :func:`stage_breakdown`).

Records are JSON files in ``results/bench/`` written atomically; :func:`load_bench` and
:func:`load_stages` read them into DataFrames for the book's timing chapter.

GPU runs: ``--device cuda`` (synchronised timing, ``--channels-last`` available).  The same
command gives the Table 1 sweep on a GPU: ``--arch all``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ndlib import cpu_memory
from ndlib import layers as nd_layers
from ndlib import patches as nd_patches
from ndlib.devices import synchronize
from ndlib.isqrt import isqrt_by_method

__all__ = [
    "BenchConfig",
    "run_bench",
    "time_train_steps",
    "conv_layouts",
    "stage_breakdown",
    "layer_inputs",
    "load_bench",
    "load_stages",
    "add_parser",
    "BENCH_COLUMNS",
    "STAGE_COLUMNS",
    "VARIANTS",
]

#: variant name -> (norm of the model, implementation of its deconvolution layers)
VARIANTS = {"bn": ("bn", None), "nd": ("nd", "ndlib"), "nd_reference": ("nd", "reference")}

BENCH_COLUMNS = [
    "bench_id", "arch", "batch_size", "device_type", "device_name", "cpu_bf16_isa", "machine_type", "num_threads",
    "implementation",
    "bn_step_s", "nd_step_s", "ratio_nd_bn", "ratio_min", "ratio_max", "rounds", "steps_per_round",
    "channels_last", "amp", "keep_freed_memory", "image_size", "refresh_every", "round_statistic",
    "bn_convs_channels_last", "nd_convs_channels_last",
    "load_avg_before", "load_avg_after", "torch_version", "git_commit",
    "git_dirty", "created_at", "note", "file",
]
STAGE_COLUMNS = [
    "bench_id", "arch", "batch_size", "device_type", "layer", "kind", "in_channels", "out_channels",
    "kernel_size", "stride", "groups", "input_hw", "stage", "forward_s", "backward_s", "created_at",
]


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark: an architecture at a batch size on a device."""

    arch: str = "resnet18"
    batch_size: int = 128
    device: str = "cpu"
    threads: int | None = 2
    warmup: int = 1
    rounds: int = 5
    steps: int | None = None  # default: 1, or refresh_every (one refresh cycle per round)
    implementations: tuple[str, ...] = ("ndlib", "reference")
    channels_last: bool = False
    amp: bool = False  # bfloat16 autocast in every variant's step, as `ndlib train --amp` trains
    keep_freed_memory: bool = False  # CPU: glibc keeps freed memory (ndlib.cpu_memory), as `ndlib train` does
    image_size: int | None = None  # default: the architecture's input size
    num_classes: int = 10
    stages: bool = False
    refresh_every: int = 1  # ND layers re-estimate the whitening every k-th step (1: the paper's layer)
    stage_repeats: int = 3
    seed: int = 0
    out_dir: str | None = None  # default: <project>/results/bench
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("refresh_every", "batch_size", "rounds", "steps", "num_classes", "stage_repeats"):
            if name == "steps" and self.steps is None:  # one whole refresh cycle per round
                object.__setattr__(self, "steps", self.refresh_every)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {self.warmup!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads <= 0):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")
        unknown = sorted(set(self.implementations) - {"ndlib", "reference"})
        if unknown or not self.implementations:
            raise ValueError("implementations must be a non-empty subset of ('ndlib', 'reference'), "
                             f"got {self.implementations}")
        if self.steps % self.refresh_every:
            raise ValueError(f"steps must be a multiple of refresh_every ({self.refresh_every}), got {self.steps}: "
                             "each round must time whole refresh cycles (leave --steps unset for one cycle)")
        if self.refresh_every != 1 and "reference" in self.implementations:
            raise ValueError("refresh_every applies to ndlib's layers only (the reference is the public code's exact "
                             "layer): use --implementations ndlib with --refresh-every")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size <= 0):
            raise ValueError(f"image_size must be a positive int or None (the architecture's), got {self.image_size!r}")

    @property
    def round_statistic(self) -> str:
        """How a round's steps combine into its time: ``"median"``, or ``"mean"`` (amortised over
        whole refresh cycles) when ``refresh_every > 1``."""
        return "mean" if self.refresh_every > 1 else "median"


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------
def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images, labels, amp: bool = False) -> None:
    """One SGD step; ``amp``: the forward under bfloat16 autocast and the loss in float32, as
    :func:`ndlib.train.run` does with ``amp=True``."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()


def time_train_steps(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    warmup: int = 1,
    rounds: int = 5,
    steps: int = 1,
    lr: float = 0.01,
    log: Callable[[str], None] | None = None,
    round_statistic: str = "median",
    amp: bool = False,
) -> dict[str, list[list[float]]]:
    """Interleaved train-step timing: ``{variant: [[step seconds] per round]}``.

    Each model gets its own SGD optimizer (momentum 0.9, weight decay 1e-3 as in the paper, a
    small lr so that repeated steps on one batch stay finite).  Rounds alternate the order of
    the variants (A B C, C B A, ...).
    """
    if not models:
        raise ValueError("time_train_steps needs at least one model")
    combine = _ROUND_STATISTICS[round_statistic]
    device = images.device
    optimizers = {
        name: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
        for name, model in models.items()
    }
    for model in models.values():
        model.train()
    for name, model in models.items():
        for _ in range(warmup):
            _train_step(model, optimizers[name], images, labels, amp)
        synchronize(device)
    times: dict[str, list[list[float]]] = {name: [] for name in models}
    order = list(models)
    for round_index in range(rounds):
        sequence = order if round_index % 2 == 0 else order[::-1]
        for name in sequence:
            per_step = []
            for _ in range(steps):
                synchronize(device)
                start = time.perf_counter()
                _train_step(models[name], optimizers[name], images, labels, amp)
                synchronize(device)
                per_step.append(time.perf_counter() - start)
            times[name].append(per_step)
        if log is not None:
            log(f"round {round_index + 1}/{rounds}: "
                + ", ".join(f"{name} {combine(times[name][-1]):.3f}s" for name in order))
    for model in models.values():
        for parameter in model.parameters():
            if not torch.isfinite(parameter).all():
                raise ValueError("a benchmarked model produced non-finite parameters; the timing is void")
    return times


_ROUND_STATISTICS = {"median": statistics.median, "mean": statistics.fmean}


def summarize(times: dict[str, list[list[float]]], baseline: str = "bn",
              round_statistic: str = "median") -> dict[str, dict]:
    """Per variant: median step time over rounds, and (vs ``baseline``) the per-round ratios.
    A round's time is the ``round_statistic`` (median, or mean) of its steps; the key keeps
    its historical name ``round_medians_s`` either way (the record's ``round_statistic`` says)."""
    if round_statistic not in _ROUND_STATISTICS:
        raise ValueError(f"round_statistic must be one of {sorted(_ROUND_STATISTICS)}, got {round_statistic!r}")
    combine = _ROUND_STATISTICS[round_statistic]
    round_medians = {name: [combine(r) for r in rounds] for name, rounds in times.items()}
    out = {}
    for name, medians in round_medians.items():
        entry = {"step_s": statistics.median(medians), "round_medians_s": medians}
        if name != baseline and baseline in round_medians:
            ratios = [a / b for a, b in zip(medians, round_medians[baseline])]
            entry.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                         pair_ratios=ratios)
        out[name] = entry
    return out


def conv_layouts(model: nn.Module, images: torch.Tensor, amp: bool = False) -> dict[str, int]:
    """``{"convs": n, "channels_last": m}``: of the ``n`` conv layers of ``model`` whose output
    has more than one pixel, ``m`` write it channels-last (strided so, and not also plain
    contiguous), in one eval-mode forward without gradients of the first two images (no
    statistic or buffer changes; the layout does not depend on the mode), under bfloat16
    autocast with ``amp`` as the timed steps run.

    Why it is recorded: a conv runs channels-last when its input or its weight is strided so,
    and its output then is too, so one layer can switch the rest of a model.  The public code's
    fold, for example, views a 1x1 weight whose input is one block as ``(C_out, C_in, 1, 1)``
    with strides PyTorch reads as channels-last (checked: the public algorithm's ResNeXt-29,
    DPN-92 and MobileNetV2 then run almost every conv channels-last from the stem on, ndlib's
    models none).
    """
    counts = {"convs": 0, "channels_last": 0}

    def count(module, inputs, output):
        if output.dim() == 4 and output.shape[-2] * output.shape[-1] > 1:
            counts["convs"] += 1
            counts["channels_last"] += int(nd_patches._is_channels_last(output))

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            model(images[:2])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return counts


# --------------------------------------------------------------------------------------
# Per-layer stage breakdown
# --------------------------------------------------------------------------------------
def _time_stage(fn, inputs: tuple[torch.Tensor, ...], repeats: int, device) -> tuple[float, float, tuple]:
    """Median forward and backward seconds of ``fn(*inputs)`` (backward: a random upstream grad)."""
    leaves = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in inputs)
    forward, backward = [], []
    outputs = None
    for _ in range(repeats + 1):  # the first call is a warm-up
        synchronize(device)
        start = time.perf_counter()
        outputs = fn(*leaves)
        synchronize(device)
        forward.append(time.perf_counter() - start)
        outs = outputs if isinstance(outputs, tuple) else (outputs,)
        grads = tuple(torch.randn_like(o) for o in outs)
        wrt = tuple(t for t in leaves if t.requires_grad)
        synchronize(device)
        start = time.perf_counter()
        torch.autograd.grad(outs, wrt, grads, allow_unused=True)
        synchronize(device)
        backward.append(time.perf_counter() - start)
    outs = outputs if isinstance(outputs, tuple) else (outputs,)
    return statistics.median(forward[1:]), statistics.median(backward[1:]), tuple(o.detach() for o in outs)


def deconv_stages(layer: nd_layers.FastDeconv) -> list[tuple[str, Callable]]:
    """The stages of one training-mode forward of ``layer``, as separate differentiable functions.

    Each takes the previous stage's outputs (the conv stage also takes the layer input).
    They call the same functional pieces as :meth:`ndlib.layers.FastDeconv.forward`.
    """
    def patches(x):
        return nd_patches.stacked_patches(layer, x)

    def centering(X):
        return X - X.mean(dim=-2, keepdim=True)

    def covariance(Xc):
        eye = torch.eye(Xc.shape[-1], dtype=Xc.dtype, device=Xc.device)
        return Xc.transpose(-1, -2) @ Xc / Xc.shape[-2] + layer.eps * eye

    def fused_center_covariance(X):
        return nd_layers.centered_covariance(X, layer.eps)

    def newton_schulz(cov):  # the layer's own method (spectral on CPU for >= 64 features); the row route of
        # few-row covariances (`isqrt_of_rows`) needs the rows: not timed here (no CIFAR conv at batch 128 takes it)
        return isqrt_by_method(cov, layer.n_iter, layer.isqrt_method)

    def fold(mean, deconv):
        return layer.folded_weight_and_bias(mean.reshape(layer.running_mean.shape), deconv)

    def convolution(x, weight, bias):
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)

    return [("patch_extraction", patches), ("centering", centering), ("covariance", covariance),
            ("center_covariance_fused", fused_center_covariance), ("newton_schulz", newton_schulz),
            ("weight_folding", fold), ("convolution", convolution)]


def layer_inputs(model: nn.Module, images: torch.Tensor,
                 select: Callable[[nn.Module], bool]) -> dict[str, torch.Tensor]:
    """The input of every module of ``model`` that ``select`` accepts, by name, from one
    training-mode forward of ``images`` without autograd (forward pre-hooks, removed after)."""
    captured: dict[str, torch.Tensor] = {}
    def keep(name: str):
        return lambda module, args: captured.__setitem__(name, args[0].detach())

    handles = [module.register_forward_pre_hook(keep(name)) for name, module in model.named_modules() if select(module)]
    try:
        model.train()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def stage_breakdown(model: nn.Module, images: torch.Tensor, repeats: int = 3) -> list[dict]:
    """Per-layer, per-stage forward/backward seconds of every :class:`FastDeconv` in ``model``.

    The layer inputs are captured with forward hooks on one training forward; every stage is
    then run alone (``repeats`` times after a warm-up, median) with a random upstream gradient.
    The stage times of one layer add up to roughly its share of a train step; the sum over
    stages is not exactly the layer's time (no overlap, no autograd bookkeeping of the full graph).
    """
    captured = layer_inputs(model, images, lambda module: type(module) is nd_layers.FastDeconv)
    device = images.device
    rows = []
    modules = dict(model.named_modules())
    for name, x in captured.items():
        layer = modules[name]
        stages = dict(deconv_stages(layer))
        results = {}
        fwd, bwd, (X,) = _time_stage(stages["patch_extraction"], (x,), repeats, device)
        results["patch_extraction"] = (fwd, bwd)
        fwd, bwd, (Xc,) = _time_stage(stages["centering"], (X,), repeats, device)
        results["centering"] = (fwd, bwd)
        fwd, bwd, (cov,) = _time_stage(stages["covariance"], (Xc,), repeats, device)
        results["covariance"] = (fwd, bwd)
        fwd, bwd, (mean, cov) = _time_stage(stages["center_covariance_fused"], (X,), repeats, device)
        results["center_covariance_fused"] = (fwd, bwd)
        fwd, bwd, (deconv,) = _time_stage(stages["newton_schulz"], (cov,), repeats, device)
        results["newton_schulz"] = (fwd, bwd)
        fwd, bwd, (weight, bias) = _time_stage(stages["weight_folding"], (mean, deconv), repeats, device)
        results["weight_folding"] = (fwd, bwd)
        fwd, bwd, _ = _time_stage(stages["convolution"], (x, weight, bias), repeats, device)
        results["convolution"] = (fwd, bwd)
        for stage, (fwd, bwd) in results.items():
            rows.append({
                "layer": name, "kind": "FastDeconv", "in_channels": layer.in_channels,
                "out_channels": layer.out_channels, "kernel_size": layer.kernel_size[0],
                "stride": layer.stride[0], "groups": layer.groups, "input_hw": int(x.shape[-1]),
                "stage": stage, "forward_s": fwd, "backward_s": bwd,
            })
    return rows


# --------------------------------------------------------------------------------------
# Running one benchmark
# --------------------------------------------------------------------------------------
def _build_models(config: BenchConfig, device: torch.device) -> dict[str, nn.Module]:
    from ndlib import models as model_zoo
    from ndlib._reference import to_reference

    if config.arch not in model_zoo.available(extras=True):
        raise ValueError(f"unknown arch {config.arch!r}; choose from {model_zoo.available(extras=True)}")
    torch.manual_seed(config.seed)
    built = {"bn": model_zoo.create(config.arch, num_classes=config.num_classes, norm="bn")}
    torch.manual_seed(config.seed)
    nd_options = {"refresh_every": config.refresh_every} if config.refresh_every != 1 else {}
    nd_model = model_zoo.create(config.arch, num_classes=config.num_classes, norm="nd", **nd_options)
    if "ndlib" in config.implementations:
        built["nd"] = nd_model
    if "reference" in config.implementations:
        built["nd_reference"] = to_reference(nd_model)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return {name: model.to(device=device, memory_format=_weights_format(name, memory_format))
            for name, model in built.items()}


def _weights_format(variant: str, memory_format: torch.memory_format) -> torch.memory_format:
    """The memory format a variant's conv weights are stored in: the run's, except for the public
    algorithm, whose ``weight.view`` fails on channels_last weights (a trait of the public code,
    kept by :mod:`ndlib._reference`); its weights stay contiguous, and its convs still run in
    channels_last because their input is."""
    return torch.contiguous_format if variant == "nd_reference" else memory_format


def _image_size(config: BenchConfig) -> int:
    if config.image_size is not None:
        return config.image_size
    from ndlib import models as model_zoo

    return model_zoo.get_spec(config.arch).input_size


def _bench_dir(config: BenchConfig) -> Path:
    from ndlib.paths import project_root

    return Path(config.out_dir) if config.out_dir is not None else project_root() / "results" / "bench"


def _load_avg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_bench(config: BenchConfig, *, models: dict[str, nn.Module] | None = None,
              log: Callable[[str], None] | None = print, write: bool = True) -> dict:
    """Run one benchmark and (if ``write``) store its record; returns the record.

    ``models`` overrides the model zoo (tests pass tiny models); its keys must be among
    :data:`VARIANTS` and include ``"bn"``.
    """
    from ndlib.paths import scrub_paths
    from ndlib.records import environment_info, utc_now, write_json_atomic

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu")
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        if models is None:
            models = _build_models(config, device)
        unknown = sorted(set(models) - set(VARIANTS))
        if unknown or "bn" not in models:
            raise ValueError(f"models must be keyed by {sorted(VARIANTS)} and include 'bn', got {sorted(models)}")
        if config.image_size is None and config.arch in _available_archs():
            size = _image_size(config)
        else:
            size = config.image_size or 32
        generator = torch.Generator().manual_seed(config.seed)
        images = torch.randn(config.batch_size, 3, size, size, generator=generator).to(device)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, config.num_classes, (config.batch_size,), generator=generator).to(device)
        if device.type == "cpu" and config.keep_freed_memory:
            cpu_memory.keep_freed_memory()
        layouts = {name: conv_layouts(model, images, config.amp) for name, model in models.items()}
        environment = environment_info(device)
        load_before = _load_avg()
        created_at = utc_now()
        times = time_train_steps(models, images, labels, warmup=config.warmup, rounds=config.rounds,
                                 steps=config.steps, log=log, round_statistic=config.round_statistic, amp=config.amp)
        stages = stage_breakdown(models["nd"], images, config.stage_repeats) if config.stages and "nd" in models else []
        load_after = _load_avg()
    finally:
        torch.set_num_threads(previous_threads)
    summary = summarize(times, round_statistic=config.round_statistic)
    stamp = created_at.replace(":", "").replace("-", "").replace("+0000", "Z")
    refresh = f"-r{config.refresh_every}" if config.refresh_every != 1 else ""
    precision = "-bf16" if config.amp else ""
    threads = config.threads or "auto"
    bench_id = f"{config.arch}-b{config.batch_size}-{device.type}-t{threads}{refresh}{precision}-{stamp}"
    record = {
        "bench_id": bench_id,
        "kind": "train_step",
        "created_at": created_at,
        "round_statistic": config.round_statistic,
        "finished_at": utc_now(),
        "arch": config.arch,
        "batch_size": config.batch_size,
        "image_size": size,
        "input": "synthetic random tensors (timing only; no accuracy is measured)",
        "config": dataclasses.asdict(config),
        "environment": environment,
        "device_type": device.type,
        "device_name": environment["device_name"],
        "num_threads": torch.get_num_threads() if config.threads is None else config.threads,
        # the process's state, not only the request: a process that kept freed memory once keeps it
        "keep_freed_memory": cpu_memory.is_kept(),
        "torch_version": torch.__version__,
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "step_times_s": times,
        "conv_layouts": layouts,
        "summary": summary,
        "stages": stages,
    }
    if write:
        path = write_json_atomic(_bench_dir(config) / f"{bench_id}.json", scrub_paths(record))
        record["file"] = str(path)
    return record


def _available_archs() -> list[str]:
    try:
        from ndlib import models as model_zoo
    except ImportError:
        return []
    return model_zoo.available(extras=True)


# --------------------------------------------------------------------------------------
# Reading records
# --------------------------------------------------------------------------------------
def _read_records(root) -> list[tuple[Path, dict]]:
    if root is None:
        from ndlib.paths import project_root

        folder = project_root() / "results" / "bench"
    else:
        folder = Path(root)
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"bench record {path} is not valid JSON ({error}); delete it or rerun the benchmark"
            ) from error
    return out


def load_bench(root: str | Path | None = "results/bench", amp: bool | None = False) -> pd.DataFrame:
    """One row per (benchmark, implementation): BN and ND median step times and their ratio.

    ``amp``: False (default) keeps the float32 benchmarks only, True the bfloat16-autocast ones,
    None both (the ``amp`` column tells them apart): a step time is never compared across precisions
    by accident.

    ``root=None`` means ``<project>/results/bench`` wherever the caller runs; a relative
    ``root`` is resolved against the project root when it does not exist from the current folder
    (notebooks run from ``book/``).  Empty DataFrame (with :data:`BENCH_COLUMNS`) when none.
    """
    if root is not None and not Path(root).exists() and not Path(root).is_absolute():
        from ndlib.paths import project_root

        root = project_root() / root
    from ndlib.records import machine_type

    rows = []
    for path, record in _read_records(root):
        if record.get("kind") != "train_step":
            continue
        summary = record["summary"]
        environment = record.get("environment", {})
        for variant, (_, implementation) in VARIANTS.items():
            if implementation is None or variant not in summary:
                continue
            entry = summary[variant]
            rows.append({
                "bench_id": record["bench_id"], "arch": record["arch"], "batch_size": record["batch_size"],
                "device_type": record["device_type"], "device_name": record["device_name"],
                "cpu_bf16_isa": environment.get("cpu_bf16_isa"),  # absent: written before it existed
                "machine_type": machine_type(record["device_type"], record["device_name"],
                                             environment.get("cpu_bf16_isa")),
                "num_threads": record["num_threads"], "implementation": implementation,
                "bn_step_s": summary["bn"]["step_s"], "nd_step_s": entry["step_s"],
                "ratio_nd_bn": entry["ratio"], "ratio_min": entry["ratio_min"], "ratio_max": entry["ratio_max"],
                "rounds": len(entry["round_medians_s"]), "steps_per_round": record["config"]["steps"],
                "channels_last": record["config"]["channels_last"],
                "bn_convs_channels_last": _channels_last_share(record, "bn"),
                "nd_convs_channels_last": _channels_last_share(record, variant),
                "amp": bool(record["config"].get("amp", False)),
                "keep_freed_memory": bool(record.get("keep_freed_memory", False)),
                "image_size": record.get("image_size"),
                "refresh_every": record["config"].get("refresh_every", 1),
                "round_statistic": record.get("round_statistic", "median"),
                "load_avg_before": record.get("load_avg_before"), "load_avg_after": record.get("load_avg_after"),
                "torch_version": record["torch_version"], "git_commit": environment.get("git_commit"),
                "git_dirty": environment.get("git_dirty"), "created_at": record["created_at"],
                "note": record["config"].get("note", ""), "file": path.name,
            })
    frame = pd.DataFrame(rows, columns=BENCH_COLUMNS)
    return frame if amp is None else frame[frame["amp"] == amp].reset_index(drop=True)


def _channels_last_share(record: dict, variant: str) -> float:
    """The share of ``variant``'s convs that wrote channels-last outputs (NaN: not recorded,
    as in records written before :func:`conv_layouts`)."""
    counts = record.get("conv_layouts", {}).get(variant)
    return counts["channels_last"] / counts["convs"] if counts and counts["convs"] else float("nan")


def load_stages(root: str | Path | None = "results/bench") -> pd.DataFrame:
    """The per-layer stage breakdowns of all records (long form, :data:`STAGE_COLUMNS`)."""
    if root is not None and not Path(root).exists() and not Path(root).is_absolute():
        from ndlib.paths import project_root

        root = project_root() / root
    rows = []
    for _, record in _read_records(root):
        for stage in record.get("stages", []):
            rows.append({"bench_id": record["bench_id"], "arch": record["arch"], "batch_size": record["batch_size"],
                         "device_type": record["device_type"], "created_at": record["created_at"], **stage})
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _archs_of(value: str) -> list[str]:
    if value == "all":
        from ndlib import models as model_zoo

        return model_zoo.available(table=1)
    return [name.strip() for name in value.split(",") if name.strip()]


def _handle(args: argparse.Namespace) -> int:
    from ndlib import models as model_zoo

    archs = _archs_of(args.arch)
    implementations = tuple(args.implementations.split(","))
    known = model_zoo.available(extras=True)
    unknown = [arch for arch in archs if arch not in known]
    if unknown or not archs:
        args.parser.error(f"unknown arch {', '.join(map(repr, unknown)) or repr(args.arch)}; "
                          f"choose from {known} or 'all'")
    try:
        configs = [
            BenchConfig(arch=arch, batch_size=args.batch_size, device=args.device, threads=args.threads,
                        warmup=args.warmup, rounds=args.rounds, steps=args.steps,
                        implementations=implementations, channels_last=args.channels_last, amp=args.amp,
                        keep_freed_memory=args.keep_freed_memory,
                        image_size=args.image_size, stages=args.stages, out_dir=args.out_dir, note=args.note,
                        refresh_every=args.refresh_every)
            for arch in archs
        ]
    except ValueError as error:
        args.parser.error(str(error))
    if configs[0].device.startswith("cuda") and not torch.cuda.is_available():
        args.parser.error(f"device {args.device!r} was requested but CUDA is not available on this machine; "
                          "use --device cpu")
    for config in configs:
        record = run_bench(config, log=lambda line: print(line, file=sys.stderr))
        for variant, entry in record["summary"].items():
            extra = ""
            if "ratio" in entry:
                extra = f"  ND/BN {entry['ratio']:.2f}x [{entry['ratio_min']:.2f}, {entry['ratio_max']:.2f}]"
            layout = record["conv_layouts"].get(variant)
            if layout:
                extra += f"  ({layout['channels_last']}/{layout['convs']} convs channels-last)"
            print(f"{config.arch} b{config.batch_size} {variant:13s} {entry['step_s']:.3f} s/step{extra}")
        print(f"load average before {record['load_avg_before']} after {record['load_avg_after']}; "
              f"record {record.get('file')}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``bench`` with :mod:`ndlib.cli`."""
    parser = subparsers.add_parser(
        "bench", help="time train steps of BN vs ND models (results/bench/)",
        description="Interleaved train-step timing of BN and ND variants (SYNTHETIC input) and an optional "
                    "per-layer stage breakdown of ND; writes results/bench/<bench_id>.json.")
    parser.add_argument("--arch", default="resnet18", help="architecture, comma-separated list, or 'all' (Table 1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each gives one ND/BN ratio)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per variant per round (default 1; with --refresh-every k, k: "
                             "a round then averages one whole refresh cycle)")
    parser.add_argument("--implementations", default="ndlib,reference",
                        help="which ND layers: ndlib, reference (the public algorithm) or both")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast in every variant's step (as `train --amp`); the record's id ends -bf16")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="CPU: glibc keeps freed memory in the process, "
                             "as `ndlib train` runs do (ndlib.cpu_memory)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the architecture's")
    parser.add_argument("--stages", action="store_true", help="also time the stages of every ND layer")
    parser.add_argument("--out-dir", default=None, help="default: <project>/results/bench")
    parser.add_argument("--refresh-every", type=int, default=1,
                        help="ND layers re-estimate the whitening every k-th step (default 1: the paper's layer)")
    parser.add_argument("--note", default="", help="free text for the record (e.g. machine load)")
    parser.set_defaults(handler=_handle, parser=parser)
