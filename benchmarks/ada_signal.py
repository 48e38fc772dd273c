"""Benchmark: does the critic-augmentation signal r_t track overfitting as ADA's r_v measures it?

    python benchmarks/ada_signal.py RUN [RUN ...] --heldout HELD_IMAGES_DIR --out DIR
        [--checkpoints DIR [DIR ...]] [--n 32] [--seed 0] [--max-checkpoints 12] [--device cpu]

ADA (Karras et al. 2020) adapts the critic augmentation's probability p from r_t, a signal that
training can compute, and validated r_t against r_v, which needs held-out real scans:

    r_v = (E[D(train)] - E[D(held-out)]) / (E[D(train)] - E[D(generated)])

0 when held-out real scans score like training scans (no overfitting), 1 when they score like
generated ones.  Ours (``ratgan.training.disc_augment``) centres the real scores of a Wasserstein
critic on the mean generated score, r_t = E[sign(D(x) - mean D(x~))].  For every checkpoint
``ckpt_*.pt`` of each run (from RUN/checkpoints, or from the ``--checkpoints`` folder given for
it, paired with the runs in order; at most ``--max-checkpoints`` of them, evenly spread) this
restores G (raw weights, not the moving average: the critic sees raw G), E, D and the
augmentation state, and scores with D, under no_grad, in training mode (one spectral-norm power
iteration, as a training phase does) and the run's precision:

- ``train``: ``--n`` of the run's training scans (data.json), read as training reads them
  (``load_cohort``, ``model_input``; not the random data augmentation);
- ``held``: ``--n`` held-out real scans, read the same way;
- ``gen``: G(z) from seeded codes, with G's output noise, called as the training step calls it
  (``generate_pair``, batches of train.batch_size), and ``rec``: G(E(x)) of the ``train`` scans,
  the other half of what the critic sees in training.

Per checkpoint it reports the mean scores; r_v (with a bootstrap 90 % interval over the scans;
unstable where D scores training and generated scans alike); ``auc_held``, the chance that a
training scan outscores a held-out one (0.5: no overfitting; scale-free); r_t as defined above
(real scores centred on the mean over all ``gen``); ``r_t_train``, the signal exactly as
training accumulates it (``DiscriminatorAugment.observe`` per batch of train.batch_size, real
scores centred on that batch's mean over ``rec`` and ``gen``); and ``r_v_train``, r_v whose
generated set is the same ``rec`` and ``gen``.  Each again with the augmentation at the
checkpoint's p applied to every input (suffix ``_aug``: what training computes r_t on; every
set gets the same seeded transforms, volume by volume).

Writes DIR/ada_signal.csv (one row per run and checkpoint) and DIR/ada_signal.png (r_t, r_v and
p against the iteration per run; r_v against r_t with ADA's target 0.6), and prints the table,
the Pearson and Spearman correlations of r_t and r_v (and auc_held) over all rows and r_v at the
checkpoints whose r_t is nearest 0.6.  Not part of pass/fail (tests/training/test_ada_signal.py
checks the formulas and runs it on a tiny run).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ratgan.config import Config, DiscriminatorAugmentConfig, config_from_dict
from ratgan.errors import RatganError
from ratgan.training.disc_augment import DiscriminatorAugment

TARGET = 0.6
"""ADA's target of r_t (and the default ``ada.target``)."""

SETS = ("train", "held", "gen", "rec")


# --- the signals (pure: the known-answer test calls them) -------------------------------------


def overfitting_ratio(train: Any, held: Any, generated: Any) -> float:
    """ADA's r_v = (E[D_train] - E[D_held]) / (E[D_train] - E[D_generated]); NaN when the
    critic scores training and generated scans alike on average (no scale to measure on)."""
    t = float(np.mean(np.asarray(train, dtype=np.float64)))
    denominator = t - float(np.mean(np.asarray(generated, dtype=np.float64)))
    if denominator == 0:
        return math.nan
    return (t - float(np.mean(np.asarray(held, dtype=np.float64)))) / denominator


def centred_sign(real: Sequence[Any], fake: Sequence[Any]) -> float:
    """Our r_t over paired batches: E[sign(D(x) - mean D(x~))], each batch of real scores
    centred on the mean of its fake scores, accumulated by the training code itself
    (``DiscriminatorAugment.observe``).  One batch each: centred on the mean over all fakes."""
    signal = DiscriminatorAugment(DiscriminatorAugmentConfig(enabled=True))
    for r, f in zip(real, fake, strict=True):
        signal.observe(torch.as_tensor(r), torch.as_tensor(f))
    return float(signal.r_t())


