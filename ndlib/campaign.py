"""A long measurement campaign kept in the repository: the ordered runs, lanes, a clean pause, status.

A campaign is a TOML file under ``campaigns/`` (version-controlled, so the queue survives the
machine).  It names runs in the order they should train::

    name = "table1-e20"
    [settings]                  # TrainConfig fields every run shares (what is computed)
    amp = true                  # bf16 autocast (a stage may set its own amp and channels_last)
    [[stage]]                   # expanded dataset -> arch -> seed -> epochs -> norm,
    title = "1. VGG-16 and EfficientNet-B0, both datasets"     # so a BN/ND pair is adjacent
    datasets = ["cifar10", "cifar100"]
    archs = ["vgg16", "efficientnetb0"]
    norms = ["bn", "nd"]
    epochs = [20]
    seeds = [0]
    [[stage]]                   # the runs of a fidelity test (ndlib.fidelity.FIDELITY_TESTS), queued here
    fidelity = "covariance-grad"

A ``deconv_*`` setting (e.g. ``deconv_covariance_grad``, in [settings] or a stage) applies to the
ND runs only: a BN run has no ND layer to set.  A run that uses a setting guarded by a fidelity
test (bf16 autocast, ND's covariance backward in bf16) waits until that test has accepted it in
the records (:func:`ndlib.fidelity.waiting_for`); the lanes train the runs after it meanwhile.

``python -m ndlib campaign run`` starts ``--lanes`` worker processes (default 2, each with
``--threads`` torch threads, default 1: on our 2-core machine two 1-thread runs gave 1.4x the
throughput of one 2-thread run).  Each lane walks the list and trains the first run that has no
finished record (``completed`` or ``diverged``) and that no other worker holds
(:mod:`ndlib.claims`), resuming its checkpoint if there is one, then the next; a run that fails
is recorded ``failed`` and left for the next start.  ``campaign pause`` asks every lane to stop
right after its next checkpoint (a resume then loses nothing); ``campaign run`` clears the pause.
``campaign status`` prints each run's state (done with its test accuracy, running with its lane,
epoch and step, next), and what is left at our measured cost.  With ``--commit-to REPO`` each
record that finishes is copied into ``REPO/results/runs/`` and committed there at once (only
that file), so a result never lives only on one machine's disk; and every ``--snapshot-every-min``
minutes (default 60), and once more when the lanes stop, the records of the runs under way that
have finished another epoch since are committed there too (:func:`snapshot`), so a machine lost
between sessions loses no finished epoch's numbers, only the training since its last checkpoint.

Machine-side settings (threads, device, folders, the note on the machine's load) come from the
command line, never from the file: the same campaign runs anywhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import tomllib

from ndlib.claims import ClaimTaken, claim, claims_folder, holder
from ndlib.config import DECONV_FIELDS, EXECUTION_FIELDS, NON_IDENTITY_FIELDS, TrainConfig
from ndlib.devices import cpu_has_native_bf16
from ndlib.grid import estimate_cost, planned_machine_type, run_status
from ndlib.paths import project_root
from ndlib.records import (
    archive_record,
    attempts_dir,
    keep_unfinished_record,
    read_record,
    record_path,
    write_json_atomic,
)

__all__ = ["Campaign", "CampaignError", "load_campaign", "default_campaign", "pause_file", "is_paused", "next_run",
           "needs_native_bf16", "work_lane", "status_lines", "commit_record", "commit_records", "snapshot",
           "watch_lanes", "FINISHED", "add_parser"]

#: Record statuses that end a run for the campaign (a diverged run is a result: it diverges again).
FINISHED = ("completed", "diverged")

_STAGE_KEYS = {"title", "datasets", "archs", "norms", "epochs", "seeds"}
#: What a stage may set for its own runs over [settings]: how they execute the paper's computation
#: (ndlib.config.EXECUTION_FIELDS), e.g. extra seeds of float32 cells stay float32 when the
#: campaign's new runs train in bf16, and the architectures whose steps channels_last makes faster
#: train in it.
_STAGE_SETTINGS = set(EXECUTION_FIELDS)
#: A stage made of a fidelity test's runs: ``fidelity = "<test>"`` (and an optional title) only.
_FIDELITY_STAGE_KEYS = {"title", "fidelity"}
_PLACEMENT = sorted(NON_IDENTITY_FIELDS)  # never in a campaign file: they say where, not what


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Campaign:
    """The runs of one campaign file, in training order; ``stages[i]`` is the title of ``runs[i]``'s stage."""

    name: str
    path: Path
    description: str
    runs: tuple[TrainConfig, ...]
    stages: tuple[str, ...]

    @property
    def runs_dir(self) -> str | None:
        return self.runs[0].runs_dir if self.runs else None


