"""``make gpu-check``: one command that proves the GPU path, in minutes, on one CUDA GPU.

    PYTHONPATH=. python3 -m ndlib.gpu_check --out DIR [--data-dir DIR] [--quick] [--budget-s S]
    python -m ndlib gpu-check --out DIR ...        (the same, as a subcommand of ndlib.cli)

It runs with the machine's own Python and torch (>= 2.4; no virtual environment, no install
step) and writes, into ``DIR``, one JSON file per step and a one-page ``summary.md``:

1. **Layers** (``layers.json``): every deconvolution layer kind -- :class:`~ndlib.layers.FastDeconv`
   3x3 / 5x5 dilated / 1x1 / stride 2 / grouped / depthwise / contiguous blocks / no bias / the
   RGB first layer (15 iterations, frozen) / ``refresh_every=2`` / a 576-feature covariance,
   :class:`~ndlib.layers.Delinear` and :class:`~ndlib.layers.ChannelDeconv` -- on the device in
   float32 against the same layer, same weights, same inputs and upstream gradients, on the CPU in
   float64: outputs, input / weight / bias gradients and running buffers over several training
   steps, then an evaluation-mode output.  TF32 is switched off for this step (a float32
   comparison, not a speed setting).  Tolerances: :data:`LAYER_TOLERANCES`.
2. **Models** (``models.json``): every model of ``ndlib.models.available(extras=True)`` in each
   of its norms, built on the device, one training-mode forward and backward at a small batch,
   plain float32, with bfloat16 autocast (AMP) and with ``channels_last``, each from the same
   weights and buffers: finite outputs and gradients, output shape ``(batch, classes)``, and the
   AMP / channels_last outputs close to the float32 ones (:data:`MODEL_TOLERANCES`; TF32 off).
3. **Bench** (``bench.json`` and the records in ``DIR/bench/``): ``python -m ndlib bench --arch
   all --device cuda`` (Table 1's architectures, BN vs ND vs the reference ND, batch 128), run
   one architecture at a time through bench's own command-line parser so that one failure does
   not hide the others; small ``--rounds`` to fit the time budget.
4. **Train** (``train.json``, records in ``DIR/runs/``, checkpoints in ``DIR/checkpoints/``):
   one epoch of VGG-16 BN and of VGG-16 ND on CIFAR-10 read from ``--data-dir``
   (``ndlib.train.run``); skipped with a line in the summary when the data is not there.

Without CUDA it says so in one line and exits 2 before doing anything; bad arguments are one
line and exit 2 as well.  Exit 0 when every step that ran passed (skips included), 1 otherwise.

``torchvision`` is not needed: the run records store its version (``ndlib.records``), so when it
is missing a placeholder module with ``__version__ = "not installed"`` stands in while steps 3
and 4 run (CIFAR is read from ``cifar10_{train,test}.npz``, which needs no torchvision).  Steps 3
and 4 need pandas and numpy (``ndlib.bench`` / ``ndlib.records`` import them); without them the
step fails with that one line and the others still run.

The step functions take the device as an argument, so the tests run them on the CPU (float32
against float64, tiny settings) to exercise the comparisons, the JSON and the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LAYER_TOLERANCES",
    "MODEL_TOLERANCES",
    "LayerCase",
    "layer_cases",
    "compare_layer",
    "check_layers",
    "model_plan",
    "check_model",
    "check_models",
    "bench_argv",
    "run_bench_step",
    "find_cifar10",
    "run_train_step",
    "run_gpu_check",
    "write_summary",
    "main",
    "add_parser",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STEPS = ("layers", "models", "bench", "train")

#: Norm-wise relative error ``||device - cpu64|| / ||cpu64||`` allowed for a float32 layer on the
#: device against the float64 CPU computation.  float32 has a unit roundoff of 6e-8; Newton-Schulz
#: amplifies the rounding of the covariance by about its condition number, and the gradients go
#: through it twice.  Measured on the CPU (float32 vs float64, these cases): outputs <= 5e-6,
#: gradients <= 2e-5, buffers <= 4e-6 -- the bounds leave a factor of 20 or more.  The ``amp_``
#: entries are the same layer under bfloat16 autocast (same state, same input) against float64:
#: its statistics and running buffers are float32 (so ``amp_buffers`` is held to the float32
#: bound), while the conv / linear map runs in bfloat16 (8 mantissa bits; measured on the CPU:
#: outputs <= 1e-2, weight gradients <= 1.5e-2; the RGB first layer is the worst).
LAYER_TOLERANCES = {"output": 1e-4, "input_grad": 5e-4, "weight_grad": 5e-4, "bias_grad": 5e-4,
                    "buffers": 1e-4, "eval_output": 1e-4, "amp_output": 3e-2, "amp_weight_grad": 5e-2,
                    "amp_buffers": 1e-4}

#: Norm-wise relative error of the logits against the float32 run (same weights, same buffers,
#: training mode, dropout off).  channels_last changes only the memory layout (and so the conv
#: algorithm): measured <= 4e-5 on the CPU.  bfloat16 autocast keeps 8 mantissa bits in every
#: conv and matmul; through 20 to 100 layers at initialisation the logits moved by 1-23% with BN
#: and by 4-147% with ND on the CPU (batch 4): ND's ``W' = W D`` is large along the directions of
#: small variance -- most directions of the deep layers, whose few sampled patches leave the
#: covariance rank-deficient (``eps``) -- and the bfloat16 conv loses the digits that cancel
#: there, at every layer.  So for ND models the AMP bound is a sanity bound (NaN, Inf, blow-ups),
#: not a precision check: the layer-level AMP errors of step 1 are the precision check, and
#: drifts above :data:`AMP_DRIFT_NOTE` are listed in the summary.
MODEL_TOLERANCES = {"channels_last": 1e-3, "amp_bn": 0.5, "amp_nd": 2.0}
AMP_DRIFT_NOTE = 0.3

#: Bench settings: batch 128 (the paper's), 1 warm-up step and 3 interleaved rounds per
#: architecture (3 ND/BN ratios each); ``--quick``: 1 round, three architectures.
BENCH_DEFAULTS = {"batch_size": 128, "rounds": 3, "warmup": 1, "threads": 1}
QUICK_BENCH_ARCHS = ("resnet18", "vgg16", "mobilenetv2")
QUICK_MODEL_ARCHS = ("vgg16", "resnet18", "mobilenetv2", "resnet18_imagenet")

#: Seconds the train step is given (two CIFAR-10 epochs of VGG-16 on one H100-class GPU take
#: well under a minute each); the bench step stops starting architectures when only this is left.
TRAIN_RESERVE_S = 150.0
DEFAULT_BUDGET_S = 450.0


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 on the CPU (0 when both are zero; inf if not finite)."""
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf
    diff = float((a - b).norm())
    scale = float(b.norm())
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def _jsonable(value):
    """Non-finite floats as strings (JSON has no NaN / Infinity), tuples as lists, the rest as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as JSON atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False, default=str) + "\n")
    temp.replace(path)
    return path


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions inside the block (restored after)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - missing or broken: report it as absent
        return None
    return str(getattr(module, "__version__", "unknown"))


@contextlib.contextmanager
def torchvision_placeholder() -> Iterator[bool]:
    """A stand-in ``torchvision`` module (``__version__ = "not installed"``) while the block runs,
    when the real one cannot be imported; yields whether the stand-in is in place."""
    if _module_version("torchvision") is not None:
        yield False
        return
    placeholder = types.ModuleType("torchvision")
    placeholder.__version__ = "not installed"
    previous = sys.modules.get("torchvision")
    sys.modules["torchvision"] = placeholder
    try:
        yield True
    finally:
        if previous is None:
            sys.modules.pop("torchvision", None)
        else:
            sys.modules["torchvision"] = previous


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(device: torch.device) -> dict:
    """What ran: versions, the device, the git commit (no torchvision / pandas needed)."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "hostname": platform.node(),
        "git_commit": _git_commit(),
        "torchvision": _module_version("torchvision") or "not installed",
        "numpy": _module_version("numpy") or "not installed",
        "pandas": _module_version("pandas") or "not installed",
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, compute_capability=f"{props.major}.{props.minor}",
                    device_memory_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    return info


