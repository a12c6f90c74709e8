"""Command line: argument errors, exit codes, train and grid subcommands (tiny model, synthetic data)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ndlib.train
from _experiments_helpers import tiny_model
from ndlib.cli import EXIT_CODES, main

TINY = ["--synthetic", "--synthetic-image-size", "8", "--synthetic-train-size", "32", "--synthetic-test-size", "16",
        "--batch-size", "16", "--device", "cpu", "--num-threads", "1", "--no-progress"]


@pytest.fixture
def tiny_models(monkeypatch):
    monkeypatch.setattr(ndlib.train, "create_model", lambda config: tiny_model(nd=config.norm == "nd"))


def _dirs(tmp_path):
    return ["--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck")]


def test_unknown_arch_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--arch", "alexnet"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "alexnet" in error and "vgg16" in error and "resnet18" in error


def test_invalid_value_is_a_usage_error_with_the_reason(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--arch", "vgg16", "--epochs", "0"])
    assert info.value.code == 2 and "epochs must be a positive integer" in capsys.readouterr().err


def test_refresh_stats_choice_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--arch", "vgg16", "--norm", "nd", "--deconv-refresh-every", "4",
              "--deconv-refresh-stats", "ema"])
    assert info.value.code == 2 and "invalid choice: 'ema'" in capsys.readouterr().err


def test_unknown_subcommand_fails():
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


def test_train_writes_a_record_and_exits_zero(tmp_path, tiny_models, capsys):
    code = main(["train", "--arch", "resnet18", "--norm", "nd", "--epochs", "2", *TINY, *_dirs(tmp_path),
                 "--note", "cli test"])
    assert code == EXIT_CODES["completed"] == 0
    records = list((tmp_path / "runs").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["config"]["arch"] == "resnet18"
    assert record["config"]["note"] == "cli test" and len(record["history"]) == 2
    assert "completed" in capsys.readouterr().out


def test_diverged_run_exits_3(tmp_path, tiny_models):
    assert main(["train", "--arch", "vgg16", "--lr", "1e12", "--epochs", "2", *TINY, *_dirs(tmp_path)]) == 3


def test_failed_run_exits_1_and_is_recorded(tmp_path, monkeypatch, capsys):
    def broken(config):
        raise RuntimeError("model construction failed")

    monkeypatch.setattr(ndlib.train, "create_model", broken)
    assert main(["train", "--arch", "vgg16", *TINY, *_dirs(tmp_path)]) == 1
    assert "model construction failed" in capsys.readouterr().err
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert record["status"] == "failed" and "model construction failed" in record["error"]


def test_missing_real_data_is_one_line_with_both_fixes_and_no_record(tmp_path, capsys):
    code = main(["train", "--arch", "vgg16", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"),
                 "--no-progress", *_dirs(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 2 and error[0] == "run t1-cifar100-vgg16-bn-e1-s0"  # what it tried, then the one-line error
    assert "unpack.py" in error[1] and "--download" in error[1] and "--data-dir" in error[1]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))


def test_grid_dry_run_prints_the_plan(tmp_path, capsys):
    code = main(["grid", "--table", "1", "--epochs", "1", "--archs", "vgg16", "--datasets", "cifar10", "--dry-run",
                 "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "2 runs planned" in out and "missing     t1-cifar10-vgg16-nd-e1-s0" in out


def test_grid_bad_arch_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["grid", "--table", "2", "--archs", "vgg16"])
    assert info.value.code == 2 and "vgg11_imagenet" in capsys.readouterr().err


def test_grid_writes_a_slurm_script(tmp_path, capsys):
    target = tmp_path / "grid.sbatch"
    code = main(["grid", "--table", "2", "--slurm", str(target), "--runs-dir", str(tmp_path)])
    assert code == 0 and "#SBATCH --array=0-6" in target.read_text()


def test_grid_trains_the_missing_runs(tmp_path, tiny_models):
    args = ["grid", "--table", "1", "--epochs", "1", "--archs", "vgg16", "--datasets", "cifar10", *TINY,
            *_dirs(tmp_path)]
    assert main(args) == 0
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert main(args) == 0  # nothing left to do


def test_module_entry_point_exit_code():
    done = subprocess.run([sys.executable, "-m", "ndlib", "train", "--arch", "nope"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr


@pytest.mark.parametrize("name", ["table1_cifar.ipynb", "table2_imagenet.ipynb"])
def test_notebooks_are_thin_stripped_and_parameterised(name):
    """Parameters cell of flat literals (tagged), no stored outputs, the papermill command documented."""
    import ast

    import nbformat

    from ndlib.paths import project_root
    from ndlib.train import TrainConfig

    notebook = nbformat.read(project_root() / "notebooks" / name, as_version=4)
    assert "papermill notebooks/" in notebook.cells[0].source and "-p synthetic False" in notebook.cells[0].source
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    tree = ast.parse(tagged[0].source)
    names = []
    for statement in tree.body:
        assert isinstance(statement, ast.Assign), ast.dump(statement)
        ast.literal_eval(statement.value)  # raises if not a literal
        names.append(statement.targets[0].id)
    declared = ast.literal_eval([s for s in tree.body if s.targets[0].id == "PARAMETER_NAMES"][0].value)
    assert set(declared) == set(names) - {"PARAMETER_NAMES"}
    assert set(declared) - {"records_dir", "rerun"} <= {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    assert "rerun" in declared and tree.body[[t.targets[0].id for t in tree.body].index("rerun")].value.value is False
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "run nbstripout on the notebook"


def test_train_refuses_a_configuration_claimed_by_another_worker(tmp_path, tiny_models, monkeypatch, capsys):
    from ndlib.claims import claim, claims_folder
    from ndlib.train import TrainConfig

    run_id = TrainConfig(arch="vgg16", synthetic=True, synthetic_image_size=8, synthetic_train_size=32,
                         synthetic_test_size=16, batch_size=16).run_id
    with claim(run_id, claims_folder(tmp_path / "runs")):  # claims live beside the runs they protect
        assert main(["train", "--arch", "vgg16", *TINY, *_dirs(tmp_path)]) == 1
    assert "claimed" in capsys.readouterr().err


def test_grid_refuses_to_run_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as info:
        main(["grid", "--table", "1", "--dry-run"])
    assert info.value.code == 2 and "torchrun" in capsys.readouterr().err


def test_only_rank_zero_claims_under_torchrun(tmp_path, monkeypatch):
    """Rank 1 must not be refused by rank 0's claim (the run itself is stubbed out here)."""
    from ndlib.claims import claim, claims_folder

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    seen = []
    monkeypatch.setattr(ndlib.train, "run", lambda config, **kw: seen.append(config.run_id) or
                        {"status": "completed", "final": {}})
    from ndlib.train import TrainConfig

    run_id = TrainConfig(arch="vgg16", synthetic=True, synthetic_image_size=8, synthetic_train_size=32,
                         synthetic_test_size=16, batch_size=16).run_id
    with claim(run_id, claims_folder(tmp_path / "runs")):  # held by "rank 0"
        assert main(["train", "--arch", "vgg16", *TINY, *_dirs(tmp_path)]) == 0
    assert seen == [run_id]


def test_subcommand_argv_spells_options_with_the_subcommands_own_parser():
    from ndlib.cli import subcommand_argv

    argv = subcommand_argv("grid", table=1, datasets=["cifar10"], archs=None, epochs=[20], seeds=[0, 1])
    assert argv == ["grid", "--table", "1", "--datasets", "cifar10", "--epochs", "20", "--seeds", "0", "1"]
    assert subcommand_argv("bench", arch="vgg16", amp=True, channels_last=False) == ["bench", "--arch", "vgg16",
                                                                                   "--amp"]
    with pytest.raises(ValueError, match="has no option for 'tabel'"):
        subcommand_argv("grid", tabel=1)
    with pytest.raises(ValueError, match="no subcommand 'gird'"):
        subcommand_argv("gird", table=1)
    with pytest.raises(ValueError, match="reads"):  # a value the parser would read differently
        subcommand_argv("bench", rounds="3")