def default_campaign() -> Path:
    """The campaign the project is running now: ``campaigns/table1-e20.toml``."""
    return project_root() / "campaigns" / "table1-e20.toml"


def _as_list(value, key: str, where: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise CampaignError(f"{where}: '{key}' is empty; list at least one value")
    return values


def load_campaign(path: str | Path, **placement) -> Campaign:
    """Read a campaign file; ``placement`` (``num_threads``, ``runs_dir``, ``note``...) goes to every run."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"campaign file {path} not found; the project's campaigns are in campaigns/") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CampaignError(f"campaign file {path} is not valid TOML ({error}); fix it or restore it from git") \
            from None
    unknown = set(spec) - {"name", "description", "settings", "stage"}
    if unknown:
        raise CampaignError(f"{path}: unknown keys {sorted(unknown)}; valid: description, name, settings, stage")
    name = spec.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise CampaignError(f"{path}: 'name' must be a short name without '/' (it names the pause file)")
    settings = spec.get("settings", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(settings) - (fields - NON_IDENTITY_FIELDS - {"arch", "norm", "dataset", "epochs", "seed"}))
    if bad:
        raise CampaignError(f"{path}: [settings] may hold only what a run computes, not {bad} (stages give arch, "
                            f"norm, dataset, epochs and seed; the command line gives {', '.join(_PLACEMENT)})")
    stages = spec.get("stage")
    if not isinstance(stages, list) or not stages:
        raise CampaignError(f"{path}: no [[stage]] tables; a campaign lists its runs in stages")
    runs: list[TrainConfig] = []
    titles: list[str] = []
    for number, stage in enumerate(stages, 1):
        where = f"{path}, stage {number}"
        if "fidelity" in stage:
            for config in _fidelity_stage(stage, where, placement):
                runs.append(config)
                titles.append(str(stage.get("title", f"stage {number}")))
            continue
        unknown = set(stage) - _STAGE_KEYS - _STAGE_SETTINGS
        missing = {"datasets", "archs", "norms", "epochs"} - set(stage)
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing {sorted(missing)}"
            raise CampaignError(f"{where}: {problem}; valid: {sorted(_STAGE_KEYS | _STAGE_SETTINGS)}")
        lists = {key: _as_list(stage.get(key, [0]), key, where) for key in _STAGE_KEYS - {"title"}}
        stage_settings = {**settings, **{key: stage[key] for key in _STAGE_SETTINGS & set(stage)}}
        for dataset in lists["datasets"]:
            for arch in lists["archs"]:
                for seed in lists["seeds"]:
                    for epochs in lists["epochs"]:
                        for norm in lists["norms"]:
                            own = {key: value for key, value in stage_settings.items()
                                   if norm == "nd" or key not in DECONV_FIELDS}  # ND layers' options: ND runs
                            try:
                                config = TrainConfig(arch=arch, norm=norm, dataset=dataset, epochs=epochs,
                                                     seed=seed, **own, **placement)
                            except (ValueError, TypeError) as error:
                                raise CampaignError(f"{where}: {error}") from None
                            runs.append(config)
                            titles.append(str(stage.get("title", f"stage {number}")))
    ids = [config.run_id for config in runs]
    repeated = sorted({run_id for run_id in ids if ids.count(run_id) > 1})
    if repeated:
        raise CampaignError(f"{path}: runs listed more than once: {repeated}; list each run once")
    if len({config.runs_dir for config in runs}) > 1:
        raise CampaignError(f"{path}: all runs must share one runs folder")
    return Campaign(name, path, str(spec.get("description", "")).strip(), tuple(runs), tuple(titles))


def _fidelity_stage(stage: dict, where: str, placement: dict) -> tuple[TrainConfig, ...]:
    """The runs of the fidelity test a ``fidelity = "<test>"`` stage names, with ``placement``."""
    from ndlib.fidelity import FIDELITY_TESTS

    unknown = set(stage) - _FIDELITY_STAGE_KEYS
    if unknown:
        raise CampaignError(f"{where}: a fidelity stage takes only {sorted(_FIDELITY_STAGE_KEYS)}, not "
                            f"{sorted(unknown)}; the test's own file lists its runs")
    test = FIDELITY_TESTS.get(stage["fidelity"])
    if test is None:
        raise CampaignError(f"{where}: unknown fidelity test {stage['fidelity']!r}; valid: {sorted(FIDELITY_TESTS)}")
    return load_campaign(test.campaign, **placement).runs


# --------------------------------------------------------------------------------------
# Pause
# --------------------------------------------------------------------------------------
def pause_file(campaign: Campaign) -> Path:
    """``<runs_dir>/.campaigns/<name>.pause``: while it exists, lanes stop after their next checkpoint."""
    return claims_folder(campaign.runs_dir).parent / ".campaigns" / f"{campaign.name}.pause"


def is_paused(campaign: Campaign) -> bool:
    return pause_file(campaign).exists()


# --------------------------------------------------------------------------------------
# One lane
# --------------------------------------------------------------------------------------
def needs_native_bf16(config: TrainConfig) -> bool:
    """Whether ``config`` is a bf16-autocast run that its machine would compute without native
    bf16: on a CPU without AMX or AVX512-BF16 a bf16 step was 13x to 27x *slower* than a float32
    one (AMD EPYC, ``results/bench``), so a lane there leaves such runs to a machine that has it."""
    return bool(config.amp) and _trains_on_cpu(config) and not cpu_has_native_bf16()


def _trains_on_cpu(config: TrainConfig) -> bool:
    if config.device == "auto":
        import torch

        return not torch.cuda.is_available()
    return config.device.startswith("cpu")


def next_run(campaign: Campaign, skip: set[str] = frozenset(), untouched_only: bool = False) -> TrainConfig | None:
    """The first run not finished, not held by another worker, not in ``skip``, not one this
    machine cannot train at a sensible speed (:func:`needs_native_bf16`) and not one waiting for a
    fidelity test (:func:`ndlib.fidelity.waiting_for`); None when none is left.  ``untouched_only``:
    only runs without any record (a helper machine leaves the runs under way to theirs)."""
    folder = claims_folder(campaign.runs_dir)
    records = None
    for config in campaign.runs:
        if config.run_id in skip or holder(config.run_id, folder) is not None or needs_native_bf16(config):
            continue
        status = run_status(config)
        if status in (*FINISHED, "running") or (untouched_only and status != "missing"):
            continue
        records = _records(campaign) if records is None else records
        if _waiting_for(config, records) is None:
            return config
    return None


def _records(campaign: Campaign):
    from ndlib.records import load_runs

    return load_runs(campaign.runs_dir)


def _waiting_for(config: TrainConfig, records):
    """The fidelity test ``config`` waits for (:func:`ndlib.fidelity.waiting_for`), or None."""
    from ndlib.fidelity import waiting_for

    return waiting_for(config, records)


def commit_record(record_file: Path, repo: str | Path, message: str, lock_wait_s: float = 60.0) -> Path:
    """Copy ``record_file`` into ``<repo>/results/runs/`` (unless it is there) and commit that file alone.

    ``git commit --only`` leaves whatever else is staged or changed in ``repo`` as it was.  A git
    command of someone working in ``repo`` holds its index lock for a moment; while the lock is
    there the commit is retried for up to ``lock_wait_s`` seconds, so a lane does not stop over it."""
    return commit_records([record_file], repo, message, lock_wait_s)[0]


def commit_records(record_files: list[Path], repo: str | Path, message: str, lock_wait_s: float = 60.0) -> list[Path]:
    """:func:`commit_record` for several records in one commit: those files alone.  A record in
    an ``attempts/`` folder goes to ``results/runs/attempts/``."""
    repo = Path(repo).resolve()
    targets = []
    for record_file in record_files:
        target = repo / "results" / "runs" / (f"attempts/{record_file.name}" if record_file.parent.name == "attempts"
                                              else record_file.name)
        if target.resolve() != record_file.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.copy")
            shutil.copyfile(record_file, temp)
            temp.replace(target)
        targets.append(target)
    relative = [target.relative_to(repo).as_posix() for target in targets]
    commit = ["git", "commit", "--quiet", "--only", "-m", message, "--", *relative]
    for command in (["git", "add", "--", *relative], commit):
        deadline = time.monotonic() + lock_wait_s
        while True:
            done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
            problem = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[0]  # one line
            if done.returncode == 0 or "index.lock" not in problem or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if done.returncode != 0:
            where = targets[0] if len(targets) == 1 else targets[0].parent
            raise OSError(f"`{' '.join(command[:2])}` in {repo} failed: {problem}; "
                          f"the record is at {where}: commit it by hand")
    return targets


def _committed_record(repo: str | Path, run_id: str) -> dict:
    """``run_id``'s record as committed in ``repo`` (its HEAD, not its working tree, where a commit
    that failed may have left a copy); ``{}`` if there is none (or a damaged one, which a commit replaces)."""
    shown = subprocess.run(["git", "show", f"HEAD:results/runs/{run_id}.json"], cwd=repo, capture_output=True,
                           text=True)
    try:
        record = json.loads(shown.stdout) if shown.returncode == 0 else {}
    except json.JSONDecodeError:
        record = {}
    return record if isinstance(record, dict) else {}


def _committed_progress(repo: Path, run_id: str) -> tuple[str | None, int]:
    """The status and finished epochs of ``run_id``'s record as committed in ``repo``: ``(None, 0)`` if none."""
    record = _committed_record(repo, run_id)
    return record.get("status"), len(record.get("history") or [])