# --------------------------------------------------------------------------------------
# Step 1: layers on the device (float32) against the CPU in float64
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration: ``build()`` makes the layer, ``shape`` is its input's shape."""

    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    steps: int = 3
    image_like: bool = False  # smooth, strongly correlated input (the RGB first layer's)


def layer_cases(quick: bool = False) -> list[LayerCase]:
    """The layer shapes step 1 checks (``quick``: a representative third of them)."""
    from ndlib.layers import ChannelDeconv, Delinear, FastDeconv

    cases = [
        LayerCase("conv3x3 multiblock", lambda: FastDeconv(64, 32, 3, padding=1, block=16), (8, 64, 16, 16)),
        LayerCase("conv3x3 576 features", lambda: FastDeconv(64, 64, 3, padding=1, block=64), (8, 64, 16, 16)),
        LayerCase("conv3x3 stride 2", lambda: FastDeconv(32, 64, 3, stride=2, padding=1), (8, 32, 16, 16)),
        LayerCase("conv1x1", lambda: FastDeconv(64, 128, 1, block=32), (8, 64, 8, 8)),
        LayerCase("conv1x1 stride 2", lambda: FastDeconv(64, 128, 1, stride=2), (8, 64, 8, 8)),
        LayerCase("grouped (4 groups)", lambda: FastDeconv(64, 64, 3, padding=1, groups=4), (8, 64, 12, 12)),
        LayerCase("depthwise stride 2", lambda: FastDeconv(32, 32, 3, stride=2, padding=1, groups=32),
                  (8, 32, 16, 16)),
        LayerCase("contiguous blocks", lambda: FastDeconv(32, 16, 3, padding=1, block=8, grouping="contiguous"),
                  (8, 32, 12, 12)),
        LayerCase("5x5 dilated, no bias", lambda: FastDeconv(8, 16, 5, padding=4, dilation=2, block=4, bias=False),
                  (8, 8, 16, 16)),
        LayerCase("RGB first layer (n_iter 15, frozen)",
                  lambda: FastDeconv(3, 64, 3, padding=1, n_iter=15, freeze=True, freeze_iter=1),
                  (16, 3, 32, 32), steps=4, image_like=True),
        LayerCase("refresh_every=2", lambda: FastDeconv(32, 32, 3, padding=1, refresh_every=2), (8, 32, 12, 12),
                  steps=4),
        LayerCase("Delinear 512", lambda: Delinear(512, 10, block=512), (128, 512)),
        LayerCase("Delinear blocks of 64", lambda: Delinear(256, 64, block=64), (64, 256)),
        LayerCase("ChannelDeconv (leftover channels)", lambda: ChannelDeconv(16), (8, 40, 8, 8)),
        LayerCase("ChannelDeconv on vectors", lambda: ChannelDeconv(8, sampling_stride=1), (32, 24)),
    ]
    if quick:
        keep = {"conv3x3 576 features", "conv1x1 stride 2", "depthwise stride 2", "RGB first layer (n_iter 15, frozen)",
                "refresh_every=2", "Delinear 512"}
        cases = [case for case in cases if case.name in keep]
    return cases


