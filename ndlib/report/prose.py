"""Generated discussion: Markdown sentences computed from the report's frames, so that the
chapters' text stays true as records arrive -- ND against BN per cell, the one-epoch
discussion, the EfficientNet variants, the equal-cost verdicts and the ND first-layer settings
in words."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

from ndlib import models
from ndlib.report.chosen_cells import EFFICIENTNET_VARIANTS, EQUAL_COST_CELLS
from ndlib.report.commands import commands_markdown
from ndlib.report.constants import COMPARED_NORMS, DATASET_TITLES, NUM_CLASSES
from ndlib.report.frames import is_missing, require_columns
from ndlib.report.stats import compare_difference, format_mean_std, judge_difference


def first_layer_descriptions(archs: Iterable[str]) -> dict[str, str]:
    """The ND first-layer settings of each architecture, in words, from the model registry
    (``ndlib.models``), e.g. ``"a deconvolution with 15 Newton-Schulz iterations and statistics
    frozen after 100 training iterations"``."""
    out = {}
    for arch in archs:
        settings = models.get_spec(arch).first_layer
        if not settings:
            out[arch] = "an ordinary deconvolution layer (no special settings)"
            continue
        text = f"a deconvolution with {settings.get('n_iter')} Newton-Schulz iterations"
        if settings.get("freeze"):
            text += f" and statistics frozen after {settings.get('freeze_iter')} training iterations"
        out[arch] = text
    return out


def _cell_of(frame: pd.DataFrame, **keys: object) -> pd.Series | None:
    hit = frame
    for name, value in keys.items():
        hit = hit[hit[name] == value]
    return None if hit.empty else hit.iloc[0]


def _mean_text(row: pd.Series | None) -> str:
    if row is None or row["ours_n"] == 0:
        return "not run"
    return format_mean_std(row["ours_test_mean"], row["ours_test_std"], int(row["ours_n"]))


def _compare_rows(a: pd.Series, b: pd.Series, k: float) -> dict[str, object]:
    return compare_difference(a["ours_test_mean"], a["ours_test_std"], a["ours_n"],
                              b["ours_test_mean"], b["ours_test_std"], b["ours_n"], k)


def efficientnet_sentences(variants: pd.DataFrame, k: float = 2.0) -> list[str]:
    """One Markdown paragraph per dataset of an :func:`efficientnet_variants` frame: does
    deconvolving inside the depthwise and squeeze-excitation blocks (the every-block
    variant) help or hurt, against the paper's ND network and against BN -- or which runs
    are still missing, with their commands."""
    bn_label, paper_label, every_label = (label for label, _, _ in EFFICIENTNET_VARIANTS)
    paragraphs = []
    for dataset, part in variants.groupby("dataset", sort=False):
        title = DATASET_TITLES.get(dataset, dataset)
        bn, paper_nd, every = (_cell_of(part, label=label)
                               for label in (bn_label, paper_label, every_label))
        epochs = int(part["epochs"].iloc[0])
        budget = f"{epochs} epoch{'s' if epochs > 1 else ''}"
        text = [f"**{title}, {budget}.** BN {_mean_text(bn)}; the paper's ND network "
                f"{_mean_text(paper_nd)}; ND in every block {_mean_text(every)} (test accuracy, %)."]
        if every is None or every["ours_n"] == 0:
            text.append("The every-block variant has not run yet: "
                        + commands_markdown(every["commands"] if every is not None else []) + ".")
        else:
            if paper_nd is not None and paper_nd["ours_n"] > 0:
                cmp = _compare_rows(every, paper_nd, k)
                if cmp["verdict"] == "within noise":
                    effect = ("makes no difference beyond the noise of our seeds")
                elif cmp["verdict"] == "beyond noise":
                    effect = "helps" if cmp["diff"] > 0 else "hurts"
                else:
                    effect = ("helped" if cmp["diff"] > 0 else "hurt") + " in these runs"
                text.append(f"Every-block ND minus the paper's ND network: {cmp['text']}; "
                            f"at {budget}, whitening inside the depthwise and SE blocks "
                            f"{effect}.")
            else:
                text.append("The paper's ND network has not run yet, so the two ND variants "
                            "cannot be compared.")
            if bn is not None and bn["ours_n"] > 0:
                text.append(f"Every-block ND minus BN: {_compare_rows(every, bn, k)['text']}.")
        if paper_nd is not None and paper_nd["ours_n"] > 0 and bn is not None and bn["ours_n"] > 0:
            text.append(f"The paper's ND network minus BN: {_compare_rows(paper_nd, bn, k)['text']} "
                        f"(the paper: {paper_nd['paper_test'] - bn['paper_test']:+.2f}).")
        paragraphs.append(" ".join(text))
    return paragraphs