def outscore(a: Any, b: Any) -> float:
    """P(a score of ``a`` > a score of ``b``) over all pairs, ties counting half: the area under
    the ROC curve of the critic telling ``a`` from ``b`` (0.5: it cannot; scale-free)."""
    x = np.asarray(a, dtype=np.float64)[:, None]
    y = np.asarray(b, dtype=np.float64)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def ratio_interval(
    train: np.ndarray, held: np.ndarray, generated: np.ndarray, seed: int, draws: int = 400
) -> tuple[float, float]:
    """A bootstrap 90 % interval of r_v (each set resampled on its own, seeded)."""
    rng = np.random.default_rng([seed, 17])
    values = np.array(
        [
            overfitting_ratio(
                rng.choice(train, len(train)),
                rng.choice(held, len(held)),
                rng.choice(generated, len(generated)),
            )
            for _ in range(draws)
        ]
    )
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    lo, hi = np.percentile(values, [5, 95])
    return float(lo), float(hi)


def spread(items: list[Any], most: int) -> list[Any]:
    """At most ``most`` of ``items`` (all when ``most`` is 0), evenly spread, first and last
    included."""
    if most <= 0 or len(items) <= most:
        return list(items)
    if most == 1:
        return [items[-1]]
    idx = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, most)})
    return [items[i] for i in idx]


# --- inputs --------------------------------------------------------------------------------


def pick(count: int, n: int, seed: int, salt: int) -> list[int]:
    """``n`` of ``count`` indices (all when fewer), drawn from ``seed``, sorted."""
    rng = np.random.default_rng([seed, salt])
    return sorted(int(i) for i in rng.choice(count, size=min(n, count), replace=False))


def load_scans(entries: list[tuple[str | Path, str | Path | None]], cfg: Config) -> torch.Tensor:
    """(image, label) files read and preprocessed as training reads its cohort: through a CSV
    listing, by ``load_cohort``, then ``model_input``."""
    from ratgan.data.dataset import load_cohort
    from ratgan.training.run import model_input

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "scans.csv"
        with listing.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "label"])
            writer.writerows(
                [str(image), "" if label is None else str(label)] for image, label in entries
            )
        cohort = load_cohort(
            listing, cfg.data, require_labels=cfg.data.label_channels, progress=False
        )
    return model_input(cohort.images, cohort.labels, cfg)


def real_sets(
    run_dir: Path, heldout: Path, cfg: Config, n: int, seed: int
) -> dict[str, torch.Tensor]:
    """``n`` training scans of the run and ``n`` held-out scans (the same number, a multiple of
    the training batch size), each drawn from ``seed``."""
    from ratgan.data.io import list_scans
    from ratgan.runs import read_run_data

    try:
        held = list_scans(heldout)
    except RatganError:
        held = []
    if not held:
        raise RatganError(f"held-out folder {heldout} holds no scans (.nii or .nii.gz files).")
    train = read_run_data(run_dir).entries
    batch = cfg.train.batch_size
    n = min(n, len(train), len(held)) // batch * batch
    if n == 0:
        raise RatganError(
            f"--n must allow at least one batch of {batch} training and held-out scans."
        )
    return {
        "train": load_scans(
            [(train[i].image, train[i].label) for i in pick(len(train), n, seed, 1)], cfg
        ),
        "held": load_scans(
            [(held[i].image, held[i].label) for i in pick(len(held), n, seed, 2)], cfg
        ),
    }


# --- one checkpoint --------------------------------------------------------------------------