def _layer_input(shape: tuple[int, ...], generator: torch.Generator, image_like: bool) -> torch.Tensor:
    """A float64 CPU input with correlated features (so the whitening is far from the identity)."""
    x = torch.randn(*shape, generator=generator, dtype=torch.float64)
    if len(shape) == 4:
        x = F.avg_pool2d(x, 3, stride=1, padding=1) + 0.3 * x.mean(1, keepdim=True)
        if image_like:  # smoother, like natural images: badly conditioned patch covariance
            x = F.avg_pool2d(x, 5, stride=1, padding=2) * 3.0 + 0.05 * torch.randn(*shape, generator=generator,
                                                                                     dtype=torch.float64)
    else:
        x = x + 0.5 * x.roll(1, dims=1)
    return 2.0 * x + 0.5


def compare_layer(case: LayerCase, device: str | torch.device, dtype: torch.dtype = torch.float32,
                  amp: bool = True) -> dict:
    """Run ``case`` on ``device`` in ``dtype`` and on the CPU in float64 with the same weights,
    inputs and upstream gradients for ``case.steps`` training steps and one evaluation step;
    return the largest norm-wise relative error of each quantity and whether all are in tolerance.
    With ``amp`` each training step is also run under bfloat16 autocast by a copy of the layer in
    the same state (``amp_*`` errors; ChannelDeconv has no autocast handling and is skipped)."""
    device = torch.device(device)
    from ndlib.layers import ChannelDeconv

    amp = amp and not isinstance(case.build(), ChannelDeconv)
    torch.manual_seed(0)
    reference = case.build().to(torch.float64)
    if getattr(reference, "bias", None) is not None:
        with torch.no_grad():
            reference.bias.normal_()
    tested = copy.deepcopy(reference).to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(1)
    errors: dict[str, float] = {}
    counters_equal = True
    start = time.perf_counter()
    for _ in range(case.steps):
        x64 = _layer_input(case.shape, generator, case.image_like)
        reference.train()
        tested.train()
        mixed = copy.deepcopy(tested) if amp else None  # same state as `tested` before this step
        x_ref = x64.clone().requires_grad_(True)
        out_ref = reference(x_ref)
        upstream = torch.randn(out_ref.shape, generator=generator, dtype=torch.float64)
        reference.zero_grad(set_to_none=True)
        (out_ref * upstream).sum().backward()
        x_dev = x64.to(device=device, dtype=dtype).requires_grad_(True)
        out_dev = tested(x_dev)
        tested.zero_grad(set_to_none=True)
        (out_dev * upstream.to(device=device, dtype=dtype)).sum().backward()
        _sync(device)
        step = {"output": rel_err(out_dev, out_ref), "input_grad": rel_err(x_dev.grad, x_ref.grad)}
        params = dict(tested.named_parameters())
        for name, parameter in reference.named_parameters():
            key = "weight_grad" if name == "weight" else "bias_grad"
            step[key] = max(step.get(key, 0.0), rel_err(params[name].grad, parameter.grad))
        buffers = dict(tested.named_buffers())
        for name, buffer in reference.named_buffers():
            if buffer.is_floating_point():
                step["buffers"] = max(step.get("buffers", 0.0), rel_err(buffers[name], buffer))
            else:
                counters_equal &= bool(torch.equal(buffers[name].cpu(), buffer))
        if mixed is not None:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                out_amp = mixed(x64.to(device=device, dtype=dtype))
            (out_amp.float() * upstream.to(device=device, dtype=torch.float32)).sum().backward()
            step["amp_output"] = rel_err(out_amp, out_ref)
            if getattr(mixed, "weight", None) is not None:
                step["amp_weight_grad"] = rel_err(mixed.weight.grad, reference.weight.grad)
            mixed_buffers = dict(mixed.named_buffers())
            step["amp_buffers"] = max((rel_err(mixed_buffers[n], b) for n, b in reference.named_buffers()
                                       if b.is_floating_point()), default=0.0)
        for key, value in step.items():
            errors[key] = max(errors.get(key, 0.0), value)
    with torch.no_grad():
        x64 = _layer_input(case.shape, generator, case.image_like)
        errors["eval_output"] = rel_err(tested.eval()(x64.to(device=device, dtype=dtype)), reference.eval()(x64))
    _sync(device)
    failures = [key for key, value in errors.items() if not value <= LAYER_TOLERANCES[key]]
    if not counters_equal:
        failures.append("num_batches_tracked")
    return {"layer": case.name, "repr": repr(reference).replace("\n", " "), "input_shape": list(case.shape),
            "training_steps": case.steps, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "errors": errors, "counters_equal": counters_equal, "failures": failures, "passed": not failures,
            "seconds": time.perf_counter() - start}


