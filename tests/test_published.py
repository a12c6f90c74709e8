"""The published data: attributions, the known errors of the reproduction, and its flagged rows."""
import re
import shutil

import pandas as pd
import pytest

from ndlib import published

README = (published.DATA_DIR / "README.md").read_text(encoding="utf-8")
SOURCE_COLUMNS = ["dataset", "arch", "method", "epochs", "attempt", "reported_acc", "train_time_s", "test_time_s"]
# The attempts we flag; each key is checked against the values that justify it below.
FLAGGED = {
    ("cifar100", "efficientnetb0", "BN", 20, 3),
    ("cifar100", "efficientnetb0", "BN", 100, 3),
    ("cifar100", "resnet18", "ND", 20, 3),
    ("cifar100", "resnet18", "BN", 20, 3),
}


def _attempt(df: pd.DataFrame, dataset: str, arch: str, method: str, epochs: int, attempt: int) -> pd.Series:
    rows = df[(df.dataset == dataset) & (df.arch == arch) & (df.method == method)
              & (df.epochs == epochs) & (df.attempt == attempt)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.fixture(scope="module")
def repro() -> pd.DataFrame:
    return published.reproduction_table1()


def test_readme_names_the_reproduction_authors():
    assert "Rochana R. Obadage" in README
    assert "K. Obadage" not in README


def test_loader_keeps_the_source_rows_and_adds_only_suspect(repro):
    raw = pd.read_csv(published.DATA_DIR / "re_table1_attempts.csv")
    assert len(raw) == 360 and len(repro) == len(raw)
    assert list(repro.columns) == SOURCE_COLUMNS + ["acc_pct", "suspect"]
    pd.testing.assert_frame_equal(repro[SOURCE_COLUMNS], raw)  # same rows, same order


def test_flagged_rows_have_reasons_and_the_rest_none(repro):
    flagged = repro[repro["suspect"] != ""]
    assert set(flagged[published.ATTEMPT_KEY].itertuples(index=False, name=None)) == FLAGGED
    assert flagged["suspect"].str.len().gt(20).all()
    assert repro["suspect"].map(type).eq(str).all()
    assert (repro["suspect"] == "").sum() == len(repro) - len(FLAGGED)
    listed = published.suspect_reproduction_rows()
    assert set(listed[published.ATTEMPT_KEY].itertuples(index=False, name=None)) == FLAGGED


def test_flags_match_the_data(repro):
    """Each reason describes the values it flags, so a changed source row shows up here."""
    def row(*key):
        return _attempt(repro, "cifar100", *key)

    eff2, eff3 = row("efficientnetb0", "BN", 20, 2), row("efficientnetb0", "BN", 20, 3)
    assert eff3.train_time_s == pytest.approx(eff2.acc_pct, abs=0.01)
    assert (eff3.reported_acc, eff3.test_time_s) == (eff2.reported_acc, eff2.test_time_s)
    eff100 = row("efficientnetb0", "BN", 100, 3)
    assert eff100.test_time_s == eff100.train_time_s
    copy, original = row("resnet18", "ND", 20, 3), row("resnext29", "BN", 20, 3)
    assert copy[["reported_acc", "train_time_s", "test_time_s"]].equals(
        original[["reported_acc", "train_time_s", "test_time_s"]])
    bn = [row("resnet18", "BN", 20, a) for a in (1, 2, 3)]
    assert bn[2].train_time_s / max(bn[0].train_time_s, bn[1].train_time_s) > 3.5
    # Attempts 1 and 2 share an accuracy but not their times, so they stay unflagged.
    assert bn[0].reported_acc == bn[1].reported_acc and bn[0].train_time_s != bn[1].train_time_s


def test_readme_mobilenetv2_means_follow_from_the_attempts(repro):
    cell = repro[(repro.dataset == "cifar10") & (repro.arch == "mobilenetv2") & (repro.epochs == 100)]
    bn = cell[cell.method == "BN"].set_index("attempt")["acc_pct"]
    nd = cell[cell.method == "ND"].set_index("attempt")["acc_pct"]
    match = re.search(r"three BN attempts we ship\s+\(([^)]*)\)\s+is\s+([\d.]+);", README)
    assert match, "the README no longer states the MobileNetV2 mean computed from the attempts"
    assert [float(v) for v in match.group(1).split(",")] == pytest.approx(list(bn.sort_index()), abs=0.005)
    assert float(match.group(2)) == pytest.approx(bn.mean(), abs=0.005)
    printed = re.search(r"ND attempt 2 \([\d.]+\) average ([\d.]+)", README)
    assert printed and float(printed.group(1)) == pytest.approx((bn[1] + bn[2] + nd[2]) / 3, abs=0.005)


@pytest.mark.parametrize("line, message", [("cifar100,resnet18,BN,20,4,no such attempt", "lacks"),
                                           ("cifar10,vgg16,BN,1,1,", "reason")])
def test_a_bad_flag_is_an_error(tmp_path, monkeypatch, line, message):
    """A flag on a missing attempt, or one without a reason, must not pass unnoticed."""
    for name in ("re_table1_attempts.csv", "reproduction_suspect_rows.csv"):
        shutil.copy(published.DATA_DIR / name, tmp_path / name)
    with open(tmp_path / "reproduction_suspect_rows.csv", "a", encoding="utf-8") as f:
        f.write(line + "\n")
    monkeypatch.setattr(published, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match=message):
        published.reproduction_table1()