def _in_head(repo: Path, relative: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"HEAD:{relative}"], cwd=repo, capture_output=True).returncode == 0


def snapshot(campaign: Campaign, repo: str | Path, *, news_only: bool = False) -> list[str]:
    """Commit into ``repo`` the records of the campaign's runs that are under way (``running`` or
    ``interrupted``, at least one epoch finished), all in one commit: where a long run stands,
    so that a lost machine loses no finished epoch of it.  Their status stays what it is, so the
    book shows them as in progress.  ``news_only``: only records whose status or number of
    finished epochs differs from its record as committed in ``repo`` (what the periodic snapshot of ``campaign
    run`` commits: no commit without a new epoch).  The same commit takes the records the runs
    kept in ``attempts/`` that ``repo`` does not have yet (an unfinished attempt archived when its
    run started over, a completed record a rerun replaced).  Returns one line per record
    committed (none: nothing)."""
    files, lines = [], []
    for config in campaign.runs:
        for kept in sorted(attempts_dir(config.runs_dir).glob(f"{config.run_id}.*.json")):
            if kept.name.endswith(".rerun.json") or _in_head(Path(repo), f"results/runs/attempts/{kept.name}"):
                continue
            record = read_record(kept)
            files.append(kept)
            lines.append(f"{config.run_id}: an earlier attempt kept in attempts/ ({record.get('status')}, "
                         f"{len(record.get('history') or [])} of {config.epochs} epochs)")
        path = record_path(config.run_id, config.runs_dir)
        if not path.is_file():
            continue
        record = read_record(path)
        history = record.get("history") or []
        if record.get("status") not in ("running", "interrupted") or not history:
            continue
        committed = _committed_progress(Path(repo), config.run_id)
        if committed[0] == "completed":  # finished on another machine: never written over by a run under way
            continue
        if news_only and committed == (record.get("status"), len(history)):
            continue
        files.append(path)
        last = history[-1]
        accuracy = last.get("test_acc")
        lines.append(f"{config.run_id}: {len(history)} of {config.epochs} epochs"
                     + (f" (test {accuracy:.2f} % after epoch {len(history)})" if isinstance(accuracy, float) else ""))
    if files:
        commit_records(files, repo, f"Run records in progress (campaign {campaign.name}, snapshot): "
                       + "; ".join(lines))
    return lines