def check_layers(device: str | torch.device, cases: list[LayerCase] | None = None, quick: bool = False) -> dict:
    """Step 1 over ``cases`` (default :func:`layer_cases`); one result per layer, errors caught."""
    cases = layer_cases(quick) if cases is None else cases
    results = []
    with exact_float32():
        for case in cases:
            try:
                results.append(compare_layer(case, device))
            except Exception as error:  # noqa: BLE001 - one broken layer must not hide the others
                results.append({"layer": case.name, "passed": False, "failures": ["error"],
                                "error": _one_line(error), "traceback": traceback.format_exc()})
    failed = [r["layer"] for r in results if not r["passed"]]
    worst = {key: max((r["errors"].get(key, 0.0) for r in results if "errors" in r), default=0.0)
             for key in LAYER_TOLERANCES}
    detail = (f"{len(results)} layers, float32 on {device} vs float64 on cpu; worst output {worst['output']:.1e} "
              f"(tol {LAYER_TOLERANCES['output']:.0e}), worst gradient "
              f"{max(worst['input_grad'], worst['weight_grad'], worst['bias_grad']):.1e} "
              f"(tol {LAYER_TOLERANCES['input_grad']:.0e}), worst AMP output {worst['amp_output']:.1e} "
              f"(tol {LAYER_TOLERANCES['amp_output']:.0e})")
    if failed:
        detail += f"; FAILED: {', '.join(failed)}"
    return {"status": "failed" if failed else "passed", "detail": detail, "tolerances": LAYER_TOLERANCES,
            "tf32": False, "worst": worst, "results": results}


# --------------------------------------------------------------------------------------
# Step 2: every model, float32 / AMP / channels_last
# --------------------------------------------------------------------------------------
def model_plan(archs: list[str] | None = None, quick: bool = False) -> list[tuple[str, str]]:
    """``(arch, norm)`` pairs: every model of ``available(extras=True)`` in each of its norms."""
    from ndlib import models

    if archs is None:
        archs = list(QUICK_MODEL_ARCHS) if quick else models.available(extras=True)
    return [(arch, norm) for arch in archs for norm in models.get_spec(arch).norms]


def _default_builder(arch: str, norm: str, num_classes: int) -> tuple[nn.Module, int]:
    from ndlib import models

    return models.create(arch, num_classes=num_classes, norm=norm), models.get_spec(arch).test_input_size


def _grads_finite(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)


def check_model(arch: str, norm: str, device: str | torch.device, *, batch_size: int = 8, num_classes: int = 10,
                build: Callable[[str, str, int], tuple[nn.Module, int]] | None = None) -> dict:
    """One model: training-mode forward + backward in float32, under bfloat16 autocast and in
    channels_last, each from the same initial weights and buffers (``build`` makes the model and
    names its input side; default ``ndlib.models.create`` and the registry's test size)."""
    device = torch.device(device)
    build = build or _default_builder
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model, size = build(arch, norm, num_classes)
    model = model.to(device)
    initial = copy.deepcopy(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
    expected_shape = [batch_size, num_classes]
    modes: dict[str, dict] = {}
    outputs: dict[str, torch.Tensor] = {}
    for mode in ("float32", "amp", "channels_last"):
        model.load_state_dict(initial)
        model.zero_grad(set_to_none=True)
        model.train()
        for module in model.modules():  # dropout masks would differ between the runs
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()
        torch.manual_seed(1)
        inputs = x
        if mode == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            inputs = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if mode == "amp"
                    else contextlib.nullcontext())
        t0 = time.perf_counter()
        with autocast:
            logits = model(inputs)
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        _sync(device)
        outputs[mode] = logits.detach().float()
        modes[mode] = {"shape": list(logits.shape), "output_dtype": str(logits.dtype).replace("torch.", ""),
                       "finite_output": bool(torch.isfinite(logits).all()), "finite_loss": bool(torch.isfinite(loss)),
                       "finite_grads": _grads_finite(model), "loss": float(loss.detach()), "seconds": time.perf_counter() - t0}
    # evaluation mode after the channels_last step: the running statistics give finite logits
    with torch.no_grad():
        eval_finite = bool(torch.isfinite(model.eval()(x.contiguous(memory_format=torch.channels_last))).all())
    amp_tol = MODEL_TOLERANCES["amp_nd" if norm == "nd" else "amp_bn"]
    errors = {"amp": rel_err(outputs["amp"], outputs["float32"]),
              "channels_last": rel_err(outputs["channels_last"], outputs["float32"])}
    failures = [f"{mode}: {what}" for mode, info in modes.items()
                for what in ("finite_output", "finite_loss", "finite_grads") if not info[what]]
    failures += [f"{mode}: shape {info['shape']}" for mode, info in modes.items() if info["shape"] != expected_shape]
    if not eval_finite:
        failures.append("eval: finite_output")
    if not errors["amp"] <= amp_tol:
        failures.append(f"amp: rel err {errors['amp']:.2e} > {amp_tol}")
    if not errors["channels_last"] <= MODEL_TOLERANCES["channels_last"]:
        failures.append(f"channels_last: rel err {errors['channels_last']:.2e} > {MODEL_TOLERANCES['channels_last']}")
    return {"arch": arch, "norm": norm, "input": [batch_size, 3, size, size], "params": sum(p.numel() for p in model.parameters()),
            "modes": modes, "errors": errors, "tolerances": {"amp": amp_tol, "channels_last": MODEL_TOLERANCES["channels_last"]},
            "eval_finite": eval_finite, "failures": failures, "passed": not failures,
            "seconds": time.perf_counter() - start}


