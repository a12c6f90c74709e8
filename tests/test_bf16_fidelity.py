"""ndlib.fidelity: the bf16 fidelity test's table and verdict, on run frames built here and a
campaign file written here (never results/), and the project's own test file."""
from __future__ import annotations

import pandas as pd
import pytest

from ndlib import fidelity, report
from ndlib.config import TrainConfig, parse_run_id

CAMPAIGN = """name = "fid"
[settings]
amp = true
[[stage]]
datasets = ["cifar10"]
archs = ["vgg16"]
norms = ["bn", "nd"]
epochs = [1]
seeds = [0]
"""


def _row(run_id, status="completed", test=None, **extra):
    row = {name: None for name in report.RUN_COLUMNS}
    parts = parse_run_id(run_id)
    row.update({"run_id": run_id, "status": status, "table": 1, "dataset": parts.dataset, "arch": parts.arch,
                "norm": parts.norm, "epochs": parts.epochs, "seed": parts.seed, "synthetic": False, "test_acc": test,
                "machine_type": "amx", **extra})
    return row


def _runs(bn_bf16, nd_bf16, nd_status="completed", extra=()):
    bf16 = report.BF16_OPTIONS
    rows = [_row(f"t1-cifar10-vgg16-bn-e1-s{s}", test=t) for s, t in enumerate([10.0, 11.0, 12.0])]
    rows += [_row(f"t1-cifar10-vgg16-nd-e1-s{s}", test=t) for s, t in enumerate([74.0, 74.5, 73.5])]
    rows += [_row(f"t1-cifar10-vgg16-bn-e1-s0-{bf16}", test=bn_bf16, amp=True),
             _row(f"t1-cifar10-vgg16-nd-e1-s0-{bf16}", status=nd_status, test=nd_bf16, amp=True)]
    return pd.DataFrame(rows + list(extra), columns=report.RUN_COLUMNS)


@pytest.fixture
def campaign(tmp_path):
    path = tmp_path / "fid.toml"
    path.write_text(CAMPAIGN)
    return path


def test_the_interval_is_the_prediction_interval_of_the_float32_seeds(campaign):
    table = fidelity.fidelity_table(_runs(11.5, 74.2), campaign).set_index("norm")
    k = report.prediction_factor(3, 0.95)  # about 4.97 for three seeds
    assert table.loc["bn", "fp32_seeds"] == 3 and table.loc["bn", "fp32_mean"] == pytest.approx(11.0)
    assert table.loc["bn", "low"] == pytest.approx(11.0 - k * 1.0)
    assert table.loc["nd", "high"] == pytest.approx(74.0 + k * 0.5)
    assert table["inside"].tolist() == [True, True]
    accepted, text = fidelity.fidelity_verdict(table)
    assert accepted is True and text.startswith("**Verdict: bfloat16 accepted.** All 2")


def test_one_run_outside_its_interval_rejects_bf16(campaign):
    table = fidelity.fidelity_table(_runs(11.5, 70.0), campaign)  # ND interval: 74 +- 2.48
    accepted, text = fidelity.fidelity_verdict(table)
    assert accepted is False and "vgg16 ND (cifar10: 70.00 %" in text and text.startswith("**Verdict: float32.**")


def test_a_diverged_bf16_run_fails_and_an_unfinished_one_leaves_the_verdict_open(campaign):
    accepted, text = fidelity.fidelity_verdict(fidelity.fidelity_table(_runs(11.5, None, "diverged"), campaign))
    assert accepted is False and "diverged" in text
    table = fidelity.fidelity_table(_runs(11.5, None, "running"), campaign)
    assert table["inside"].isna().tolist() == [False, True]
    accepted, text = fidelity.fidelity_verdict(table)
    assert accepted is None and "1 of 2 bf16 fidelity runs have finished, all inside" in text


def test_only_completed_real_float32_runs_with_the_papers_settings_count_as_seeds(campaign):
    noise = [_row("t1-cifar10-vgg16-nd-e1-s3", test=10.0, synthetic=True),
             _row("t1-cifar10-vgg16-nd-e1-s4", status="running", test=10.0),
             _row("t1-cifar10-vgg16-nd-e1-s0-o1a2b3c4d", test=10.0)]
    runs = _runs(11.5, 74.2, extra=noise)
    table = fidelity.fidelity_table(runs, campaign).set_index("norm")
    assert table.loc["nd", "fp32_seeds"] == 3 and table.loc["nd", "fp32_mean"] == pytest.approx(74.0)