def _commit_message(campaign: Campaign, record: dict, lane: int) -> str:
    final = record.get("final") or {}
    history = record.get("history") or []
    seconds = sum(float(entry.get("train_time_s", 0.0)) for entry in history)
    environment = record.get("environment") or {}
    accuracy = final.get("test_acc")
    result = f"{accuracy:.2f} % test" if isinstance(accuracy, (int, float)) else "no test accuracy"
    return (f"Run record: {record['run_id']}: {record['status']}, {result} after {len(history)} epochs "
            f"(campaign {campaign.name}, lane {lane}). {environment.get('device_type', '?')} "
            f"({environment.get('device_name', '?')}), {environment.get('num_threads', '?')} thread(s), "
            f"{seconds:,.0f} s training")


def _take_completed_from(repo: str | Path, config: TrainConfig) -> bool:
    """If ``repo`` has a completed record of ``config``'s run (another machine finished it), put it
    in this runs folder (a record of this machine's unfinished attempt is kept in attempts/) and
    say True: the run is not trained here."""
    theirs = _committed_record(repo, config.run_id)
    if theirs.get("status") != "completed":
        return False
    path = record_path(config.run_id, config.runs_dir)
    keep_unfinished_record(path)
    write_json_atomic(path, theirs)
    return True


def _commit_finished(campaign: Campaign, config: TrainConfig, record: dict, lane: int, repo: str | Path) -> str:
    """Commit a run's finished record into ``repo``; a line for the lane's log.  Where ``repo``
    already has another completed record of the run (a second machine finished it first), that one
    stays, this one is committed into attempts/ beside it and the runs folder here takes theirs."""
    path = record_path(config.run_id, config.runs_dir)
    theirs = _committed_record(repo, config.run_id)
    if theirs.get("status") != "completed" or theirs.get("started_at") == record.get("started_at"):
        target = commit_record(path, repo, _commit_message(campaign, record, lane))
        return f"committed {target.name} in {Path(repo).resolve().name}"
    kept = archive_record(record, config.runs_dir)
    write_json_atomic(path, theirs)
    commit_record(kept, repo, _commit_message(campaign, record, lane)
                  + f"; {Path(repo).resolve().name} already had a completed record of this run (another machine's): "
                    "this one is kept in attempts/")
    return (f"{Path(repo).resolve().name} already had a completed record of {config.run_id} (another machine's): "
            f"this one committed as attempts/{kept.name}")