def equal_cost_verdicts(equal: pd.DataFrame, k: float = 2.0) -> pd.DataFrame:
    """Per architecture of an :func:`equal_cost` frame: ND's one-epoch lead over BN at equal
    epochs (``lead_equal_epochs``) and over BN at 2 epochs (``lead_equal_cost``), with their
    standard errors and verdicts (:func:`compare_difference`), ``survives`` (True / False /
    ``<NA>`` while a side is missing; with one seed on a side it is the sign of the single
    difference, and ``text`` says so) and ``text``, a Markdown sentence that also lists the
    commands of missing runs."""
    nd_label, bn1_label, bn2_label = (label for label, _, _ in EQUAL_COST_CELLS)
    rows = []
    for (dataset, arch), part in equal.groupby(["dataset", "arch"], sort=False):
        nd, bn1, bn2 = (_cell_of(part, label=label) for label in (nd_label, bn1_label, bn2_label))
        epochs_cmp, cost_cmp = _compare_rows(nd, bn1, k), _compare_rows(nd, bn2, k)
        name = f"{DATASET_TITLES.get(dataset, dataset)} {part['paper_name'].iloc[0]}"
        missing = [row for row in (nd, bn1, bn2) if row["ours_n"] == 0]
        if cost_cmp["verdict"] == "not run":
            survives = pd.NA
            text = (f"**{name}**: not known yet; missing "
                    + " and ".join(f"{row['label']} ({commands_markdown(row['commands'])})"
                                   for row in (nd, bn2) if row["ours_n"] == 0) + ".")
        else:
            if cost_cmp["verdict"] == "within noise":
                survives = pd.NA
                verdict = ("the difference is within the noise of our seeds, so at about equal "
                           "compute neither is shown to be ahead")
            else:
                survives = bool(cost_cmp["diff"] > 0)
                verdict = ("ND at one epoch is ahead of BN at two epochs" if survives else
                           "BN at two epochs is ahead of ND at one epoch")
                verdict += (" in these single runs" if cost_cmp["verdict"] == "no noise estimate"
                            else "") + ", at about equal compute"
            text = (f"**{name}**: ND at 1 epoch {_mean_text(nd)} against BN at 2 epochs "
                    f"{_mean_text(bn2)}: {cost_cmp['text']}; {verdict}.")
            if epochs_cmp["verdict"] != "not run":
                text += (f" At equal epochs, ND minus BN at 1 epoch ({_mean_text(bn1)}): "
                         f"{epochs_cmp['text']}.")
            if missing:
                text += " Still missing: " + ", ".join(row["label"] for row in missing) + "."
        rows.append({"dataset": dataset, "arch": arch,
                     "nd_e1": nd["ours_test_mean"], "bn_e1": bn1["ours_test_mean"],
                     "bn_e2": bn2["ours_test_mean"],
                     "lead_equal_epochs": epochs_cmp["diff"], "lead_equal_epochs_se": epochs_cmp["se"],
                     "lead_equal_cost": cost_cmp["diff"], "lead_equal_cost_se": cost_cmp["se"],
                     "verdict": cost_cmp["verdict"], "survives": survives, "text": text})
    columns = ["dataset", "arch", "nd_e1", "bn_e1", "bn_e2", "lead_equal_epochs",
               "lead_equal_epochs_se", "lead_equal_cost", "lead_equal_cost_se", "verdict",
               "survives", "text"]
    out = pd.DataFrame(rows, columns=columns)
    out["survives"] = out["survives"].astype("boolean")
    return out