def check_models(device: str | torch.device, plan: list[tuple[str, str]] | None = None, *, quick: bool = False,
                 batch_size: int = 8, build: Callable | None = None) -> dict:
    """Step 2 over ``plan`` (default :func:`model_plan`); one result per model, errors caught."""
    plan = model_plan(quick=quick) if plan is None else plan
    results = []
    with exact_float32():
        for arch, norm in plan:
            try:
                results.append(check_model(arch, norm, device, batch_size=batch_size, build=build))
            except Exception as error:  # noqa: BLE001
                results.append({"arch": arch, "norm": norm, "passed": False, "failures": [_one_line(error)],
                                "traceback": traceback.format_exc()})
            finally:
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
    failed = [f"{r['arch']}/{r['norm']}" for r in results if not r["passed"]]
    worst = {key: max((r["errors"][key] for r in results if "errors" in r), default=0.0)
             for key in ("amp", "channels_last")}
    detail = (f"{len(results)} models x (float32, AMP bf16, channels_last) on {device}, batch {batch_size}; "
              f"worst AMP {worst['amp']:.1e}, channels_last {worst['channels_last']:.1e}")
    if failed:
        detail += f"; FAILED: {', '.join(failed)}"
    return {"status": "failed" if failed else "passed", "detail": detail, "tolerances": MODEL_TOLERANCES,
            "tf32": False, "batch_size": batch_size, "worst": worst, "results": results}


# --------------------------------------------------------------------------------------
# Step 3: the benchmark
# --------------------------------------------------------------------------------------
def bench_archs(quick: bool = False) -> list[str]:
    """``--arch all`` of ``python -m ndlib bench`` (Table 1), or three of them with ``quick``."""
    from ndlib import models

    return list(QUICK_BENCH_ARCHS) if quick else models.available(table=1)


def bench_argv(arch: str, device: str, out_dir: Path, *, rounds: int, batch_size: int, warmup: int,
               threads: int) -> list[str]:
    """The ``python -m ndlib bench`` arguments for one architecture."""
    return ["bench", "--arch", arch, "--device", device, "--batch-size", str(batch_size), "--rounds", str(rounds),
            "--warmup", str(warmup), "--threads", str(threads), "--out-dir", str(out_dir),
            "--note", "make gpu-check"]


def _bench_cli(argv: list[str]) -> int:
    """``python -m ndlib bench ...`` in this process, through bench's own parser."""
    from ndlib import bench

    parser = argparse.ArgumentParser(prog="python -m ndlib")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def run_bench_step(out: Path, device: str, *, archs: list[str] | None = None, quick: bool = False,
                   deadline: float | None = None, runner: Callable[[list[str]], int] | None = None,
                   **settings) -> dict:
    """Step 3: one ``bench`` invocation per architecture (records in ``out/bench``); architectures
    not started before ``deadline`` (a ``time.perf_counter()`` value) are listed as skipped."""
    options = {**BENCH_DEFAULTS, **({"rounds": 1} if quick else {}), **settings}
    archs = bench_archs(quick) if archs is None else archs
    runner = runner or _bench_cli
    folder = Path(out) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for arch in archs:
        if deadline is not None and time.perf_counter() > deadline:
            runs.append({"arch": arch, "status": "skipped", "detail": "time budget spent"})
            continue
        argv = bench_argv(arch, device, folder, **options)
        before = set(folder.glob("*.json"))
        t0 = time.perf_counter()
        try:
            code = runner(argv)
            status = "passed" if code == 0 else "failed"
            detail = "" if code == 0 else f"exit code {code}"
        except SystemExit as exit_:  # argparse
            status, detail = "failed", f"exit code {exit_.code}"
        except Exception as error:  # noqa: BLE001
            status, detail = "failed", _one_line(error)
        new = sorted(p.name for p in set(folder.glob("*.json")) - before)
        entry = {"arch": arch, "status": status, "detail": detail, "seconds": time.perf_counter() - t0,
                 "command": "python -m ndlib " + " ".join(argv), "records": new}
        for name in new:
            try:
                summary = json.loads((folder / name).read_text()).get("summary", {})
            except (OSError, json.JSONDecodeError):
                continue
            entry["bn_step_s"] = summary.get("bn", {}).get("step_s")
            entry["nd_step_s"] = summary.get("nd", {}).get("step_s")
            entry["ratio_nd_bn"] = summary.get("nd", {}).get("ratio")
            entry["ratio_reference_bn"] = summary.get("nd_reference", {}).get("ratio")
        runs.append(entry)
    failed = [r["arch"] for r in runs if r["status"] == "failed"]
    skipped = [r["arch"] for r in runs if r["status"] == "skipped"]
    done = [r for r in runs if r["status"] == "passed"]
    detail = (f"{len(done)}/{len(runs)} architectures timed on {device} (batch {options['batch_size']}, "
              f"{options['rounds']} rounds), records in {folder}")
    if skipped:
        detail += f"; skipped (time budget): {', '.join(skipped)}"
    if failed:
        detail += f"; FAILED: {', '.join(failed)}"
    return {"status": "failed" if failed else "passed", "detail": detail, "settings": options,
            "records_dir": str(folder), "runs": runs}