def work_lane(campaign: Campaign, lane: int, *, commit_to: str | Path | None = None,
              stream: TextIO | None = None, untouched_only: bool = False) -> int:
    """Train the campaign's runs one after another until none is left or a pause is asked; an exit code.

    With ``commit_to``, a run that the repository there already holds completed (another machine
    finished it) is taken from there, not trained.  ``untouched_only``: train only runs without any
    record (:func:`next_run`).

    0: nothing left or paused; 1: a run failed (recorded; the lane went on with the rest); 2: bad
    input, an unwritable folder or a failed commit (the lane stops: every run would fail the same way)."""
    from ndlib.records import RecordWriteError
    from ndlib.train import BadRunInput, RunPaused, run

    stream = stream if stream is not None else sys.stdout

    def say(text: str) -> None:
        # one write per line: the lanes share one stdout, and print's separate write of the
        # newline let two lanes' lines run together ("[lane 1] train A[lane 2] train B")
        stream.write(f"[lane {lane}] {text}\n")
        stream.flush()

    tried: set[str] = set()
    failed = 0
    while True:
        if is_paused(campaign):
            say(f"paused ({pause_file(campaign).name}); `campaign run` continues")
            return 1 if failed else 0
        config = next_run(campaign, tried, untouched_only)
        if config is None:
            waiting = [c for c in campaign.runs if needs_native_bf16(c) and run_status(c) not in FINISHED]
            records = _records(campaign)
            tested = [c for c in campaign.runs if run_status(c) not in FINISHED and _waiting_for(c, records)]
            say("nothing left to train" + (f" here: {len(waiting)} bf16 runs wait for a machine with native bf16 "
                                           "(Intel AMX / AVX512-BF16, or a GPU)" if waiting else "")
                + (f"; {len(tested)} runs wait for a fidelity test's verdict (`campaign status` names it)"
                   if tested else ""))
            return 1 if failed else 0
        tried.add(config.run_id)
        try:
            with claim(config.run_id, claims_folder(config.runs_dir), lane=lane, campaign=campaign.name):
                status = run_status(config, holding_claim=True)
                if status in (*FINISHED, "running"):
                    continue  # finished meanwhile, or trained by a process outside the campaign
                if commit_to is not None and _take_completed_from(commit_to, config):
                    say(f"{config.run_id}: completed on another machine, committed in "
                        f"{Path(commit_to).resolve().name}: taken from there, not trained here")
                    continue
                say(f"train {config.run_id}" + (" (resuming)" if status != "missing" else ""))
                record = run(config, progress=False, pause_requested=lambda: is_paused(campaign))
        except ClaimTaken:
            continue
        except RunPaused:
            say(f"{config.run_id}: paused after its checkpoint")
            return 1 if failed else 0
        except (BadRunInput, RecordWriteError) as error:
            say(f"stopped: {config.run_id}: {' '.join(str(error).split())}")
            return 2
        except KeyboardInterrupt:
            raise
        except Exception as error:  # recorded as failed by run(); the next start tries it again
            say(f"{config.run_id}: failed: {type(error).__name__}: {error}")
            failed += 1
            continue
        final = record.get("final") or {}
        say(f"{config.run_id}: {record['status']} test_acc={final.get('test_acc')}")
        if commit_to is not None:
            try:
                say(_commit_finished(campaign, config, record, lane, commit_to))
            except OSError as error:
                say(f"stopped: {error}")
                return 2


