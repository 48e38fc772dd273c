"""Reports of the segmentation benchmark: results.json, table.md and dice.png.

The table is shaped like the paper's Table 4 (mean ± std over seeds); below it, every test is
compared with test 1 by the paired statistics of :mod:`ratgan.segmentation.stats` (mean ΔDice,
95 % interval and p-value of a crossed random-effects model of seeds and test scans, the
seeds' sign-flip p-value (exact up to 16 seeds), seeds with a positive ΔDice, the smallest
detectable ΔDice, verdict from the interval), globally and per tissue, and collapsed networks
are listed.  The header says where the synthetic scans' labels came from and whether the GAN saw any
test scan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ratgan.atomic import atomic_write_json, atomic_write_text
from ratgan.segmentation.metrics import SCORES
from ratgan.segmentation.stats import COLLAPSE_DICE, collapses, compare

from ratgan.segmentation.state import BenchSettings

PAPER_TABLE4 = {
    "global": [0.8969, 0.9138, 0.9083, 0.9078, 0.9141, 0.8238, 0.7646, 0.8979, 0.8259, 0.8183],
    "GM": [0.9381, 0.9419, 0.9384, 0.9376, 0.9412, 0.8863, 0.8586, 0.9316, 0.8863, 0.8856],
    "WM": [0.8969, 0.9077, 0.9037, 0.9014, 0.9098, 0.8202, 0.7262, 0.8897, 0.8301, 0.7824],
    "CSF": [0.7468, 0.8232, 0.8098, 0.8170, 0.8180, 0.6095, 0.4418, 0.7442, 0.6273, 0.6042],
}
"""The paper's Table 4 (one run each), tests 1-10."""

TABLE_SCORES = ("global", "GM", "WM", "CSF")


def aggregate(runs: list[dict]) -> list[dict]:
    """Per test: mean, sample std and values over seeds of each score."""
    by_test: dict[int, list[dict]] = {}
    for r in runs:
        by_test.setdefault(r["test"], []).append(r)
    out = []
    for number in sorted(by_test):
        rs = sorted(by_test[number], key=lambda r: r["seed"])
        row = {
            "test": number,
            "name": rs[0]["name"],
            "paper": rs[0]["paper"],
            "n_real": rs[0]["n_real"],
            "n_synthetic": rs[0]["n_synthetic"],
            "augment": rs[0]["augment"],
            "seeds": [r["seed"] for r in rs],
            "epochs": [r["epochs"] for r in rs],
            "seconds": [r["seconds"] for r in rs],
            "scores": {},
        }
        for s in SCORES:
            v = np.array([r["scores"][s] for r in rs], dtype=float)
            row["scores"][s] = {
                "mean": float(np.nanmean(v)),
                # one seed has no spread to show: NaN ("n/a" in the table), not 0
                "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else math.nan,
                "values": v.tolist(),
            }
        out.append(row)
    return out


def _paired_delta(row: dict, base: dict) -> str:
    """Mean over the seeds both tests ran of the difference in global Dice, as table text:
    tests run with other seeds (a later ``--tests 3 --seeds 2``) are compared seed by seed,
    never as means over different seeds."""
    values = dict(zip(row["seeds"], row["scores"]["global"]["values"], strict=True))
    baseline = dict(zip(base["seeds"], base["scores"]["global"]["values"], strict=True))
    shared = sorted(set(values) & set(baseline))
    if not shared:
        return "n/a (no shared seed)"
    return f"{np.nanmean([values[s] - baseline[s] for s in shared]):+.4f}"