def gain_sentences(gains: pd.DataFrame, k: float = 2.0) -> list[str]:
    """One sentence per cell of an :func:`nd_vs_bn` frame that has runs of ours on both sides:
    ND minus BN in our runs, with its standard error and whether it lies beyond ``k`` of them,
    beside the paper's gain, e.g. ``"CIFAR-10 VGG-16, 1 epoch (BN n=2, ND n=2): ND − BN +63.08
    points (standard error 0.26: beyond 2 standard errors); the paper +60.06."``  The
    reproduction's gain is left out: at 20 and 100 epochs its values are training accuracies."""
    require_columns(gains, ["dataset", "arch", "epochs", "paper_gain", "ours_gain",
                             "ours_gain_se", "ours_n_bn", "ours_n_nd"], "the ND - BN frame")
    both = gains[(gains["ours_n_bn"] > 0) & (gains["ours_n_nd"] > 0)]
    lines = []
    for _, row in both.iterrows():
        arch = row["paper_name"] if "paper_name" in row and not is_missing(row["paper_name"]) else row["arch"]
        epochs = int(row["epochs"])
        paper = "" if is_missing(row["paper_gain"]) else f"; the paper {row['paper_gain']:+.2f}"
        lines.append(f"{DATASET_TITLES.get(row['dataset'], row['dataset'])} {arch}, {epochs} "
                     f"epoch{'s' if epochs > 1 else ''} (BN n={int(row['ours_n_bn'])}, ND "
                     f"n={int(row['ours_n_nd'])}): ND − BN "
                     f"{judge_difference(row['ours_gain'], row['ours_gain_se'], k)['text']}{paper}.")
    return lines


def _sum_sentence(line: str) -> str:
    """An "In sum: ..." sentence of a section, standing on its own (for ``"summary"``)."""
    rest = line.removeprefix("In sum: ")
    return rest[:1].upper() + rest[1:]


def _cell_name(row: pd.Series) -> str:
    """E.g. ``"CIFAR-10 VGG-16"``: the dataset's title and the paper's name of the architecture."""
    return f"{DATASET_TITLES.get(row['dataset'], row['dataset'])} {row['paper_name']}"


def one_epoch_discussion(agreement: pd.DataFrame, gains: pd.DataFrame, gap_threshold: float = 10.0,
                         k: float = 2.0, min_seeds: int = 3,
                         first_layers: Mapping[str, str] | None = None,
                         near_chance: float = 2.0) -> dict[str, list[str]]:
    """The one-epoch discussion, generated from the frames so that it stays true as records
    arrive: Markdown bullets per section.

    ``agreement`` is :func:`agreement_with_paper` (one or both datasets, one budget),
    ``gains`` :func:`nd_vs_bn` rows of the same budget.  Sections:

    * ``"claims"``: per architecture we ran on both sides, ND minus BN (ours, the paper's,
      the reproduction's) and how many of those cells have ND ahead;
    * ``"paper_values"``: our cells against the paper's values, with the prediction-interval
      test for cells of at least ``min_seeds`` seeds (see :func:`agreement_with_paper`; its
      ``ours_band``);
    * ``"gaps"``: cells where the reproduction and the paper differ by at least
      ``gap_threshold`` points, with ours (or "not run yet") and which one ours is closer to;
    * ``"summary"``: the "In sum" sentence of each of the sections above that has one, without
      that prefix (for a summary elsewhere, e.g. the conclusions);
    * ``"explanations"``: measured quantities that bear on the gaps (the spread of the
      reproduction's attempts and of our seeds, our training accuracy over the epoch against
      our test accuracy after it, our cells whose test accuracy stays below ``near_chance``
      times chance, with their test loss against ``ln K``) and, for the architectures of the
      gaps, their ND first-layer settings from ``first_layers`` (arch -> description), when
      given.
    """
    agreement, gains = agreement.reset_index(drop=True), gains.reset_index(drop=True)
    ran = agreement[agreement["ours_n"] > 0]
    gaps = agreement[agreement["repro_minus_paper"].abs() >= gap_threshold]
    sections = {"claims": _claims_section(gains, k), "paper_values": _paper_values_section(ran, min_seeds),
                "gaps": _gaps_section(gaps, gap_threshold)}
    out = {name: lines for name, (lines, _) in sections.items()}
    out["summary"] = [_sum_sentence(line) for _, line in sections.values() if line is not None]
    out["explanations"] = (_scatter_sentences(agreement) + _train_vs_test_sentences(agreement)
                           + _near_chance_sentences(ran, near_chance) + _first_layer_sentences(gaps, first_layers))
    return out