# --------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------
def status_lines(campaign: Campaign, lanes: int = 2) -> list[str]:
    """What ``campaign status`` prints: one line per run in order, then what is left and its cost."""
    from ndlib.bench import load_bench
    from ndlib.checkpoint import checkpoint_position
    from ndlib.records import load_runs

    records = load_runs(campaign.runs_dir)
    bench = load_bench(None, amp=None)  # estimate_cost picks each run's precision
    folder = claims_folder(campaign.runs_dir)
    lines = [f"campaign {campaign.name} ({campaign.path.name}): {len(campaign.runs)} runs"
             + ("; PAUSED: lanes stop after their next checkpoint (`campaign run` continues)"
                if is_paused(campaign) else "")]
    counts = {"done": 0, "running": 0, "waiting": 0}
    left_s, unknown, marked_next, stage, machines = 0.0, 0, False, None, set()
    per_stage: dict[str, dict] = {}  # the stage's header line, its runs, finished runs, hours left, unknowns
    for config, title in zip(campaign.runs, campaign.stages):
        if title != stage:
            lines.append(f"  {title}")
            stage = title
            per_stage[title] = {"line": len(lines) - 1, "runs": 0, "done": 0, "left_s": 0.0, "unknown": 0}
        totals = per_stage[title]
        totals["runs"] += 1
        status = run_status(config)
        path = record_path(config.run_id, config.runs_dir)
        record = read_record(path) if path.is_file() else {}
        history = record.get("history") or []
        if status in FINISHED:
            counts["done"] += 1
            totals["done"] += 1
            final = record.get("final") or {}
            accuracy = final.get("test_acc")
            lines.append(f"    {status:<11} {config.run_id}  test {accuracy:.2f} %" if isinstance(accuracy, float)
                         else f"    {status:<11} {config.run_id}")
            continue
        position = checkpoint_position(config)
        done = 0.0 if position is None else position.fraction_done
        machine = planned_machine_type(config)
        machines.add(machine)
        estimate = estimate_cost(config, records, bench, machine)
        if estimate is None:
            unknown += 1
            totals["unknown"] += 1
            cost = "no estimate"
        else:
            left_s += estimate.seconds * (1.0 - done)
            totals["left_s"] += estimate.seconds * (1.0 - done)
            cost = f"~{estimate.seconds * (1.0 - done) / 3600:.1f} h left"
        where = ""
        if history:
            last = history[-1]
            where = f"epoch {len(history)}/{config.epochs} done (test {last.get('test_acc', float('nan')):.2f} %)"
        if position is not None and position.problem is None:
            where += (", " if where else "") + f"checkpoint at step {position.step}"
        if status == "running":
            counts["running"] += 1
            owner = holder(config.run_id, folder) or {}
            pid = owner.get("pid", (record.get("environment") or {}).get("pid", "?"))
            who = f"lane {owner['lane']}" if "lane" in owner else f"pid {pid}, outside the campaign"
            lines.append(f"    running     {config.run_id}  [{who}; {where or 'first epoch'}]  {cost}")
        else:
            counts["waiting"] += 1
            elsewhere = needs_native_bf16(config)  # a lane here leaves it to a machine with native bf16
            test = _waiting_for(config, records)
            label = status if marked_next or elsewhere or test else "next"
            marked_next = marked_next or not (elsewhere or test)
            where += (", " if where else "") + "bf16: not on this CPU" if elsewhere else ""
            where += (", " if where else "") + f"waits for the {test.name} fidelity test" if test else ""
            lines.append(f"    {label:<11} {config.run_id}" + (f"  [{where}]" if where else "") + f"  {cost}")
    for totals in per_stage.values():
        lines[totals["line"]] += (f"  ({totals['done']} of {totals['runs']} done, ~{totals['left_s'] / 3600:.0f} h left"
                                  + (f", {totals['unknown']} without an estimate" if totals["unknown"] else "") + ")")
    lines.append(f"{counts['done']} done, {counts['running']} running, {counts['waiting']} waiting; "
                 f"~{left_s / 3600:.0f} h of training left, ~{left_s / 3600 / max(lanes, 1):.0f} h on {lanes} lanes"
                 + (f" ({unknown} runs without an estimate)" if unknown else "")
                 + " (estimates: ndlib.grid.estimate_cost, from our completed runs of each model, "
                 + (f"those of this machine type, {next(iter(machines))}, where there are any)"
                    if len(machines) == 1 and None not in machines else "this machine type's where there are any)"))
    return lines


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _placement(args: argparse.Namespace) -> dict:
    values = {"num_threads": args.threads, "runs_dir": args.runs_dir, "checkpoint_dir": args.checkpoint_dir,
              "data_dir": args.data_dir, "device": args.device}
    if getattr(args, "note", None):
        values["note"] = args.note
    return {key: value for key, value in values.items() if value is not None}