# --------------------------------------------------------------------------------------
# Step 4: one epoch of VGG-16 BN and ND on CIFAR-10
# --------------------------------------------------------------------------------------
def find_cifar10(data_dir: str | Path | None) -> tuple[bool, str]:
    """Whether ``data_dir`` holds CIFAR-10 in a form ``ndlib.data.load_cifar`` reads here, and why not."""
    if data_dir is None:
        return False, "no --data-dir given"
    root = Path(data_dir)
    if not root.is_dir():
        return False, f"data folder {root} does not exist (`make data` unpacks CIFAR-10 into data/)"
    if (root / "cifar10_train.npz").is_file() and (root / "cifar10_test.npz").is_file():
        return True, f"{root}/cifar10_{{train,test}}.npz"
    if (root / "cifar-10-batches-py").is_dir():
        if _module_version("torchvision") is None:
            return False, f"{root}/cifar-10-batches-py needs torchvision, which is not installed here; use the .npz files"
        return True, f"{root}/cifar-10-batches-py (torchvision)"
    return False, f"no CIFAR-10 in {root} (looked for cifar10_train.npz + cifar10_test.npz and cifar-10-batches-py/)"


def _train_once(norm: str, device: str, data_dir: Path, out: Path) -> dict:
    from ndlib.train import TrainConfig, run

    config = TrainConfig(arch="vgg16", norm=norm, dataset="cifar10", epochs=1, device=device, data_dir=str(data_dir),
                         runs_dir=str(out / "runs"), checkpoint_dir=str(out / "checkpoints"), note="make gpu-check")
    accepted = inspect.signature(run).parameters
    options = {k: v for k, v in {"progress": False, "resume": False, "rerun": True}.items() if k in accepted}
    return run(config, **options)


def run_train_step(out: Path, data_dir: str | Path | None, device: str, *, norms: tuple[str, ...] = ("bn", "nd"),
                   deadline: float | None = None,
                   runner: Callable[[str, str, Path, Path], dict] | None = None) -> dict:
    """Step 4: one epoch of VGG-16 per norm (``ndlib.train.run``), or a skip line without data."""
    found, where = find_cifar10(data_dir)
    if not found:
        return {"status": "skipped", "detail": f"skipped: {where}", "runs": []}
    runner = runner or _train_once
    runs = []
    for norm in norms:
        if deadline is not None and time.perf_counter() > deadline:
            runs.append({"norm": norm, "status": "skipped", "detail": "time budget spent"})
            continue
        t0 = time.perf_counter()
        try:
            record = runner(norm, device, Path(data_dir), Path(out))
        except Exception as error:  # noqa: BLE001
            runs.append({"norm": norm, "status": "failed", "detail": _one_line(error),
                         "seconds": time.perf_counter() - t0, "traceback": traceback.format_exc()})
            continue
        final = record.get("final") or {}
        status = "passed" if record.get("status") == "completed" else "failed"
        runs.append({"norm": norm, "status": status, "detail": f"record status {record.get('status')}",
                     "run_id": record.get("run_id"), "seconds": time.perf_counter() - t0,
                     **{k: final.get(k) for k in ("train_loss", "train_acc", "test_acc", "test_top5", "train_time_s",
                                                  "eval_time_s", "images_per_s", "peak_mem_mb")}})
    failed = [r["norm"] for r in runs if r["status"] == "failed"]
    parts = [f"{r['norm']}: test {r['test_acc']:.2f}% in {r['train_time_s']:.0f} s" for r in runs
             if r["status"] == "passed" and r.get("test_acc") is not None and r.get("train_time_s") is not None]
    detail = f"VGG-16, CIFAR-10 ({where}), 1 epoch: " + ("; ".join(parts) or "no completed run")
    if failed:
        detail += f"; FAILED: {', '.join(failed)}"
    skipped = [r["norm"] for r in runs if r["status"] == "skipped"]
    if skipped:
        detail += f"; skipped (time budget): {', '.join(skipped)}"
    return {"status": "failed" if failed else "passed", "detail": detail, "data": where, "runs": runs}


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------
_STEP_TITLES = {
    "layers": "1. layers, float32 on the device vs float64 on the CPU",
    "models": "2. models: float32, AMP (bf16), channels_last",
    "bench": "3. `python -m ndlib bench --arch all`",
    "train": "4. VGG-16 BN + ND, 1 epoch of CIFAR-10",
}


