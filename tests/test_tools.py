"""tools/device_data.sh: a dataset split into two parts that each fit one device call, and
joined again into exactly the copy it came from (a stand-in unpack.py lists what it sees)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "device_data.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

FAKE_UNPACK = '''
import json, pathlib, sys
here = pathlib.Path(__file__).resolve().parent
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
dataset = sys.argv[sys.argv.index("--dataset") + 1]
out.mkdir(parents=True, exist_ok=True)
files = sorted(p.name for p in (here / dataset).iterdir())
sizes = [(here / dataset / f).stat().st_size for f in files]
(out / f"{dataset}.json").write_text(json.dumps({"files": files, "sizes": sizes}))
'''


def _run(repo: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": shutil.which("python3") or "python3", **(env_extra or {})}
    return subprocess.run(["bash", str(repo / "tools" / "device_data.sh"), *args], cwd=repo, env=env,
                          capture_output=True, text=True)


@pytest.fixture
def repo_and_copy(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools")
    source = tmp_path / "shared" / "data"
    (source / "cifar10").mkdir(parents=True)
    (source / "unpack.py").write_text(FAKE_UNPACK)
    (source / "cifar10" / "meta.json").write_text(json.dumps({"splits": {}}))
    (source / "cifar10" / "train-labels.npy").write_bytes(b"\0" * 10)
    for i in range(6):
        (source / "cifar10" / f"train-{i:02d}.webp").write_bytes(bytes([i]) * 1000)
    return repo, source


def test_stage_splits_under_the_limit_and_unpack_joins_everything(repo_and_copy):
    repo, source = repo_and_copy
    staged = _run(repo, "stage", "cifar10", str(source), env_extra={"DEVICE_DATA_PART_BYTES": "3500"})
    assert staged.returncode == 0, staged.stderr
    parts = [repo / ".device-data" / f"cifar10-{k}" for k in (1, 2)]
    for part in parts:
        assert sum(f.stat().st_size for f in part.iterdir()) <= 3500
        assert list(part.glob("*.webp")), f"{part.name} holds no sheet: the split did not happen"
    unpacked = _run(repo, "unpack", "cifar10")
    assert unpacked.returncode == 0, unpacked.stderr
    seen = json.loads((repo / "data" / "cifar10.json").read_text())
    assert seen["files"] == sorted(p.name for p in (source / "cifar10").iterdir())
    assert seen["sizes"] == [(source / "cifar10" / f).stat().st_size for f in seen["files"]]


def test_a_part_over_the_limit_is_refused(repo_and_copy):
    repo, source = repo_and_copy
    staged = _run(repo, "stage", "cifar10", str(source), env_extra={"DEVICE_DATA_PART_BYTES": "2000"})
    assert staged.returncode == 1 and "split in three" in staged.stderr


@pytest.mark.parametrize("args, message", [
    (("unpack", "cifar10"), ".device-data/cifar10-1 is missing"),
    (("stage", "cifar7"), "unknown dataset 'cifar7'"),
    (("stage", "cifar10", "/nonexistent/shared"), "no folder '/nonexistent/shared'"),
    (("frob", "cifar10"), "usage:"),
])
def test_bad_input_names_the_problem(repo_and_copy, args, message):
    repo, _ = repo_and_copy
    result = _run(repo, *args)
    assert result.returncode == 2 and message in result.stderr