def test_a_cell_with_fewer_than_three_seeds_cannot_judge(campaign):
    runs = _runs(11.5, 74.2)
    runs = runs[runs["run_id"] != "t1-cifar10-vgg16-nd-e1-s2"]
    table = fidelity.fidelity_table(runs, campaign).set_index("norm")
    assert pd.isna(table.loc["nd", "inside"]) and fidelity.fidelity_verdict(table.reset_index())[0] is None


def test_the_projects_fidelity_campaign_is_bf16_one_epoch_and_otherwise_the_papers_settings():
    from ndlib.campaign import load_campaign

    runs = load_campaign(fidelity.fidelity_campaign()).runs
    assert {(c.dataset, c.arch, c.norm) for c in runs} == {
        (d, a, n) for d, a in (("cifar10", "vgg16"), ("cifar10", "resnet18"), ("cifar100", "efficientnetb0"))
        for n in ("bn", "nd")}
    for config in runs:
        assert config.epochs == 1 and config.seed == 0
        assert config.run_id == TrainConfig(arch=config.arch, norm=config.norm, dataset=config.dataset, epochs=1,
                                            amp=True).run_id
        assert report.run_options(config.run_id) == report.BF16_OPTIONS


def test_a_run_that_uses_a_tested_setting_waits_until_its_test_accepts_it(tmp_path, monkeypatch):
    """``waiting_for``: bf16 runs wait for the bf16 test, ND runs with the covariance backward in bf16
    for theirs too; the test's own runs, float32 runs and synthetic runs never wait."""
    accepted = {"bf16": True, "covariance-grad": None}
    monkeypatch.setattr(fidelity, "fidelity_verdict", lambda table, level=0.95, test="bf16": (accepted[test], ""))
    monkeypatch.setattr(fidelity, "fidelity_table", lambda runs, campaign: pd.DataFrame())
    runs = pd.DataFrame(columns=report.RUN_COLUMNS)
    low = TrainConfig(arch="resnet18", norm="nd", dataset="cifar100", epochs=20, amp=True, channels_last=True,
                      deconv_covariance_grad="input")
    own = TrainConfig(arch="resnet18", norm="nd", dataset="cifar100", epochs=1, amp=True, channels_last=True,
                      deconv_covariance_grad="input")  # listed in campaigns/covariance-grad-fidelity.toml
    bn = TrainConfig(arch="resnet18", norm="bn", dataset="cifar100", epochs=20, amp=True, channels_last=True)
    assert fidelity.waiting_for(low, runs).name == "covariance-grad"
    assert fidelity.waiting_for(own, runs) is None and fidelity.waiting_for(bn, runs) is None
    assert fidelity.waiting_for(TrainConfig(arch="resnet18", epochs=20), runs) is None
    accepted["bf16"] = None
    assert fidelity.waiting_for(bn, runs).name == "bf16" and fidelity.waiting_for(own, runs).name == "bf16"
    assert fidelity.waiting_for(TrainConfig(amp=True, synthetic=True), runs) is None
    accepted.update({"bf16": True, "covariance-grad": True})
    assert fidelity.waiting_for(low, runs) is None


def test_the_verdict_of_another_setting_names_it(campaign):
    subject = fidelity.FIDELITY_TESTS["covariance-grad"].subject
    accepted, text = fidelity.fidelity_verdict(fidelity.fidelity_table(_runs(11.5, 74.2), campaign),
                                               test="covariance-grad")
    assert accepted is True and text.startswith("**Verdict: accepted.**") and subject in text
    accepted, text = fidelity.fidelity_verdict(fidelity.fidelity_table(_runs(11.5, 70.0), campaign),
                                               test="covariance-grad")
    assert accepted is False and "vgg16 ND (cifar10: 70.00 %" in text and "wait" in text


def test_the_projects_covariance_grad_test_runs_nd_in_the_stage_2_execution():
    from ndlib.campaign import load_campaign

    runs = load_campaign(fidelity.fidelity_campaign("covariance-grad")).runs
    assert runs and all(c.norm == "nd" and c.epochs == 1 and c.seed == 0 and c.amp and c.channels_last
                        and c.deconv_covariance_grad == "input" for c in runs)