def _claims_section(gains: pd.DataFrame, k: float) -> tuple[list[str], str | None]:
    """The ``"claims"`` bullets of :func:`one_epoch_discussion` (ND > BN per architecture) and
    their "In sum" line (None without a cell run on both sides)."""
    lines = []
    both = gains[(gains["ours_n_bn"] > 0) & (gains["ours_n_nd"] > 0)]
    for _, row in both.iterrows():
        ours = judge_difference(row["ours_gain"], row["ours_gain_se"], k)["text"]
        lines.append(f"{_cell_name(row)}: ND − BN {ours} in our runs (BN n={int(row['ours_n_bn'])}, "
                     f"ND n={int(row['ours_n_nd'])}); the paper {row['paper_gain']:+.2f}, "
                     f"the reproduction {row['repro_gain']:+.2f}.")
    if both.empty:
        lines.append(f"None of the paper's {len(gains)} one-budget cells has runs of ours "
                     "on both sides yet, so we cannot test ND > BN on any architecture.")
        return lines, None
    ahead = int((both["ours_gain"] > 0).sum())
    paper_ahead = int((both["paper_gain"] > 0).sum())
    missing = len(gains) - len(both)
    coverage = (f"every one of the paper's {len(gains)} cells at this budget is run on both sides"
                if missing == 0 else
                f"{missing} of the paper's {len(gains)} cells at this budget "
                f"{'is' if missing == 1 else 'are'} not run on both sides yet")
    lines.append(f"In sum: ND is ahead of BN in {ahead} of the {len(both)} "
                 f"architecture cells we have run on both sides (the paper: in "
                 f"{paper_ahead} of those {len(both)}); {coverage}.")
    return lines, lines[-1]


def _paper_values_section(ran: pd.DataFrame, min_seeds: int) -> tuple[list[str], str | None]:
    """The ``"paper_values"`` bullets of :func:`one_epoch_discussion` (our cells ``ran`` against
    the paper's values) and their "In sum" line (None without a cell of ``min_seeds`` seeds)."""
    lines, summary = [], None
    tested = ran[ran["ours_n"] >= min_seeds]
    for _, row in tested.iterrows():
        where = "outside" if bool(row["ours_outside"]) else "inside"
        lines.append(
            f"{_cell_name(row)} {row['norm'].upper()}: ours {_mean_text(row)}, the paper "
            f"{row['paper_test']:.2f} ({row['ours_minus_paper']:+.2f}): the paper's value lies "
            f"{where} the prediction interval of our seeds (mean ± {row['ours_band']:.2f}).")
    if not tested.empty:
        n_out = int(tested["ours_outside"].astype(bool).sum())
        summary = (f"In sum: {n_out} of the {len(tested)} cells with at least "
                   f"{min_seeds} seeds put the paper's value outside the "
                   f"prediction interval of our seeds.")
        lines.append(summary)
    untested = ran[ran["ours_n"] < min_seeds]
    if not untested.empty:
        listed = "; ".join(f"{_cell_name(row)} {row['norm'].upper()} {row['ours_minus_paper']:+.2f} "
                           f"(n={int(row['ours_n'])})" for _, row in untested.iterrows())
        lines.append(f"Cells with fewer than {min_seeds} seeds are not tested; our "
                     f"mean minus the paper's value there: {listed}.")
    if ran.empty:
        lines.append("We have no run at this budget yet.")
    return lines, summary


