"""Scoring: Table 3 counts, intervals and agreement against hand-computed values."""

import csv
import io
import itertools
import math

import numpy as np
import pytest

from ratgan.turing.stats import (
    association_p_value,
    answers_csv,
    clustered_proportion_ci,
    fleiss_kappa,
    format_table3,
    proportion_ci,
    scan_permutation_p_value,
    summarise,
    table3_csv,
    table3_rows,
)
from ratgan.turing.study import Rater, Record


def test_fleiss_kappa_of_the_textbook_example():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa 0.210.
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(counts) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa([[2, 0], [0, 2], [2, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[2, 0], [2, 0]]))  # one category only: undefined
    assert math.isnan(fleiss_kappa(np.zeros((0, 2))))
    assert math.isnan(fleiss_kappa([[1, 0], [0, 1]]))  # a single rater


def test_wilson_interval():
    low, high = proportion_ci(7, 10)
    assert (low, high) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert all(math.isnan(v) for v in proportion_ci(0, 0))


def _record(rater, position, scan_id, source, answer):
    return Record(rater, position, scan_id, source, f"/d/{scan_id}.nii.gz", answer, None, None)


def test_table3_counts_per_rater_and_pooled():
    raters = [Rater(1, "r1", "High", "t1"), Rater(2, "r2", "Low", "t2")]
    key = {1: "real", 2: "real", 3: "A", 4: "A", 5: "B"}
    answers = {
        "r1": {1: "real", 2: "synthetic", 3: "synthetic", 4: "real", 5: "synthetic"},
        "r2": {1: "synthetic", 2: "synthetic", 3: "real", 4: "real", 5: None},
    }
    records = [
        _record(r, pos, scan, key[scan], answers[r][scan])
        for r in ("r1", "r2")
        for pos, scan in enumerate(key, start=1)
    ]
    summary = summarise(records, raters, ["A", "B"])
    r1, r2 = summary.raters
    assert (r1.misclassified, r1.misclassified_real, r1.right, r1.answered) == (
        {"A": 1, "B": 0},
        1,
        3,
        5,
    )
    assert (r2.misclassified, r2.misclassified_real, r2.right, r2.answered) == (
        {"A": 2, "B": 0},
        2,
        0,
        4,
    )
    assert summary.pooled.right == 3 and summary.pooled.answered == 9
    assert summary.judged_real("A")[:2] == (3, 4)
    assert r1.sensitivity == pytest.approx(2 / 3) and r1.specificity == pytest.approx(1 / 2)
    # Scans 1-4 were answered by both raters; they agree on scans 2 and 4 only.
    assert summary.agreement_items == 4
    assert summary.observed_agreement == pytest.approx(0.5)
    assert summary.fleiss_kappa == pytest.approx(fleiss_kappa([[1, 1], [2, 0], [1, 1], [0, 2]]))

    rows = table3_rows(summary)
    assert rows[0] == ["", "r1", "r2"]
    assert rows[1:] == [
        ["Expertise", "High", "Low"],
        ["A", "1", "2"],
        ["B", "0", "0"],
        ["Real", "1", "2"],
        ["Right answers", "3", "0"],
        ["Answered", "5/5", "4/5"],
    ]
    text = format_table3(summary)
    assert "Right answers" in text and "Fleiss' kappa" in text

    table = list(csv.DictReader(io.StringIO(table3_csv(summary))))
    assert [t["rater"] for t in table] == ["r1", "r2", "all raters"]
    assert table[0]["misclassified_A"] == "1" and table[1]["right_answers"] == "0"
    assert table[0]["accuracy"] == "0.6000"
    exported = list(csv.DictReader(io.StringIO(answers_csv(records))))
    assert len(exported) == 10 and exported[9]["answer"] == "" and exported[0]["correct"] == "1"


def test_clustered_interval_with_one_answer_per_scan_is_wilson():
    right = np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1])
    assert clustered_proportion_ci(right, np.ones(10)) == pytest.approx(proportion_ci(7, 10))


