"""Steps 1 and 2 of ``make gpu-check`` (:mod:`ndlib.checks.gpu`): layers and models on the device,
compared with a reference.

* **Layers** (:func:`check_layers`): every deconvolution layer kind in float32 on the device
  against the same layer, same weights, same inputs and upstream gradients, on the CPU in float64
  (outputs, gradients, running buffers over a few training steps, then evaluation mode; and under
  bfloat16 autocast).  Tolerances: :data:`LAYER_TOLERANCES`.
* **Models** (:func:`check_models`): every registered model in each of its norms, one
  training-mode forward and backward in float32, under bfloat16 autocast and in channels_last,
  each from the same weights and buffers.  Tolerances: :data:`MODEL_TOLERANCES`.

TF32 is off in both (:func:`exact_float32`).  The functions take the device as an argument, so
the tests run them on the CPU (float32 against float64).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import traceback
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ndlib.checks.common import one_line
from ndlib.devices import synchronize

__all__ = [
    "LAYER_TOLERANCES",
    "MODEL_TOLERANCES",
    "AMP_DRIFT_NOTE",
    "QUICK_MODEL_ARCHS",
    "rel_err",
    "exact_float32",
    "LayerCase",
    "layer_cases",
    "compare_layer",
    "check_layers",
    "model_plan",
    "check_model",
    "check_models",
]

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

#: The models of ``--quick``.
QUICK_MODEL_ARCHS = ("vgg16", "resnet18", "mobilenetv2", "resnet18_imagenet")


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
        synchronize(device)
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
    synchronize(device)
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
                                "error": one_line(error), "traceback": traceback.format_exc()})
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
        synchronize(device)
        outputs[mode] = logits.detach().float()
        modes[mode] = {"shape": list(logits.shape), "output_dtype": str(logits.dtype).replace("torch.", ""),
                       "finite_output": bool(torch.isfinite(logits).all()), "finite_loss": bool(torch.isfinite(loss)),
                       "finite_grads": _grads_finite(model), "loss": float(loss.detach()),
                       "seconds": time.perf_counter() - t0}
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
    return {"arch": arch, "norm": norm, "input": [batch_size, 3, size, size],
            "params": sum(p.numel() for p in model.parameters()), "modes": modes, "errors": errors,
            "tolerances": {"amp": amp_tol, "channels_last": MODEL_TOLERANCES["channels_last"]},
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
                results.append({"arch": arch, "norm": norm, "passed": False, "failures": [one_line(error)],
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