def _gaps_section(gaps: pd.DataFrame, gap_threshold: float) -> tuple[list[str], str | None]:
    """The ``"gaps"`` bullets of :func:`one_epoch_discussion` (the cells ``gaps`` where the
    reproduction and the paper disagree, with ours) and their "In sum" line (None while we
    have run none of them)."""
    lines = []
    for _, row in gaps.iterrows():
        head = (f"{_cell_name(row)} {row['norm'].upper()}: the paper {row['paper_test']:.2f}, the "
                f"reproduction {row['repro_mean']:.2f} ({row['repro_minus_paper']:+.2f})")
        if row["ours_n"] == 0:
            lines.append(f"{head}; ours: not run yet.")
            continue
        closer = ("equally far from both" if row["closer_to"] == "equally close"
                  else f"closer to the {row['closer_to']}")
        lines.append(f"{head}; ours {_mean_text(row)}, {abs(row['ours_minus_paper']):.2f} "
                     f"points from the paper and {abs(row['ours_minus_repro']):.2f} from "
                     f"the reproduction: {closer}.")
    if gaps.empty:
        lines.append(f"No cell at this budget has the reproduction and the paper "
                     f"{gap_threshold:g} or more points apart.")
        return lines, None
    run = gaps[gaps["ours_n"] > 0]
    counts = run["closer_to"].value_counts()
    lines.append(
        f"In sum: {len(gaps)} cells differ by {gap_threshold:g} points or more; we have run "
        f"{len(run)} of them, closer to the paper in {int(counts.get('paper', 0))} and to the "
        f"reproduction in {int(counts.get('reproduction', 0))}.")
    if not len(run):
        return lines, None
    summary = lines[-1]
    # Split by method: whether one side's baseline, not the other's, carries the dispute.
    parts = []
    for norm in COMPARED_NORMS:
        side = run[run["norm"] == norm]["closer_to"].value_counts()
        if side.sum():
            parts.append(f"{norm.upper()}, {int(side.sum())} cell{'s' if side.sum() != 1 else ''} "
                         f"run: closer to the paper in {int(side.get('paper', 0))} and to the "
                         f"reproduction in {int(side.get('reproduction', 0))}")
    lines.append("By method: " + "; ".join(parts) + ".")
    return lines, summary


def _scatter_sentences(agreement: pd.DataFrame) -> list[str]:
    """How much one cell scatters, per norm: the widest standard deviation of the reproduction's
    attempts and of our seeds, with the median over cells."""
    lines = []
    for norm in COMPARED_NORMS:
        for who, column, n_column in (("The reproduction's attempts", "repro_std", "repro_n"),
                                      ("Our seeds", "ours_test_std", "ours_n")):
            part = agreement[(agreement["norm"] == norm) & agreement[column].notna()]
            if part.empty:
                continue
            widest = part.loc[part[column].idxmax()]
            median = (f"; the median over {len(part)} such cells is {part[column].median():.2f}"
                      if len(part) > 1 else "")
            lines.append(
                f"{who} of one {norm.upper()} cell scatter by up to {widest[column]:.2f} points "
                f"(standard deviation; {_cell_name(widest)}, n={int(widest[n_column])}){median}.")
    return lines


def _train_vs_test_sentences(agreement: pd.DataFrame) -> list[str]:
    """Our running training accuracy over the epoch against the test accuracy after it, and how
    often the reproduction's value is below the paper's: one sentence, or none without a run."""
    measured = agreement[(agreement["ours_n"] > 0) & agreement["ours_train_mean"].notna()]
    if measured.empty:
        return []
    lead = measured["ours_test_mean"] - measured["ours_train_mean"]
    below_paper = int((agreement["repro_minus_paper"] < 0).sum())
    return [f"In {int((lead > 0).sum())} of our {len(measured)} cells the running training "
            f"accuracy over the epoch is below the test accuracy measured after it (test minus "
            f"training: {lead.mean():+.2f} points on average, from {lead.min():+.2f} to "
            f"{lead.max():+.2f}). Of the paper's {len(agreement)} cells at this budget, the "
            f"reproduction's value is below the paper's in {below_paper}."]


