"""``make gpu-check``: one command that proves the GPU path, in minutes, on one CUDA GPU.

    PYTHONPATH=. python3 -m ndlib.checks.gpu --out DIR [--data-dir DIR] [--quick] [--budget-s S]
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
is missing a placeholder module with ``__version__ = "not installed"`` stands in while the check
runs (CIFAR is read from ``cifar10_{train,test}.npz``, which needs no torchvision).  Steps 3
and 4 need pandas and numpy (``ndlib.bench`` / ``ndlib.records`` import them); without them the
step fails with that one line and the others still run (the JSON files and the environment then
come without ``ndlib.records``, see :mod:`ndlib.checks.common`).

Steps 1 and 2 live in :mod:`ndlib.checks.compare`, what the steps share (JSON, environment,
one-line errors) in :mod:`ndlib.checks.common`; this module has steps 3 and 4, the summary, the
whole run and the command line, and re-exports the names of the other two that callers use.

The step functions take the device as an argument, so the tests run them on the CPU (float32
against float64, tiny settings) to exercise the comparisons, the JSON and the summary.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from ndlib.checks.common import (
    environment,
    module_version,
    one_line,
    torchvision_placeholder,
    utc_now,
    write_json,
)
from ndlib.checks.compare import (
    AMP_DRIFT_NOTE,
    LAYER_TOLERANCES,
    MODEL_TOLERANCES,
    LayerCase,
    check_layers,
    check_models,
)

__all__ = [
    "STEPS",
    "bench_archs",
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

#: Bench settings: batch 128 (the paper's), 1 warm-up step and 3 interleaved rounds per
#: architecture (3 ND/BN ratios each); ``--quick``: 1 round, three architectures.
BENCH_DEFAULTS = {"batch_size": 128, "rounds": 3, "warmup": 1, "threads": 1}
QUICK_BENCH_ARCHS = ("resnet18", "vgg16", "mobilenetv2")

#: Seconds the train step is given (two CIFAR-10 epochs of VGG-16 on one H100-class GPU take
#: well under a minute each); the bench step stops starting architectures when only this is left.
TRAIN_RESERVE_S = 150.0
DEFAULT_BUDGET_S = 450.0


# --------------------------------------------------------------------------------------
# Step 3: the benchmark
# --------------------------------------------------------------------------------------
def bench_archs(quick: bool = False) -> list[str]:
    """``--arch all`` of ``python -m ndlib bench`` (Table 1), or three of them with ``quick``."""
    from ndlib import models

    return list(QUICK_BENCH_ARCHS) if quick else models.available(table=1)


def bench_argv(arch: str, device: str, out_dir: Path, *, rounds: int, batch_size: int, warmup: int,
               threads: int) -> list[str]:
    """The ``python -m ndlib bench`` arguments for one architecture, spelled by bench's own parser
    (:func:`ndlib.cli.subcommand_argv`)."""
    from ndlib.cli import subcommand_argv

    return subcommand_argv("bench", arch=arch, device=device, batch_size=batch_size, rounds=rounds, warmup=warmup,
                           threads=threads, out_dir=str(out_dir), note="make gpu-check")


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
            status, detail = "failed", one_line(error)
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
        if module_version("torchvision") is None:
            return False, (f"{root}/cifar-10-batches-py needs torchvision, which is not installed here; "
                           "use the .npz files")
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
            runs.append({"norm": norm, "status": "failed", "detail": one_line(error),
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
    lines += _layers_section(steps.get("layers", {}))
    lines += _models_section(steps.get("models", {}))
    lines += _bench_section(steps.get("bench", {}))
    lines += _train_section(steps.get("train", {}))
    path = Path(out) / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _layers_section(layers: dict) -> list[str]:
    """The layer table of the summary (no lines without results)."""
    if not layers.get("results"):
        return []
    tol = layers.get("tolerances", LAYER_TOLERANCES)
    lines = ["", f"## Layers (TF32 off; norm-wise relative errors; tolerances: output {tol['output']:.0e}, "
                 f"gradients {tol['input_grad']:.0e}, buffers {tol['buffers']:.0e}; AMP: output "
                 f"{tol['amp_output']:.0e}, weight grad {tol['amp_weight_grad']:.0e}, "
                 f"buffers {tol['amp_buffers']:.0e})",
             "",
             "| layer | output | input grad | weight grad | bias grad | buffers | eval "
             "| AMP out / W grad / buffers | ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in layers["results"]:
        e = r.get("errors", {})
        ok = "yes" if r.get("passed") else "NO: " + ", ".join(r.get("failures", [])) + (
            f" ({r['error']})" if r.get("error") else "")
        amp = " / ".join(_fmt(e.get(k)) for k in ("amp_output", "amp_weight_grad", "amp_buffers"))
        lines.append(f"| {_cell(r['layer'])} | " + " | ".join(_fmt(e.get(k)) for k in
                     ("output", "input_grad", "weight_grad", "bias_grad", "buffers", "eval_output"))
                     + f" | {amp} | {_cell(ok)} |")
    return lines


def _models_section(models: dict) -> list[str]:
    """The model table of the summary, one row per architecture, and the AMP drifts worth a note."""
    if not models.get("results"):
        return []
    tol = models.get("tolerances", MODEL_TOLERANCES)
    by_arch: dict[str, dict[str, dict]] = {}
    for r in models["results"]:
        by_arch.setdefault(r["arch"], {})[r["norm"]] = r
    norms = [n for n in ("bn", "nd", "none") if any(n in v for v in by_arch.values())]
    lines = ["", f"## Models (batch {models.get('batch_size')}, TF32 off; logits vs float32: AMP "
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
        verdict = "yes" if not problems else "NO: " + "; ".join(problems)
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {_cell(verdict)} |")
    drift = [f"{r['arch']}/{r['norm']} {r['errors']['amp']:.2f}" for r in models["results"]
             if r.get("errors") and r["errors"]["amp"] > AMP_DRIFT_NOTE]
    if drift:
        lines += ["", f"AMP drift above {AMP_DRIFT_NOTE} (reported, not failed; see MODEL_TOLERANCES in "
                      f"ndlib/checks/compare.py): {', '.join(drift)}."]
    return lines


def _bench_section(bench: dict) -> list[str]:
    """The bench table of the summary: step times and ND/BN ratios per architecture."""
    if not bench.get("runs"):
        return []
    lines = ["", f"## Bench ({bench.get('settings', {}).get('rounds')} rounds, batch "
                 f"{bench.get('settings', {}).get('batch_size')}; records in `{bench.get('records_dir')}`)", "",
             "| arch | status | BN s/step | ND s/step | ND/BN | reference ND/BN |", "|---|---|---|---|---|---|"]
    for r in bench["runs"]:
        status = r["status"] + (f" ({r['detail']})" if r.get("detail") else "")
        lines.append(f"| {r['arch']} | {_cell(status)} | {_fmt(r.get('bn_step_s'), '.4f')} | "
                     f"{_fmt(r.get('nd_step_s'), '.4f')} | {_fmt(r.get('ratio_nd_bn'), '.2f')} | "
                     f"{_fmt(r.get('ratio_reference_bn'), '.2f')} |")
    return lines


def _train_section(train: dict) -> list[str]:
    """The training table of the summary, or the line saying why the step was skipped."""
    if train.get("runs"):
        lines = ["", f"## Train (VGG-16, CIFAR-10, 1 epoch; data {train.get('data')})", "",
                 "| norm | status | test acc % | train acc % | epoch s | images/s | peak MiB |",
                 "|---|---|---|---|---|---|---|"]
        for r in train["runs"]:
            status = r["status"] + (f" ({r['detail']})" if r.get("detail") and r["status"] != "passed" else "")
            lines.append(f"| {r['norm']} | {_cell(status)} | {_fmt(r.get('test_acc'), '.2f')} | "
                         f"{_fmt(r.get('train_acc'), '.2f')} | {_fmt(r.get('train_time_s'), '.1f')} | "
                         f"{_fmt(r.get('images_per_s'), '.0f')} | {_fmt(r.get('peak_mem_mb'), '.0f')} |")
        return lines
    if train.get("status") == "skipped":
        return ["", f"## Train: {train.get('detail')}"]
    return []


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
        "status": "running", "started_at": utc_now(), "environment": None, "quick": quick, "budget_s": budget_s,
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
        report["environment"] = environment(device)  # ndlib.records' part imports torchvision
        report["torchvision_placeholder"] = placeholder
        for name in STEPS:
            if name not in steps:
                continue
            log(f"gpu-check: {_STEP_TITLES[name]} ...")
            t0 = time.perf_counter()
            try:
                result = runners[name]()
            except Exception as error:  # noqa: BLE001 - e.g. pandas missing for bench / train
                result = {"status": "failed", "detail": f"could not run: {one_line(error)}",
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
    parser.add_argument("--out", required=True,
                        help="folder for the JSON results, bench records, run records and summary.md")
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
    """Register ``gpu-check`` with :mod:`ndlib.cli` (listed in its ``subcommand_modules``)."""
    parser = subparsers.add_parser("gpu-check", help="prove the GPU path: layers, models, bench, one epoch",
                                   description=__doc__.split("\n\n")[0])
    _configure(parser)
    parser.set_defaults(handler=_handle, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m ndlib.checks.gpu", description=__doc__.split("\n\n")[0])
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