def table_markdown(rows: list[dict], header: str = "") -> str:
    """A Table-4-shaped Markdown table: one column per test, mean +- std, best in bold."""
    cols = [f"Test{r['test']}" for r in rows]
    lines = [header] if header else []
    lines.append("| Tests | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    lines.append("| Data sets | " + " | ".join(r["name"] for r in rows) + " |")
    lines.append("| Paper's data sets | " + " | ".join(r["paper"] for r in rows) + " |")
    for s in TABLE_SCORES:
        means = [r["scores"][s]["mean"] for r in rows]
        best = np.nanmax(means) if not all(math.isnan(m) for m in means) else math.nan
        cells = []
        for r, m in zip(rows, means, strict=True):
            std = r["scores"][s]["std"]
            cell = f"{m:.4f} ± {'n/a' if math.isnan(std) else f'{std:.4f}'}"
            cells.append(f"**{cell}**" if m == best else cell)
        label = "Global Dice" if s == "global" else f"{s} Dice"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| Seeds | " + " | ".join(str(len(r["seeds"])) for r in rows) + " |")
    base = next((r for r in rows if r["test"] == 1), None)
    if base is not None:
        lines.append(
            "| Δ global vs Test1, seeds in both | "
            + " | ".join(_paired_delta(r, base) for r in rows)
            + " |"
        )
    lines.append(
        "| Paper's global Dice | "
        + " | ".join(f"{PAPER_TABLE4['global'][r['test'] - 1]:.4f}" for r in rows)
        + " |"
    )
    return "\n".join(lines) + "\n"


def _seed_sentence(rows: list[dict]) -> str:
    """How many seeds each test ran, in one phrase for the table's header."""
    counts = {len(r["seeds"]) for r in rows}
    if len(counts) == 1 and len({tuple(r["seeds"]) for r in rows}) == 1:
        return f"{counts.pop()} seed(s)"
    return "seeds differ between tests (row Seeds; differences use the seeds both ran)"


def bar_chart(rows: list[dict], path: Path) -> None:
    """Grouped bars of global/GM/WM/CSF Dice per test with std error bars."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    n = len(rows)
    width = 0.2
    fig = Figure(figsize=(max(6, 1.1 * n + 3), 4))
    ax = fig.subplots()
    xs = np.arange(n)
    for k, s in enumerate(TABLE_SCORES):
        means = [r["scores"][s]["mean"] for r in rows]
        stds = [r["scores"][s]["std"] for r in rows]
        ax.bar(
            xs + (k - 1.5) * width,
            means,
            width,
            yerr=stds,
            capsize=2,
            label="global" if s == "global" else s,
        )
    ax.set_xticks(xs)
    ax.set_xticklabels([f"T{r['test']}\n{r['name']}" for r in rows], fontsize=7)
    ax.set_ylabel("Dice on held-out real scans")
    lows = [r["scores"][s]["mean"] - r["scores"][s]["std"] for r in rows for s in TABLE_SCORES]
    lows = [v for v in lows if not math.isnan(v)]
    ax.set_ylim(max(0.0, (min(lows) if lows else 0) - 0.05), 1.0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Segmentation Dice per test (mean ± std over seeds)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def comparisons(runs: list[dict]) -> list[dict]:
    """Every test but 1 against test 1, per score of the table (empty without test 1)."""
    tests = sorted({r["test"] for r in runs} - {1})
    if not any(r["test"] == 1 for r in runs):
        return []
    return [compare(runs, t, s).to_dict() for t in tests for s in TABLE_SCORES]


def _halving(c: dict, sentence: bool = False) -> str:
    """How many seeds would halve the detectable ΔDice: a table cell or a phrase.

    With one seed (or one test scan) the variance components are not estimated, so the
    detectable ΔDice leaves that variance out and nothing tells what more seeds would do.
    """
    n = c["seeds_to_halve"]
    if c["n_pairs"] == 0:  # no seed (or scan) in common with test 1
        return "nothing to detect from: no pair with test 1" if sentence else "no pair"
    if c["n_seeds"] < 2 or c["n_scans"] < 2:
        what, source = ("one seed", "seeds'") if c["n_seeds"] < 2 else ("one test scan", "scans'")
        if sentence:
            return (
                f"the {source} variance is unknown with {what}, so this leaves it out and "
                "what more seeds would do cannot be told"
            )
        return f"unknown with {what}"
    if sentence:
        if n is None:
            return "more seeds alone would not halve it: the test scans' variance dominates"
        return f"{n} seeds would halve it"
    return "not by seeds alone" if n is None else f"{n} seeds"


def stats_markdown(comps: list[dict], rows: list[dict]) -> str:
    """One line per test and score: mean ΔDice, 95 % interval and p-value of the crossed
    random-effects model, the seeds' sign-flip p (exact up to 16 seeds), the detectable ΔDice,
    verdict."""
    if not comps:
        return ""
    names = {r["test"]: r["name"] for r in rows}
    lines = [
        (
            "| Test | Data set | Score | seeds x scans | mean ΔDice vs Test1 | 95 % CI "
            "| p | p (seed signs; exact to 16 seeds, then 100,000 draws) "
            "| seeds with ΔDice > 0 "
            "| detectable ΔDice (seeds to halve it) | verdict |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comps:
        lines.append(
            f"| Test{c['test']} | {names.get(c['test'], '')} | {c['score']} | "
            f"{c['n_seeds']} x {c['n_scans']} | {c['mean_delta']:+.4f} | "
            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['p_value']:.2g} | "
            f"{c['p_seed_signs']:.2g} | {c['seeds_better']} of {c['n_seeds']} | "
            f"{c['detectable']:.4f} ({_halving(c)}) | {c['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def conclusion(comps: list[dict], collapsed: list[dict]) -> str:
    """The verdicts in words: which tests helped, hurt or made no detectable difference,
    and the smallest global ΔDice the run could detect."""
    glob = {c["test"]: c for c in comps if c["score"] == "global"}
    if not glob:
        return "Test 1 (real scans only) has not been run, so there is no baseline to compare."
    groups: dict[str, list[str]] = {}
    for t, c in sorted(glob.items()):
        groups.setdefault(c["verdict"], []).append(
            f"test {t} ({c['mean_delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
            f"p = {c['p_value']:.2g})"
        )
    parts = [
        "Global Dice against test 1 (mean paired ΔDice over seeds and test scans, 95 % "
        "interval and p-value of a crossed random-effects model with seeds and test scans "
        "random, Satterthwaite degrees of freedom): "
        + "; ".join(f"{v}: {', '.join(ts)}" for v, ts in groups.items())
        + ".",
        "The smallest global ΔDice this run could detect (80 % power, 5 % two-sided), from "
        "its estimated variance components: "
        + ", ".join(
            f"test {t} {c['detectable']:.4f} ({_halving(c, sentence=True)})"
            for t, c in sorted(glob.items())
        )
        + ".",
    ]
    if collapsed:
        listed = ", ".join(
            f"test {c['test']} seed {c['seed']} ("
            + ", ".join(f"{k} {v:.3f}" for k, v in c["tissues"].items())
            + ")"
            for c in collapsed
        )
        parts.append(
            f"{len(collapsed)} network(s) collapsed (a tissue Dice below "
            f"{COLLAPSE_DICE}): {listed}; they are included in the statistics."
        )
    else:
        parts.append(
            f"No network collapsed (every tissue Dice of every run is at least {COLLAPSE_DICE})."
        )
    return " ".join(parts)


def labels_sentence(state: dict[str, Any]) -> str:
    """Where the synthetic scans' labels came from, and whether that is independent."""
    mode = state["labels"]
    if mode == "atlas":
        a = state.get("atlas", {})
        acc = a.get("accuracy", {})
        scores = ", ".join(f"{k} {acc[k]['mean']:.4f}" for k in ("GM", "WM", "CSF") if k in acc)
        return (
            f"Synthetic scans were labelled by atlas registration ({a.get('k')} labelled "
            f"real training scans registered with ANTs affine + SyN, majority vote), a "
            f"labeller independent of the U-Nets; the same procedure on the held-out real "
            f"test scans scores Dice {scores} against their true labels."
        )
    if mode == "teacher":
        return (
            "Synthetic scans were labelled by a teacher U-Net trained on the same real "
            "training split as test 1: this is circular, a gain may be self-training "
            "rather than the GAN's contribution."
        )
    if mode == "joint":
        return "Synthetic scans carry the label maps generated with them (a joint model)."
    return "No synthetic scans were needed."


def overlap_sentence(state: dict[str, Any]) -> str:
    """Whether the GAN saw any real test scan."""
    ov = state.get("overlap")
    if ov and ov.get("needed") is False:
        return ""  # no synthetic scans were needed: the labels sentence says so
    if not ov or ov.get("checked") is False:
        return (
            "The synthetic source is a folder of scans, so whether its GAN saw the test "
            "scans was not checked."
        )
    if "source" not in ov:  # a record of the check before 2026-12-06
        if ov["files"]:
            return (
                f"WARNING: the GAN was trained on {len(ov['files'])} of the real test scans "
                "(--allow-overlap); the comparison is biased in their favour."
            )
        return "The GAN's data.json names none of the real test scans."
    folder = ov.get("source") == "folder"
    if ov["files"]:
        return (
            f"WARNING: the {'synthetic folder holds' if folder else 'GAN was trained on'} "
            f"{len(ov['files'])} of the real test and validation scans (--allow-overlap); "
            "the comparison is biased in their favour."
        )
    compared = "(compared by file, bytes and image)"
    if folder:
        return f"The synthetic folder holds none of the real test and validation scans {compared}."
    unverified = ov.get("unverified", 0)
    gone = (
        f" {unverified} of its training scans are gone and were recorded without a digest, "
        "so they were not compared."
        if unverified
        else ""
    )
    return f"The GAN trained on none of the real test and validation scans {compared}.{gone}"


def write_reports(
    out: Path, runs: list[dict], opt: BenchSettings, wall: float = 0.0, ran: int = 0
) -> dict:
    """results.json, table.md and dice.png from the finished runs."""
    out = Path(out)
    rows = aggregate(runs)
    state = json.loads((out / "segbench.json").read_text())
    counts = state["counts"]
    gate = state["quality_gate"]
    header = (
        f"Segmentation benchmark (paper Table 4) on `{opt.real}`: {counts['real_labelled']} "
        f"labelled real scans split into {counts['train']} training, {counts['val']} "
        f"validation and {counts['test']} test scans; synthetic scans from "
        f"`{opt.synthetic}`, {gate['n_accepted']} of {gate['n_checked']} accepted by "
        f"the quality gate ({gate['acceptance_rate']:.0%}). Mode {opt.mode}: U-Net "
        f"{list(opt.channels)} on {state['network_input']} inputs"
        f"{' (brain box ' + str(state['box']) + ')' if state['box'] else ''}, "
        f"at most {opt.max_steps or 'unlimited'} steps, Dice on whole test volumes; "
        f"{_seed_sentence(rows)}, mean ± std over seeds.\n\n"
        f"{(labels_sentence(state) + ' ' + overlap_sentence(state)).strip()}\n"
    )
    comps = comparisons(runs)
    collapsed = collapses(runs)
    text = conclusion(comps, collapsed)
    stats_md = stats_markdown(comps, rows)
    md = (
        table_markdown(rows, header)
        + ("\n" + stats_md if stats_md else "")
        + ("\n" + text + "\n" if text else "")
    )
    total = sum(r["seconds"] for r in runs)
    results = {
        "options": opt.fingerprint(),
        "counts": counts,
        "labels": state["labels"],
        "atlas": state.get("atlas"),
        "overlap": state.get("overlap"),
        "quality_gate": gate,
        "tests": rows,
        "comparisons": comps,
        "collapses": {"count": len(collapsed), "runs": collapsed},
        "conclusion": text,
        "paper_table4": PAPER_TABLE4,
        "seconds": {
            "all_runs": round(total, 1),
            "this_call": round(wall, 1),
            "runs_this_call": ran,
        },
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", md)
    if rows:
        bar_chart(rows, out / "dice.png")
    return results