@torch.no_grad()
def critic_scores(
    run_dir: Path, path: Path, real: dict[str, torch.Tensor], seed: int, device: torch.device
) -> dict[str, Any]:
    """D's scores of every set, plain and augmented at the checkpoint's p, with what the
    checkpoint says of itself: {"iteration", "p", "batch", "plain": {set: scores},
    "aug": {set: scores}}."""
    from ratgan.generation.sample import latent_codes, load_generator, scan_seed
    from ratgan.models.discriminator import Discriminator, Encoder
    from ratgan.runs import read_run_config
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.alphagan import _Phase
    from ratgan.training.losses import widen
    from ratgan.training.run import _restore_extras

    state = ckpt.load_checkpoint(path, map_location="cpu", mmap=True)
    cfg = config_from_dict(state["config"]) if "config" in state else read_run_config(run_dir)
    generator = load_generator(run_dir, path, device=str(device), weights="raw").generator
    encoder, critic = Encoder(cfg.model), Discriminator(cfg.model)
    encoder.load_state_dict(state["networks"]["E"])
    critic.load_state_dict(state["networks"]["D"])
    fmt = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    for net in (generator, encoder, critic):
        # As training holds them (it never switches G, E or D to evaluation mode).
        net.to(device).to(memory_format=fmt).train()  # type: ignore[call-overload]
    augment = DiscriminatorAugment(cfg.ada).to(device)
    _restore_extras(state, None, augment)
    batch = cfg.train.batch_size
    n = len(real["train"])
    z = latent_codes([scan_seed(seed, i) for i in range(n)], cfg.model.latent_dim).to(device)
    helper = _Phase(cfg, device.type)
    torch.manual_seed(seed)  # G's output noise is drawn from the global stream, as in training
    # One context for every call: D's spectral-normalised weights are computed once (one power
    # iteration, as in a training phase) and every set is scored by the same D.
    with helper.amp():
        sets = {k: real[k].to(device) for k in ("train", "held")}
        rec, gen = [], []
        for x, z_r in zip(sets["train"].split(batch), z.split(batch), strict=True):
            z_e = widen(encoder(x).reshape(len(x), -1))
            x_rec, x_gen = helper.generate_pair(generator, z_e, z_r)
            rec.append(widen(x_rec))
            gen.append(widen(x_gen))
        sets["gen"] = torch.cat(gen).contiguous(memory_format=fmt)
        sets["rec"] = torch.cat(rec).contiguous(memory_format=fmt)

        def score(x: torch.Tensor) -> np.ndarray:
            out = [widen(critic(part).reshape(-1)) for part in x.split(batch)]
            return torch.cat(out).cpu().numpy().astype(np.float64)

        plain = {k: score(v) for k, v in sets.items()}
        augmented = {}
        for k, v in sets.items():
            rng = torch.Generator(device=device).manual_seed(seed + 1)  # the same draws per set
            augmented[k] = score(augment(v, rng))
    p = float(augment.p) if cfg.ada.enabled else 0.0
    return {
        "iteration": int(state["iteration"]),
        "p": p,
        "batch": batch,
        "plain": plain,
        "aug": augmented,
    }