def _fmt(value, spec: str = ".1e") -> str:
    if value is None:
        return "--"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_summary(out: Path, report: dict) -> Path:
    """``out/summary.md``: verdict, environment, one row per step, then one small table per step."""
    env = report.get("environment", {})
    steps = report.get("steps", {})
    lines = [
        f"# gpu-check: {report.get('status', '?').upper()}",
        "",
        f"{env.get('device_name', '?')} ({env.get('device', '?')}), torch {env.get('torch', '?')}, "
        f"CUDA {env.get('cuda') or '--'}, Python {env.get('python', '?')}, torchvision {env.get('torchvision', '?')}; "
        f"git {str(env.get('git_commit') or '?')[:12]}; {report.get('started_at', '')}; "
        f"total {report.get('seconds', 0):.0f} s (budget {report.get('budget_s', 0):.0f} s)"
        + ("; --quick" if report.get("quick") else ""),
        "",
        "| step | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    for name in STEPS:
        if name not in steps:
            continue
        step = steps[name]
        lines.append(f"| {_STEP_TITLES[name]} | {step.get('status')} | {step.get('seconds', 0):.1f} | "
                     f"{_cell(step.get('detail', ''))} |")
    layers = steps.get("layers", {})
    if layers.get("results"):
        tol = layers.get("tolerances", LAYER_TOLERANCES)
        lines += ["", f"## Layers (TF32 off; norm-wise relative errors; tolerances: output {tol['output']:.0e}, "
                      f"gradients {tol['input_grad']:.0e}, buffers {tol['buffers']:.0e}; AMP: output "
                      f"{tol['amp_output']:.0e}, weight grad {tol['amp_weight_grad']:.0e}, buffers {tol['amp_buffers']:.0e})",
                  "",
                  "| layer | output | input grad | weight grad | bias grad | buffers | eval | AMP out / W grad / buffers | ok |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in layers["results"]:
            e = r.get("errors", {})
            ok = "yes" if r.get("passed") else "NO: " + ", ".join(r.get("failures", [])) + (
                f" ({r['error']})" if r.get("error") else "")
            amp = " / ".join(_fmt(e.get(k)) for k in ("amp_output", "amp_weight_grad", "amp_buffers"))
            lines.append(f"| {_cell(r['layer'])} | " + " | ".join(_fmt(e.get(k)) for k in
                         ("output", "input_grad", "weight_grad", "bias_grad", "buffers", "eval_output"))
                         + f" | {amp} | {_cell(ok)} |")
    models = steps.get("models", {})
    if models.get("results"):
        tol = models.get("tolerances", MODEL_TOLERANCES)
        by_arch: dict[str, dict[str, dict]] = {}
        for r in models["results"]:
            by_arch.setdefault(r["arch"], {})[r["norm"]] = r
        norms = [n for n in ("bn", "nd", "none") if any(n in v for v in by_arch.values())]
        lines += ["", f"## Models (batch {models.get('batch_size')}, TF32 off; logits vs float32: AMP "
                      f"<= {tol['amp_bn']} BN / {tol['amp_nd']} ND, channels_last <= {tol['channels_last']:.0e})", "",
                  "| model | " + " | ".join(f"{n}: AMP / channels_last" for n in norms) + " | ok |",
                  "|---|" + "---|" * len(norms) + "---|"]
        for arch, per_norm in by_arch.items():
            cells, problems = [], []
            for n in norms:
                r = per_norm.get(n)
                if r is None:
                    cells.append("--")
                    continue
                e = r.get("errors")
                cells.append(f"{_fmt(e['amp'])} / {_fmt(e['channels_last'])}" if e else "error")
                problems += [f"{n}: {f}" for f in r.get("failures", [])]
            lines.append(f"| {arch} | " + " | ".join(cells) + f" | {_cell('yes' if not problems else 'NO: ' + '; '.join(problems))} |")
        drift = [f"{r['arch']}/{r['norm']} {r['errors']['amp']:.2f}" for r in models["results"]
                 if r.get("errors") and r["errors"]["amp"] > AMP_DRIFT_NOTE]
        if drift:
            lines += ["", f"AMP drift above {AMP_DRIFT_NOTE} (reported, not failed; see MODEL_TOLERANCES in "
                          f"ndlib/gpu_check.py): {', '.join(drift)}."]
    bench = steps.get("bench", {})
    if bench.get("runs"):
        lines += ["", f"## Bench ({bench.get('settings', {}).get('rounds')} rounds, batch "
                      f"{bench.get('settings', {}).get('batch_size')}; records in `{bench.get('records_dir')}`)", "",
                  "| arch | status | BN s/step | ND s/step | ND/BN | reference ND/BN |", "|---|---|---|---|---|---|"]
        for r in bench["runs"]:
            status = r["status"] + (f" ({r['detail']})" if r.get("detail") else "")
            lines.append(f"| {r['arch']} | {_cell(status)} | {_fmt(r.get('bn_step_s'), '.4f')} | "
                         f"{_fmt(r.get('nd_step_s'), '.4f')} | {_fmt(r.get('ratio_nd_bn'), '.2f')} | "
                         f"{_fmt(r.get('ratio_reference_bn'), '.2f')} |")
    train = steps.get("train", {})
    if train.get("runs"):
        lines += ["", f"## Train (VGG-16, CIFAR-10, 1 epoch; data {train.get('data')})", "",
                  "| norm | status | test acc % | train acc % | epoch s | images/s | peak MiB |", "|---|---|---|---|---|---|---|"]
        for r in train["runs"]:
            status = r["status"] + (f" ({r['detail']})" if r.get("detail") and r["status"] != "passed" else "")
            lines.append(f"| {r['norm']} | {_cell(status)} | {_fmt(r.get('test_acc'), '.2f')} | "
                         f"{_fmt(r.get('train_acc'), '.2f')} | {_fmt(r.get('train_time_s'), '.1f')} | "
                         f"{_fmt(r.get('images_per_s'), '.0f')} | {_fmt(r.get('peak_mem_mb'), '.0f')} |")
    elif train.get("status") == "skipped":
        lines += ["", f"## Train: {train.get('detail')}"]
    path = Path(out) / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------------------
def run_gpu_check(out: str | Path, *, data_dir: str | Path | None = "data", device: str = "cuda",
                  quick: bool = False, budget_s: float = DEFAULT_BUDGET_S, steps: tuple[str, ...] = STEPS,
                  layer_case_list: list[LayerCase] | None = None, plan: list[tuple[str, str]] | None = None,
                  model_batch_size: int = 8, model_builder: Callable | None = None,
                  bench_arch_list: list[str] | None = None, bench_runner: Callable | None = None,
                  bench_settings: dict | None = None, train_runner: Callable | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Run ``steps`` on ``device`` and write ``out/<step>.json``, ``out/gpu_check.json`` and
    ``out/summary.md``; return the report (``status`` "passed" or "failed").  The keyword
    arguments after ``steps`` replace the defaults in tests (tiny layers, models, fake runners)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    start = time.perf_counter()
    train_needed = "train" in steps and find_cifar10(data_dir)[0]
    deadline = start + budget_s
    bench_deadline = deadline - (TRAIN_RESERVE_S if train_needed else 0.0)
    report: dict[str, Any] = {
        "status": "running", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(torch.device(device)), "quick": quick, "budget_s": budget_s,
        "data_dir": None if data_dir is None else str(data_dir), "steps": {},
    }
    runners: dict[str, Callable[[], dict]] = {
        "layers": lambda: check_layers(device, layer_case_list, quick=quick),
        "models": lambda: check_models(device, plan, quick=quick, batch_size=model_batch_size, build=model_builder),
        "bench": lambda: run_bench_step(out, device, archs=bench_arch_list, quick=quick, deadline=bench_deadline,
                                        runner=bench_runner, **(bench_settings or {})),
        "train": lambda: run_train_step(out, data_dir, device, deadline=deadline, runner=train_runner),
    }
    with torchvision_placeholder() as placeholder:
        report["torchvision_placeholder"] = placeholder
        for name in STEPS:
            if name not in steps:
                continue
            log(f"gpu-check: {_STEP_TITLES[name]} ...")
            t0 = time.perf_counter()
            try:
                result = runners[name]()
            except Exception as error:  # noqa: BLE001 - e.g. pandas missing for bench / train
                result = {"status": "failed", "detail": f"could not run: {_one_line(error)}",
                          "traceback": traceback.format_exc()}
            result["seconds"] = time.perf_counter() - t0
            report["steps"][name] = result
            write_json(out / f"{name}.json", result)
            log(f"gpu-check: {name} {result['status']} in {result['seconds']:.1f} s: {result['detail']}")
    report["seconds"] = time.perf_counter() - start
    failed = [name for name, step in report["steps"].items() if step["status"] == "failed"]
    report["status"] = "failed" if failed else "passed"
    report["steps_summary"] = {name: {k: step.get(k) for k in ("status", "seconds", "detail")}
                               for name, step in report["steps"].items()}
    write_json(out / "gpu_check.json", {k: v for k, v in report.items() if k != "steps"})
    summary = write_summary(out, report)
    log(f"gpu-check: {report['status'].upper()} in {report['seconds']:.0f} s; summary {summary}")
    return report


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as ONE line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the JSON results, bench records, run records and summary.md")
    parser.add_argument("--data-dir", default="data", help="folder with cifar10_{train,test}.npz (default: data); "
                                                           "missing: the training step is skipped")
    parser.add_argument("--quick", action="store_true", help="a subset: 6 layers, 4 models, bench on 3 archs x 1 round")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"soft time budget in seconds (default {DEFAULT_BUDGET_S:.0f}); bench stops starting "
                             f"architectures {TRAIN_RESERVE_S:.0f} s before it when the training step will run")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")


def _validated(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    if not (args.device == "cuda" or (args.device.startswith("cuda:") and args.device[5:].isdigit())):
        parser.error(f"--device must be cuda or cuda:N (gpu-check proves the GPU path), got {args.device!r}")
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        parser.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        parser.error(f"--steps must be a comma-separated subset of {','.join(STEPS)}, got {args.steps!r}")
    if not args.out.strip():
        parser.error("--out must name a folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return steps


def _no_cuda_line(device: str) -> str | None:
    if not torch.cuda.is_available():
        return (f"gpu-check: no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() is False); "
                "run it on a machine with an NVIDIA GPU")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        return f"gpu-check: {device} does not exist here ({torch.cuda.device_count()} CUDA device(s))"
    return None


def _handle(args: argparse.Namespace) -> int:
    steps = _validated(args, args.parser)
    refusal = _no_cuda_line(args.device)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_USAGE
    report = run_gpu_check(args.out, data_dir=args.data_dir, device=args.device, quick=args.quick,
                           budget_s=args.budget_s, steps=steps)
    return EXIT_OK if report["status"] == "passed" else EXIT_FAILED


def add_parser(subparsers) -> None:
    """Register ``gpu-check`` with :mod:`ndlib.cli` (listed in its ``SUBCOMMAND_MODULES``)."""
    parser = subparsers.add_parser("gpu-check", help="prove the GPU path: layers, models, bench, one epoch",
                                   description=__doc__.split("\n\n")[0])
    _configure(parser)
    parser.set_defaults(handler=_handle, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m ndlib.gpu_check", description=__doc__.split("\n\n")[0])
    _configure(parser)
    parser.set_defaults(handler=_handle)
    parser.set_defaults(parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _handle(args)
    except KeyboardInterrupt:
        print("gpu-check: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