def _lane_argv(args: argparse.Namespace, lane: int) -> list[str]:
    argv = [sys.executable, "-m", "ndlib", "campaign", "lane", str(args.file), "--lane", str(lane)]
    for flag in ("threads", "runs_dir", "checkpoint_dir", "data_dir", "device", "note", "commit_to"):
        value = getattr(args, flag)
        if value is not None and value != "":
            argv += ["--" + flag.replace("_", "-"), str(value)]
    return argv + (["--skip-started"] if args.skip_started else [])


def watch_lanes(children: list, campaign: Campaign, *, commit_to: str | Path | None = None,
                snapshot_every_s: float = 0.0, poll_s: float = 5.0, stream: TextIO | None = None) -> list[int]:
    """Wait for the lane processes (``subprocess.Popen``-like) and return their exit codes.

    Meanwhile, with ``commit_to`` and ``snapshot_every_s`` > 0, every ``snapshot_every_s``
    seconds and once more when every lane has stopped, commit a :func:`snapshot` of the runs
    under way that have finished an epoch since the last one.  A snapshot that cannot be
    committed is reported in one line and tried again at the next interval: it never stops a lane."""
    stream = stream if stream is not None else sys.stdout
    periodic = commit_to is not None and snapshot_every_s > 0

    def take_snapshot() -> None:
        try:
            lines = snapshot(campaign, commit_to, news_only=True)
        except (OSError, ValueError) as error:
            stream.write(f"[campaign] snapshot not committed: {' '.join(str(error).split())}\n")
        else:
            if lines:
                stream.write(f"[campaign] snapshot committed in {Path(commit_to).resolve().name}: {'; '.join(lines)}\n")
        stream.flush()

    due = time.monotonic() + snapshot_every_s
    while any(child.poll() is None for child in children):
        time.sleep(poll_s)
        if periodic and time.monotonic() >= due:
            take_snapshot()
            due = time.monotonic() + snapshot_every_s
    if periodic:
        take_snapshot()  # where the runs stopped: a pause, an interruption, the end of the queue
    return [child.wait() for child in children]


def _run_lanes(args: argparse.Namespace, campaign: Campaign) -> int:
    """Start ``args.lanes`` lane processes and wait; SIGINT/SIGTERM is passed on (each records ``interrupted``)."""
    pause_file(campaign).unlink(missing_ok=True)
    for line in status_lines(campaign, args.lanes):
        print(line, flush=True)
    children = [subprocess.Popen(_lane_argv(args, lane)) for lane in range(1, args.lanes + 1)]

    def pass_on(signum, frame):  # noqa: ARG001
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = watch_lanes(children, campaign, commit_to=args.commit_to or None,
                            snapshot_every_s=60.0 * args.snapshot_every_min)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if any(code == 130 for code in codes):
        print("campaign interrupted; `campaign run` resumes every run from its checkpoint", file=sys.stderr)
        return 130
    return max(codes) if codes else 0


