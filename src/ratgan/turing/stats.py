"""Scoring of a visual Turing test: the paper's Table 3 per rater, accuracy with a confidence
interval, a test of whether answers depend on the truth, and agreement between raters.

The row for all raters together is not a bigger rater: several raters' answers on one scan are
not independent trials (raters agree on which scans look real), so its interval and p-value
treat each scan, with all its answers, as the unit (see PooledTally).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ratgan.seeds import derived_seed
from ratgan.turing.study import REAL, SYNTHETIC, Rater, Record

#: Confidence level of every interval shown.
CONFIDENCE = 0.95

#: Permutations behind the all-raters p-value: its Monte Carlo error near p = 0.05 is 0.002.
PERMUTATIONS = 10_000


def proportion_ci(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy); (nan, nan) without trials."""
    if trials == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def wilson_interval(
    proportion: float, n: float, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval of ``proportion`` observed on ``n`` trials, where ``n`` may be an
    effective (non-integer) number of trials; scipy's binomtest wants whole counts."""
    if n <= 0 or math.isnan(proportion):
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    denominator = 1 + z * z / n
    centre = (proportion + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_proportion_ci(
    successes: np.ndarray, trials: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval of a proportion pooled over clusters (scans, each with several raters' answers).

    The Wilson interval on the effective number of trials: all trials divided by the design
    effect, the ratio of the cluster-robust variance of the pooled proportion to the binomial
    one (Kish). The design effect is at least 1 (answers on one scan never count as more than
    independent ones); when every answer is the same the variance cannot be estimated and each
    scan counts as one trial. With one answer per scan this is the plain Wilson interval.
    """
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    total = float(trials.sum())
    if total == 0:
        return math.nan, math.nan
    p = float(successes.sum()) / total
    n_clusters = int(np.count_nonzero(trials))
    if p in (0.0, 1.0):
        return wilson_interval(p, n_clusters, confidence)
    # No G/(G - 1) small-sample factor: both variances are plug-in estimates with p estimated,
    # and their ratio is then exactly 1 for independent answers and exactly m for m raters who
    # always agree (the tests' known answers); the factor would inflate both by G/(G - 1).
    robust = float(np.sum((successes - p * trials) ** 2)) / total**2
    design_effect = max(1.0, robust / (p * (1 - p) / total))
    return wilson_interval(p, total / design_effect, confidence)


def scan_permutation_p_value(
    said_synthetic: np.ndarray,
    answers: np.ndarray,
    is_synthetic: np.ndarray,
    seed: int,
    permutations: int = PERMUTATIONS,
) -> float:
    """Two-sided permutation test that the answers do not depend on the truth, with scans as
    the unit: the real/synthetic labels are shuffled across scans, each scan keeping all its
    answers. The statistic is the difference between the share of *synthetic* answers on
    synthetic and on real scans. Exact in level whatever raters share, unlike a test on all
    answers as if independent. NaN without answers on both kinds of scan; 1 when every answer
    is the same (every permutation then gives the observed statistic, 0).
    """
    said = np.asarray(said_synthetic, dtype=float)
    n = np.asarray(answers, dtype=float)
    truth = np.asarray(is_synthetic, dtype=bool)
    keep = n > 0
    said, n, truth = said[keep], n[keep], truth[keep]
    if not (truth.any() and (~truth).any()):
        return math.nan
    if said.sum() in (0.0, n.sum()):
        return 1.0

    def statistic(labels: np.ndarray) -> np.ndarray:
        on_synthetic = (labels * said).sum(axis=-1) / (labels * n).sum(axis=-1)
        on_real = (~labels * said).sum(axis=-1) / (~labels * n).sum(axis=-1)
        return np.abs(on_synthetic - on_real)

    observed = statistic(truth)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(truth, (permutations, truth.size)), axis=1)
    beyond = int(np.count_nonzero(statistic(shuffled) >= observed - 1e-12))
    return (beyond + 1) / (permutations + 1)


def association_p_value(tp: int, fn: int, fp: int, tn: int) -> float:
    """Two-sided Fisher exact test that the answers are independent of the truth.

    Rows are the truth (synthetic, real), columns the answer (synthetic, real). A small value
    means the rater tells real from synthetic better (or worse) than guessing would. Unlike a
    test of accuracy against 50 %, it is not fooled by unequal numbers of real and synthetic
    scans or by a rater who favours one answer. NaN when no synthetic or no real scan was
    shown; 1 for a rater who gave one answer throughout (the answers cannot depend on the
    truth; scipy's and R's Fisher test agree).
    """
    if min(tp + fn, fp + tn) == 0:
        return math.nan
    from scipy.stats import fisher_exact

    return float(fisher_exact([[tp, fn], [fp, tn]]).pvalue)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories table of rating counts (same raters per item).

    Written here because no dependency of ratgan provides it (statsmodels does, but would be a
    large dependency for ten lines). NaN when undefined: fewer than two raters or items, or
    when every rating falls in one category. (With one item the chance agreement would come
    from that item's own ratings and kappa would be below 0 whatever the raters did.)
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] < 2:
        return math.nan
    per_item = counts.sum(axis=1)
    n = per_item[0]
    if n < 2 or not np.all(per_item == n):
        return math.nan
    p_category = counts.sum(axis=0) / counts.sum()
    p_item = (np.sum(counts * counts, axis=1) - n) / (n * (n - 1))
    p_bar, p_expected = p_item.mean(), float(np.sum(p_category**2))
    if math.isclose(p_expected, 1.0):
        return math.nan
    return float((p_bar - p_expected) / (1.0 - p_expected))


@dataclass
class Tally:
    """Answers of one rater (or all raters together) counted against the answer key."""

    name: str
    expertise: str = ""
    total: int = 0
    answered: int = 0
    misclassified: dict[str, int] = field(default_factory=dict)
    answered_per_model: dict[str, int] = field(default_factory=dict)
    misclassified_real: int = 0
    answered_real: int = 0

    @property
    def answered_synthetic(self) -> int:
        """Synthetic scans answered."""
        return sum(self.answered_per_model.values())

    @property
    def right(self) -> int:
        """Right answers (the paper's last row of Table 3)."""
        wrong = sum(self.misclassified.values()) + self.misclassified_real
        return self.answered - wrong

    @property
    def accuracy(self) -> float:
        """Right answers over answered scans."""
        return self.right / self.answered if self.answered else math.nan

    @property
    def accuracy_ci(self) -> tuple[float, float]:
        """Wilson interval of the accuracy."""
        return proportion_ci(self.right, self.answered)

    @property
    def sensitivity(self) -> float:
        """Fraction of synthetic scans recognised as synthetic."""
        n = self.answered_synthetic
        return (n - sum(self.misclassified.values())) / n if n else math.nan

    @property
    def specificity(self) -> float:
        """Fraction of real scans recognised as real."""
        n = self.answered_real
        return (n - self.misclassified_real) / n if n else math.nan

    #: the test behind p_value, as the tables name it
    p_test: str = field(default="Fisher", init=False)

    @property
    def p_value(self) -> float:
        """Fisher exact test of answer vs truth (see association_p_value)."""
        fooled = sum(self.misclassified.values())
        return association_p_value(
            self.answered_synthetic - fooled,
            fooled,
            self.misclassified_real,
            self.answered_real - self.misclassified_real,
        )

    def add(self, record: Record) -> None:
        """Count one item."""
        self.total += 1
        if record.answer is None:
            return
        self.answered += 1
        wrong = record.answer != record.truth
        if record.truth == REAL:
            self.answered_real += 1
            self.misclassified_real += wrong
        else:
            model = record.source
            self.answered_per_model[model] = self.answered_per_model.get(model, 0) + 1
            self.misclassified[model] = self.misclassified.get(model, 0) + wrong


@dataclass
class PooledTally(Tally):
    """All raters' answers together, with each scan's answers kept together for the interval
    and the p-value (see clustered_proportion_ci and scan_permutation_p_value); the counts are
    those of every answer, as in Table 3."""

    seed: int = 0
    p_test: str = field(default="permutation over scans", init=False)
    #: per scan: [source, right answers, answers, answers 'synthetic']
    per_scan: dict[int, list] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        """Count one item, and keep it with the other answers on its scan."""
        super().add(record)
        if record.answer is None:
            return
        scan = self.per_scan.setdefault(record.scan_id, [record.source, 0, 0, 0])
        scan[1] += record.answer == record.truth
        scan[2] += 1
        scan[3] += record.answer == SYNTHETIC

    def _column(self, index: int, source: str | None = None) -> np.ndarray:
        rows = [v for v in self.per_scan.values() if source is None or v[0] == source]
        return np.array([v[index] for v in rows], dtype=float)

    @property
    def accuracy_ci(self) -> tuple[float, float]:
        """Interval of the accuracy with scans as clusters of answers."""
        return clustered_proportion_ci(self._column(1), self._column(2))

    @property
    def p_value(self) -> float:
        """Permutation test over scans of answer vs truth."""
        return scan_permutation_p_value(
            self._column(3),
            self._column(2),
            np.array([v[0] != REAL for v in self.per_scan.values()], dtype=bool),
            seed=self.seed,
        )

    def fooling_ci(self, model: str) -> tuple[float, float]:
        """Interval of the share of ``model``'s scans judged real, scans as clusters."""
        judged_real = self._column(2, model) - self._column(3, model)
        return clustered_proportion_ci(judged_real, self._column(2, model))


@dataclass
class Summary:
    """Everything the admin page and the CSV exports show."""

    models: list[str]
    raters: list[Tally]
    pooled: PooledTally
    fleiss_kappa: float
    agreement_items: int
    observed_agreement: float

    def judged_real(self, model: str) -> tuple[int, int, tuple[float, float]]:
        """Over all raters: (answers 'real', answers, interval with scans as clusters) for one
        model's scans."""
        k = self.pooled.misclassified.get(model, 0)
        n = self.pooled.answered_per_model.get(model, 0)
        return k, n, self.pooled.fooling_ci(model)


def summarise(
    records: Sequence[Record], raters: Sequence[Rater], models: Sequence[str], seed: int = 0
) -> Summary:
    """Tally answers per rater and overall, and measure agreement on items all raters answered.
    ``seed`` (the study's) seeds the permutations of the all-raters p-value."""
    tallies = {r.name: Tally(r.name, r.expertise) for r in raters}
    pooled = PooledTally("all raters", seed=derived_seed(seed, 1))
    for model in models:
        for tally in [*tallies.values(), pooled]:
            tally.misclassified.setdefault(model, 0)
            tally.answered_per_model.setdefault(model, 0)
    votes: dict[int, list[str]] = {}
    for record in records:
        tallies[record.rater].add(record)
        pooled.add(record)
        if record.answer is not None:
            votes.setdefault(record.scan_id, []).append(record.answer)
    complete = [v for v in votes.values() if len(v) == len(raters)]
    counts = np.array([[v.count(SYNTHETIC), v.count(REAL)] for v in complete]).reshape(-1, 2)
    n = len(raters)
    if len(complete) and n >= 2:
        observed = float(np.mean((np.sum(counts * counts, axis=1) - n) / (n * (n - 1))))
    else:
        observed = math.nan
    return Summary(
        models=list(models),
        raters=list(tallies.values()),
        pooled=pooled,
        fleiss_kappa=fleiss_kappa(counts) if n >= 2 else math.nan,
        agreement_items=len(complete),
        observed_agreement=observed,
    )


def _fmt(value: float, digits: int = 3) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table3_rows(summary: Summary) -> list[list[str]]:
    """Table 3 of the paper, one column per rater: header row first, then one row per line."""
    columns = summary.raters
    rows = [["", *[t.name for t in columns]]]
    if any(t.expertise for t in columns):
        rows.append(["Expertise", *[t.expertise for t in columns]])
    for model in summary.models:
        rows.append([model, *[str(t.misclassified[model]) for t in columns]])
    rows.append(["Real", *[str(t.misclassified_real) for t in columns]])
    rows.append(["Right answers", *[str(t.right) for t in columns]])
    rows.append(["Answered", *[f"{t.answered}/{t.total}" for t in columns]])
    return rows


def format_table3(summary: Summary) -> str:
    """Plain-text Table 3 plus accuracy and agreement, for the terminal."""
    rows = table3_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines.append("misclassified scans per model and real scans; right answers last (paper Table 3)")
    lines.append("")
    for tally in [*summary.raters, summary.pooled]:
        low, high = tally.accuracy_ci
        if not tally.answered:
            lines.append(f"{tally.name}: no answers yet")
            continue
        lines.append(
            f"{tally.name}: accuracy {_fmt(tally.accuracy)} ({tally.right}/{tally.answered}, "
            f"{int(CONFIDENCE * 100)}% CI {_fmt(low)}-{_fmt(high)}), "
            f"{tally.p_test} p {_fmt(tally.p_value, 4) or 'n/a'}"
        )
    lines.append(
        f"Fleiss' kappa {_fmt(summary.fleiss_kappa) or 'n/a'} over {summary.agreement_items} "
        "scans answered by every rater"
    )
    return "\n".join(lines)


# Text starting with one of = + - @ is a formula to spreadsheet programs (CSV injection), and
# so is a cell starting with a tab or carriage return.  A spreadsheet that guesses another
# separator on import (';' in many locales, tab, '|') cuts a cell into several, so every
# position after such a character (and after blanks or quotes) counts as a start too.
_FORMULA = re.compile(r"(^|[,;\t|\r\n])([\s\"']*)(?=[=+\-@])")


def _safe_cell(value: object) -> object:
    """Text that a spreadsheet could run as a formula, with ' put before each formula start
    so that it stays text; numbers (e.g. a negative kappa) are left as they are."""
    if not isinstance(value, str):
        return value
    try:
        float(value)
        return value
    except ValueError:
        pass
    safe = _FORMULA.sub(lambda m: f"{m.group(1)}{m.group(2)}'", value)
    return "'" + safe if safe.startswith(("\t", "\r")) else safe


def _csv(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [[_safe_cell(v) for v in row] for row in rows]
    )
    return buffer.getvalue()


def table3_csv(summary: Summary) -> str:
    """Per-rater results as CSV, one row per rater plus one for all raters together."""
    header = ["rater", "expertise"]
    header += [f"misclassified_{m}" for m in summary.models] + [f"n_{m}" for m in summary.models]
    header += [
        "misclassified_real",
        "n_real",
        "right_answers",
        "answered",
        "total",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "sensitivity",
        "specificity",
        "p_value",
        "p_test",
    ]
    rows: list[Sequence[object]] = [header]
    for t in [*summary.raters, summary.pooled]:
        low, high = t.accuracy_ci
        rows.append(
            [t.name, t.expertise]
            + [t.misclassified[m] for m in summary.models]
            + [t.answered_per_model[m] for m in summary.models]
            + [
                t.misclassified_real,
                t.answered_real,
                t.right,
                t.answered,
                t.total,
                _fmt(t.accuracy, 4),
                _fmt(low, 4),
                _fmt(high, 4),
                _fmt(t.sensitivity, 4),
                _fmt(t.specificity, 4),
                _fmt(t.p_value, 6),
                t.p_test,
            ]
        )
    return _csv(rows)


def answers_csv(records: Sequence[Record]) -> str:
    """Every item with its answer key and answer as CSV."""
    rows: list[Sequence[object]] = [
        [
            "rater",
            "position",
            "scan_id",
            "source",
            "truth",
            "answer",
            "correct",
            "answered_at",
            "elapsed_ms",
            "path",
        ]
    ]
    for r in records:
        rows.append(
            [
                r.rater,
                r.position,
                r.scan_id,
                r.source,
                r.truth,
                r.answer or "",
                "" if r.correct is None else int(r.correct),
                r.answered_at or "",
                "" if r.elapsed_ms is None else r.elapsed_ms,
                r.path,
            ]
        )
    return _csv(rows)