def _first_layer_sentences(gaps: pd.DataFrame, first_layers: Mapping[str, str] | None) -> list[str]:
    """What the ND first layers say about the ``gaps``: nothing for BN's, and the settings
    (``first_layers``: arch -> description) of the architectures with an ND gap."""
    lines = []
    gap_norms = set(gaps["norm"])
    if "bn" in gap_norms:
        lines.append("A BN model has no deconvolution layer, so the ND settings "
                     "(first layer included) do not bear on the BN gaps.")
    if first_layers and "nd" in gap_norms:
        nd_gaps = gaps[gaps["norm"] == "nd"].drop_duplicates("arch")
        by_setting: dict[str, list[str]] = {}
        for _, row in nd_gaps.iterrows():
            if row["arch"] in first_layers:
                by_setting.setdefault(first_layers[row["arch"]], []).append(row["paper_name"])
        if by_setting:
            lines.append(
                "The ND first layers of the architectures with an ND gap: " + "; ".join(
                    f"{setting}: {', '.join(names)}" for setting, names in by_setting.items()) + ".")
    return lines


def _near_chance_sentences(ran: pd.DataFrame, multiple: float) -> list[str]:
    """The cells of ``ran`` (agreement rows with runs of ours) whose mean test accuracy is
    below ``multiple`` times chance (``100 / K`` %), each with its mean test loss against
    ``ln K``, the test cross-entropy of a uniform guess; one sentence, or none without a
    dataset of known ``K``."""
    known = ran[ran["dataset"].isin(list(NUM_CLASSES))]
    if known.empty:
        return []
    chance = known["dataset"].map(lambda d: 100.0 / NUM_CLASSES[d])
    limits = ", ".join(f"{multiple * 100.0 / NUM_CLASSES[d]:g} % on {DATASET_TITLES.get(d, d)}"
                       for d in dict.fromkeys(known["dataset"]))
    low = known[known["ours_test_mean"] < multiple * chance]
    single = _single_seeds_near_chance(known[known["ours_test_mean"] >= multiple * chance], multiple)
    if low.empty:
        return [f"None of our cells ends the epoch below {multiple:g} times chance ({limits})."] + single
    items = []
    for _, row in low.iterrows():
        loss_text = _loss_against_uniform(row.get("ours_test_loss_mean"), NUM_CLASSES[row["dataset"]])
        published_text = "".join(f", the {who} {row[column]:.2f}" for who, column in
                                 (("paper", "paper_test"), ("reproduction", "repro_mean"))
                                 if not is_missing(row[column]))
        items.append(f"{_cell_name(row)} {row['norm'].upper()}: ours {_mean_text(row)}, {loss_text}"
                     f"{published_text}")
    return [f"Our cells that end the epoch below {multiple:g} times chance ({limits}), with "
            f"their mean test loss against ln K, the test cross-entropy of a uniform guess over "
            f"the K classes: " + "; ".join(items) + ". A mean test loss near or above ln K means "
            "that after the epoch the network gives the true class no more log-probability, on "
            "average, than a uniform guess does: it had barely begun to learn."] + single


def _loss_against_uniform(loss: float, classes: int) -> str:
    """``loss`` (a test cross-entropy) beside ``ln K``, that of a uniform guess over ``K`` classes."""
    if is_missing(loss):
        return "test loss not recorded"
    uniform = math.log(classes)
    return f"test loss {loss:.2f} ({'above' if loss > uniform else 'below'} ln {classes} = {uniform:.2f})"


def _single_seeds_near_chance(cells: pd.DataFrame, multiple: float) -> list[str]:
    """The seeds below ``multiple`` times chance in ``cells`` whose mean is above it (their
    ``ours_seed_results``), each with its test loss and the cell's other seeds: one sentence,
    or none.  A mean hides such a seed, and it widens its cell's standard deviation."""
    items = []
    for _, row in cells.iterrows():
        results = row.get("ours_seed_results")
        if not isinstance(results, tuple):
            continue
        classes = NUM_CLASSES[row["dataset"]]
        for seed, acc, loss in results:
            if acc >= multiple * 100.0 / classes:
                continue
            loss_text = _loss_against_uniform(loss, classes)
            others = ", ".join(f"{a:.2f}" for s, a, _ in results if s != seed)
            items.append(f"{_cell_name(row)} {row['norm'].upper()}, seed {seed}: {acc:.2f} %, "
                         f"{loss_text} (the cell's other seeds: {others or 'none'})")
    if not items:
        return []
    return [f"Single seeds below {multiple:g} times chance in cells whose mean is above it: "
            + "; ".join(items) + ". Such a seed had barely begun to learn after the epoch; the "
            "cell's mean hides it, and its standard deviation is wide because of it."]