def signals(scores: dict[str, np.ndarray], batch: int, seed: int) -> dict[str, float]:
    """Mean scores, r_v (and its interval), r_v_train, r_t and r_t_train of one checkpoint's
    scores."""
    out = {f"d_{k}": float(np.mean(scores[k])) for k in SETS}
    out["r_v"] = overfitting_ratio(scores["train"], scores["held"], scores["gen"])
    out["r_v_lo"], out["r_v_hi"] = ratio_interval(
        scores["train"], scores["held"], scores["gen"], seed
    )
    fakes = np.concatenate([scores["rec"], scores["gen"]])
    out["r_v_train"] = overfitting_ratio(scores["train"], scores["held"], fakes)
    out["auc_held"] = outscore(scores["train"], scores["held"])
    out["r_t"] = centred_sign([scores["train"]], [scores["gen"]])
    chunks = [np.array_split(scores[k], len(scores[k]) // batch) for k in ("train", "rec", "gen")]
    out["r_t_train"] = centred_sign(
        chunks[0], [np.concatenate(f) for f in zip(*chunks[1:], strict=True)]
    )
    return out


def checkpoint_row(
    run_dir: Path, path: Path, real: dict[str, torch.Tensor], seed: int, device: torch.device
) -> dict[str, Any]:
    """One CSV row: run, checkpoint, iteration, p, then the plain and ``_aug`` signals."""
    found = critic_scores(run_dir, path, real, seed, device)
    row: dict[str, Any] = {
        "run": run_dir.name,
        "checkpoint": path.name,
        "iteration": found["iteration"],
        "p": found["p"],
        "n": len(real["train"]),
    }
    for suffix, key in (("", "plain"), ("_aug", "aug")):
        for name, value in signals(found[key], found["batch"], seed).items():
            row[name + suffix] = value
    return row


# --- output ----------------------------------------------------------------------------------


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """All rows, one per run and checkpoint."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def correlations(rows: list[dict[str, Any]], x: str, y: str) -> tuple[float, float, int]:
    """Pearson and Spearman correlation of columns ``x`` and ``y`` over the rows where both
    are finite, and how many rows that is."""
    from scipy import stats

    a = np.array([r[x] for r in rows], dtype=np.float64)
    b = np.array([r[y] for r in rows], dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan, int(len(a))
    return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0]), int(len(a))


def nearest_target(rows: list[dict[str, Any]], column: str, k: int = 3) -> list[dict[str, Any]]:
    """The ``k`` rows whose ``column`` is nearest ADA's target."""
    finite = [r for r in rows if math.isfinite(r[column])]
    return sorted(finite, key=lambda r: abs(r[column] - TARGET))[:k]


_TABLE = [
    ("run", "run", "{}"),
    ("iter", "iteration", "{:d}"),
    ("p", "p", "{:.3f}"),
    ("D_train", "d_train", "{:.3g}"),
    ("D_held", "d_held", "{:.3g}"),
    ("D_gen", "d_gen", "{:.3g}"),
    ("D_rec", "d_rec", "{:.3g}"),
    ("r_v", "r_v", "{:.2f}"),
    ("r_v 90%", None, ""),
    ("r_t", "r_t", "{:.2f}"),
    ("r_v_train", "r_v_train", "{:.2f}"),
    ("r_t_train", "r_t_train", "{:.2f}"),
    ("auc_held", "auc_held", "{:.2f}"),
    ("r_v_aug", "r_v_aug", "{:.2f}"),
    ("r_t_aug", "r_t_aug", "{:.2f}"),
    ("r_v_train_aug", "r_v_train_aug", "{:.2f}"),
    ("r_t_train_aug", "r_t_train_aug", "{:.2f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text."""
    lines = [[head for head, _, _ in _TABLE]]
    for r in rows:
        cells = []
        for _, key, fmt in _TABLE:
            if key is None:
                cells.append(f"[{r['r_v_lo']:.2f}, {r['r_v_hi']:.2f}]")
            else:
                cells.append(fmt.format(r[key]))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(_TABLE))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def summary(rows: list[dict[str, Any]]) -> str:
    """Correlations of r_t (and r_t_train) with r_v, plain and augmented, and r_v where r_t
    is nearest the target."""
    out = []
    for suffix, what in (("", "un-augmented"), ("_aug", "augmented at the stored p")):
        for signal, truth in (
            ("r_t", "r_v"),
            ("r_t_train", "r_v"),
            ("r_t_train", "r_v_train"),
            ("r_t", "auc_held"),
            ("r_t_train", "auc_held"),
        ):
            pearson, spearman, count = correlations(rows, signal + suffix, truth + suffix)
            out.append(
                f"{signal + suffix} vs {truth}{suffix} ({what}, {count} rows): "
                f"Pearson {pearson:.2f}, Spearman {spearman:.2f}"
            )
    for column in ("r_t", "r_t_aug", "r_t_train", "r_t_train_aug"):
        suffix = "_aug" if column.endswith("_aug") else ""
        near = nearest_target(rows, column)
        listed = "; ".join(
            f"{r['run']}@{r['iteration']}: {column} {r[column]:.2f}, r_v{suffix} "
            f"{r['r_v' + suffix]:.2f}, r_v_train{suffix} {r['r_v_train' + suffix]:.2f}"
            for r in near
        )
        out.append(f"r_v where {column} is nearest {TARGET}: {listed}")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], runs: list[Path], png: Path) -> None:
    """Per run: the signals and the logged p against the iteration; r_v against r_t (and
    r_v_train against r_t_train), plain and augmented, with ADA's target."""
    from matplotlib.figure import Figure

    from ratgan.training.figures import read_metrics

    names = list(dict.fromkeys(r["run"] for r in rows))
    fig = Figure(figsize=(13, 4.6 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    lines = {
        "r_t": "C0",
        "r_t_train": "C2",
        "r_t_train_aug": "C2",
        "r_v": "C3",
        "r_v_train": "C1",
        "auc_held": "C4",
    }
    for (ax, scatter), name in zip(axes, names, strict=True):
        mine = [r for r in rows if r["run"] == name]
        its = [r["iteration"] for r in mine]
        lim = _limits([r[c] for r in mine for c in ("r_v", "r_v_aug")])
        for column, colour in lines.items():
            style = ("s--", "none") if column.endswith("_aug") else ("o-", colour)
            ax.plot(
                its, [r[column] for r in mine], style[0], color=colour, mfc=style[1], label=column
            )
        ax.fill_between(
            its,
            [r["r_v_lo"] for r in mine],
            [r["r_v_hi"] for r in mine],
            color="C3",
            alpha=0.12,
            label="r_v 90% bootstrap",
        )
        run_dir = next((p for p in runs if p.name == name), None)
        logged = read_metrics(run_dir / "metrics.jsonl", None) if run_dir else []
        logged = [m for m in logged if "ada_p" in m]
        if logged:
            ax.plot(
                [m["iteration"] for m in logged],
                [m["ada_p"] for m in logged],
                color="k",
                lw=1,
                label="p (metrics.jsonl)",
            )
        ax.axhline(TARGET, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{name}: signals per checkpoint", xlabel="iteration", ylim=lim)
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
        off = 0
        for x, y, colour in (("r_t", "r_v", "C0"), ("r_t_train", "r_v_train", "C2")):
            for suffix in ("", "_aug"):
                xs = [r[x + suffix] for r in mine]
                ys = [r[y + suffix] for r in mine]
                off += sum(not lim[0] <= v <= lim[1] for v in ys)
                scatter.scatter(
                    xs,
                    np.clip(ys, *lim),
                    marker="o" if not suffix else "s",
                    facecolors=colour if not suffix else "none",
                    edgecolors=colour,
                    label=f"{y + suffix} against {x + suffix}",
                )
        scatter.axvline(TARGET, color="grey", ls=":", label=f"ADA's target {TARGET}")
        note = f" ({off} clipped to the edge)" if off else ""
        scatter.set(
            title=f"{name}: r_v against r_t{note}",
            xlabel="r_t",
            ylabel="r_v",
            ylim=(lim[0] - 0.05, lim[1] + 0.05),
        )
        scatter.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.savefig(png, dpi=110)


def _limits(values: list[float]) -> tuple[float, float]:
    """y limits that hold [-0.2, 1.2] and the finite values, clipped to [-3, 4] (r_v is
    unbounded where D scores training and generated scans alike)."""
    finite = [v for v in values if math.isfinite(v)]
    lo = max(-3.0, min([-0.2, *finite]))
    hi = min(4.0, max([1.2, *finite]))
    return lo, hi


# --- the command -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out real scans")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        type=Path,
        help="checkpoint folders, one per RUN in order (default: RUN/checkpoints)",
    )
    parser.add_argument("--n", type=int, default=32, help="scans per set (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-checkpoints", type=int, default=12, help="per run, evenly spread (0: all)"
    )
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(run, checkpoint) pairs to score, every run checked before any work."""
    folders = args.checkpoints or [run / "checkpoints" for run in args.runs]
    if len(folders) != len(args.runs):
        raise RatganError(
            f"--checkpoints names {len(folders)} folders for {len(args.runs)} runs; "
            "give one per run."
        )
    from ratgan.training import checkpoint as ckpt

    jobs = []
    for run, folder in zip(args.runs, folders, strict=True):
        found = ckpt.checkpoints_in(folder)
        if not found:
            raise RatganError(f"run {run} has no checkpoints (no ckpt_*.pt files in {folder}).")
        jobs += [(run, path) for _, path in spread(found, args.max_checkpoints)]
    return jobs


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the rows written to the CSV."""
    from ratgan.devices import select_device
    from ratgan.runs import read_run_config

    args = parse_args(argv)
    start = time.process_time()
    jobs = plan(args)
    device = select_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, png = args.out / "ada_signal.csv", args.out / "ada_signal.png"
    rows: list[dict[str, Any]] = []
    real: dict[Path, dict[str, torch.Tensor]] = {}
    for run, path in tqdm(jobs, desc="checkpoints", unit="ckpt", dynamic_ncols=True):
        if run not in real:
            real[run] = real_sets(run, args.heldout, read_run_config(run), args.n, args.seed)
        try:
            rows.append(checkpoint_row(run, path, real[run], args.seed, device))
        except RatganError as exc:  # e.g. a checkpoint still being copied into an archive
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
            continue
        write_csv(rows, csv_path)  # as it goes: a long run leaves what it measured
    if not rows:
        raise RatganError("no checkpoint could be read.")
    plot(rows, args.runs, png)
    print(table(rows))
    print(summary(rows))
    print(f"wrote {csv_path} and {png}; CPU time {time.process_time() - start:.0f} s")
    return rows


if __name__ == "__main__":
    try:
        main()
    except RatganError as exc:
        sys.exit(f"error: {exc}")