def test_clustered_interval_counts_raters_who_always_agree_once():
    # Four raters giving the same answer on every scan carry the information of one rater:
    # the design effect is 4 and the interval is Wilson's on the 10 scans, not on 40 answers.
    right = 4 * np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1])
    clustered = clustered_proportion_ci(right, np.full(10, 4))
    assert clustered == pytest.approx(proportion_ci(7, 10))
    low, high = proportion_ci(28, 40)
    assert clustered[1] - clustered[0] > 1.5 * (high - low)
    # every answer right: no variance to estimate, each scan counts once
    assert clustered_proportion_ci(np.full(10, 4), np.full(10, 4)) == pytest.approx(
        proportion_ci(10, 10)
    )


def test_scan_permutation_p_value_matches_the_full_enumeration():
    said = np.array([3, 2, 4, 1, 0, 2, 1])  # 'synthetic' answers per scan, of 4
    answers = np.full(7, 4)
    truth = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)

    def stat(labels):
        return abs(
            said[labels].sum() / answers[labels].sum()
            - said[~labels].sum() / answers[~labels].sum()
        )

    observed = stat(truth)
    exact = np.mean(
        [
            stat(np.isin(np.arange(7), chosen)) >= observed - 1e-12
            for chosen in itertools.combinations(range(7), 3)
        ]
    )
    p = scan_permutation_p_value(said, answers, truth, seed=0, permutations=20_000)
    assert p == pytest.approx(exact, abs=0.01)
    assert math.isnan(scan_permutation_p_value(said, answers, np.ones(7, bool), seed=0))


def test_all_raters_row_keeps_its_level_when_raters_agree_on_scans():
    # Real and synthetic scans are indistinguishable, but each scan looks real or synthetic
    # to all four raters alike. Counting 4 x 30 answers as independent trials rejected this
    # null in 13 % of studies at the 5 % level; the scans as units keep it at or below 5 %.
    rng = np.random.default_rng(5)
    sources = ["real"] * 15 + ["A"] * 15
    raters = [Rater(i, f"r{i}", "", f"t{i}") for i in range(4)]
    rejected, covered = 0, 0
    studies = 150
    for _ in range(studies):
        looks_real = rng.beta(1.5, 1.5, len(sources))
        records = [
            _record(r.name, j + 1, j, s, "real" if rng.random() < looks_real[j] else "synthetic")
            for r in raters
            for j, s in enumerate(sources)
        ]
        pooled = summarise(records, raters, ["A"], seed=1).pooled
        rejected += pooled.p_value < 0.05
        low, high = pooled.accuracy_ci
        covered += low <= 0.5 <= high  # the expected accuracy of guessing
    assert rejected / studies <= 0.08
    assert covered / studies >= 0.90


def test_a_rater_who_gives_one_answer_throughout_has_p_1_not_na():
    """Fisher's test of a table with an empty answer column is 1 (scipy's own value); the
    permutation test over scans gives the same when every answer is the same; both stay NaN
    when one kind of scan was never shown."""
    from scipy.stats import fisher_exact

    for table in ([[6, 0], [4, 0]], [[0, 6], [0, 4]]):
        (tp, fn), (fp, tn) = table
        assert association_p_value(tp, fn, fp, tn) == fisher_exact(table).pvalue == 1.0
    assert math.isnan(association_p_value(6, 4, 0, 0))
    truth = np.array([1, 1, 1, 0, 0], dtype=bool)
    assert scan_permutation_p_value(np.full(5, 3), np.full(5, 3), truth, seed=0) == 1.0
    assert scan_permutation_p_value(np.zeros(5), np.full(5, 3), truth, seed=0) == 1.0


def test_fleiss_kappa_of_a_single_scan_is_undefined():
    # With one scan the chance agreement comes from that scan's own votes, so kappa is below 0
    # whatever the raters do (3 vs 1: P = 1/2, Pe = 5/8, kappa = -1/3): undefined, as the
    # docstring says ("fewer than two ... items"), shown as a dash rather than -0.333.
    assert math.isnan(fleiss_kappa([[3, 1]]))
    raters = [Rater(i, f"r{i}", "", f"t{i}") for i in range(1, 5)]
    records = [
        _record(f"r{i}", 1, 1, "real", "real" if i < 4 else "synthetic") for i in range(1, 5)
    ]
    summary = summarise(records, raters, ["A"])
    assert summary.agreement_items == 1 and math.isnan(summary.fleiss_kappa)