def _handle(args: argparse.Namespace) -> int:
    from ndlib.cliargs import EXIT_CODES, usage_error

    prog = args.parser.prog
    if args.lanes < 1 or args.threads < 1:
        return usage_error(prog, "--lanes and --threads must be at least 1")
    if not args.snapshot_every_min >= 0:
        return usage_error(prog, f"--snapshot-every-min must be 0 (off) or more, got {args.snapshot_every_min}")
    if args.file is None:
        args.file = default_campaign()
    try:
        campaign = load_campaign(args.file, **_placement(args))
    except CampaignError as error:
        return usage_error(prog, error)
    if not campaign.runs:
        return usage_error(prog, f"{args.file} lists no runs")
    try:
        if args.action == "status":
            for line in status_lines(campaign, args.lanes):
                print(line)
            return 0
        if args.action == "pause":
            path = pause_file(campaign)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("lanes stop after their next checkpoint; `campaign run` continues\n")
            print(f"pause asked: every lane of {campaign.name} stops after its next checkpoint "
                  f"(within --checkpoint-interval-s, or at the end of its epoch); `campaign run` continues")
            return 0
        if args.action == "lane":
            return work_lane(campaign, args.lane, commit_to=args.commit_to, untouched_only=args.skip_started)
        if args.action == "snapshot":
            if not args.commit_to:
                return usage_error(prog, "snapshot needs --commit-to REPO, the checkout to commit the records in")
            # news only: right after a periodic snapshot of `campaign run` there is nothing to commit,
            # and `git commit` of unchanged files would fail
            lines = snapshot(campaign, args.commit_to, news_only=True)
            print("\n".join(f"committed {line}" for line in lines) if lines else
                  "nothing to commit: no run of the campaign under way has finished an epoch since its record "
                  "was last committed there")
            return 0
        return _run_lanes(args, campaign)
    except KeyboardInterrupt:
        return EXIT_CODES["interrupted"]
    except (ValueError, OSError) as error:  # a damaged record, an unwritable folder
        return usage_error(prog, error)


def add_parser(subparsers) -> None:
    """Register ``campaign``."""
    parser = subparsers.add_parser(
        "campaign", help="run, pause or show a campaign of runs listed in campaigns/*.toml",
        description="Run a campaign's runs in order on several lanes (completed records skipped, checkpoints "
                    "resumed, claims so two lanes never train one run), pause it cleanly, or show its status.")
    parser.add_argument("action", choices=["run", "status", "pause", "snapshot", "lane"],
                        help="run: start the lanes; status: done / running / next and the cost left; pause: lanes "
                             "stop after their next checkpoint; snapshot: commit the records of the runs under "
                             "way into --commit-to; lane: one lane (what `run` starts)")
    parser.add_argument("file", nargs="?", default=None, help="campaign file (default: campaigns/table1-e20.toml)")
    parser.add_argument("--lanes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per lane (default 1)")
    parser.add_argument("--lane", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--commit-to", metavar="REPO",
                        help="copy each finished record into REPO/results/runs and commit it there at once "
                             "(snapshot: the records of the runs under way)")
    parser.add_argument("--snapshot-every-min", type=float, default=60.0, metavar="MIN",
                        help="run, with --commit-to: every MIN minutes, and when the lanes stop, commit the records "
                             "of the runs under way that finished an epoch since (default 60; 0: off)")
    parser.add_argument("--skip-started", action="store_true",
                        help="run: train only runs that have no record yet, for a second machine (a GPU) helping "
                             "the campaign: the runs under way elsewhere (committed snapshots) are left to theirs")
    parser.add_argument("--note", default="", help="free text for every record: the machine and its load")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--runs-dir", default=None, help="default: <project>/results/runs")
    parser.add_argument("--checkpoint-dir", default=None, help="default: <project>/checkpoints")
    parser.add_argument("--data-dir", default=None, help="default: <project>/data")
    parser.set_defaults(handler=_handle, parser=parser)
