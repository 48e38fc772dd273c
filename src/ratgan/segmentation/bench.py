"""The downstream segmentation benchmark (paper Table 4): ten tests over K seeds, resumable.

Output folder::

    OUT/segbench.json      options, the real split (file names) and the synthetic pool summary
    OUT/plan.json          per seed and test: the real and synthetic scans trained on
    OUT/synthetic/         scans generated from a run folder (round-00, round-01, ...)
    OUT/teacher/           teacher.pt and labels/ (teacher label maps of synthetic scans)
    OUT/quality_gate.json  tissue-fraction ranges, per-scan verdicts, acceptance rate
    OUT/runs.json          every finished (test, seed): scores, epochs, time (atomic rewrite)
    OUT/results.json       mean +- std per test and score
    OUT/table.md           Table 4 shaped: mean +- std, best in bold
    OUT/dice.png           bar chart with error bars

A rerun with the same options skips every (test, seed) already in ``runs.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ratgan.atomic import atomic_write_json, atomic_write_text
from ratgan.errors import RatganError
from ratgan.runs import is_run_folder
from ratgan.segmentation.data import (
    SegSet,
    brain_box,
    concat,
    crop,
    downsample_images,
    downsample_labels,
    find_entries,
    load_set,
)
from ratgan.segmentation.metrics import SCORES, dice_scores, summarize
from ratgan.segmentation.plan import (
    TESTS,
    PlannedTest,
    Split,
    build_plan,
    halves,
    make_split,
    synthetic_needed,
)
from ratgan.segmentation.quality_gate import FRACTIONS, QualityGate
from ratgan.segmentation.train import TrainSettings, segment, train_segmenter
from ratgan.segmentation.unet import PRESETS, UNetConfig

PAPER_TABLE4 = {
    "global": [0.8969, 0.9138, 0.9083, 0.9078, 0.9141, 0.8238, 0.7646, 0.8979, 0.8259, 0.8183],
    "GM": [0.9381, 0.9419, 0.9384, 0.9376, 0.9412, 0.8863, 0.8586, 0.9316, 0.8863, 0.8856],
    "WM": [0.8969, 0.9077, 0.9037, 0.9014, 0.9098, 0.8202, 0.7262, 0.8897, 0.8301, 0.7824],
    "CSF": [0.7468, 0.8232, 0.8098, 0.8170, 0.8180, 0.6095, 0.4418, 0.7442, 0.6273, 0.6042],
}
"""The paper's Table 4 (one run each), tests 1-10."""

TABLE_SCORES = ("global", "GM", "WM", "CSF")
MODES = {
    # narrow U-Net on the brain's bounding box at full resolution, a fixed step budget
    "cpu": {"channels": PRESETS["cpu"], "downsample": 1, "crop": "brain", "max_epochs": 1000,
            "max_steps": 400, "patience": 20, "batch_size": 4, "lr": 2e-3, "precision": "bf16"},
    # the paper's U-Net on whole full-resolution volumes, the paper's lr and patience
    "full": {"channels": PRESETS["full"], "downsample": 1, "crop": "none", "max_epochs": 500,
             "max_steps": 0, "patience": 50, "batch_size": 4, "lr": 5e-4, "precision": "bf16"},
}
MAX_ROUNDS = 5


@dataclass
class BenchOptions:
    """Everything that defines a benchmark; ``None`` fields take the mode's default."""

    real: str
    synthetic: str
    out: str
    seeds: int = 2
    mode: str = "cpu"
    labels: str = "auto"
    """``joint`` (label maps written by a joint model), ``teacher`` or ``auto``."""
    tests: list[int] | None = None
    shape: tuple[int, int, int] = (64, 64, 40)
    """Full-resolution shape every scan is centre padded/cropped to."""
    downsample: int | None = None
    crop: str | None = None
    """``brain``: train and predict inside the box holding every real training/validation
    brain (the rest is background); ``none``: whole volumes."""
    channels: tuple[int, ...] | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    """Cap on optimiser steps per network; 0 for none."""
    patience: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    loss: str = "dice"
    precision: str | None = None
    device: str = "auto"
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    gate_margin: float = 0.1
    volume_index: int | None = None
    reference: str | None = None
    progress: bool = True

    def resolved(self) -> BenchOptions:
        """A copy with the mode's defaults filled in; raises RatganError on bad values."""
        if self.mode not in MODES:
            raise RatganError(f"--mode must be one of {', '.join(MODES)} (got {self.mode!r}).")
        if self.labels not in ("auto", "joint", "teacher"):
            raise RatganError(f"--labels must be auto, joint or teacher (got {self.labels!r}).")
        d = dict(MODES[self.mode])
        kw = asdict(self)
        for key, value in d.items():
            if kw.get(key) is None:
                kw[key] = value
        kw["channels"] = tuple(kw["channels"])
        kw["shape"] = tuple(int(s) for s in kw["shape"])
        out = BenchOptions(**kw)
        if out.seeds < 1:
            raise RatganError(f"--seeds must be at least 1 (got {out.seeds}).")
        if out.downsample < 1 or any(s % out.downsample for s in out.shape):
            raise RatganError(f"--downsample {out.downsample} must divide every side of "
                              f"--shape {list(out.shape)}.")
        for name in ("max_epochs", "patience", "batch_size"):
            if getattr(out, name) < 1:
                raise RatganError(f"--{name.replace('_', '-')} must be at least 1.")
        if out.crop not in ("brain", "none"):
            raise RatganError(f"--crop must be brain or none (got {out.crop!r}).")
        if out.max_steps < 0:
            raise RatganError("--max-steps must be >= 0 (0: no cap).")
        if out.loss not in ("dice", "dice_ce"):
            raise RatganError(f"--loss must be dice or dice_ce (got {out.loss!r}).")
        if out.precision not in ("fp32", "bf16"):
            raise RatganError(f"--precision must be fp32 or bf16 (got {out.precision!r}).")
        return out

    def settings(self) -> TrainSettings:
        """Training settings of every network of the benchmark."""
        return TrainSettings(max_epochs=self.max_epochs, patience=self.patience,
                             batch_size=self.batch_size, lr=self.lr, loss=self.loss,
                             precision=self.precision, device=self.device,
                             max_steps=self.max_steps or None)

    def net(self, box=None) -> UNetConfig:
        """The U-Net of every test (built for the working shape: crop, then pooling)."""
        full = [b - a for a, b in box] if box is not None else self.shape
        work = tuple(s // self.downsample for s in full)
        return UNetConfig(channels=self.channels, input_shape=work)

    def fingerprint(self) -> dict[str, Any]:
        """The options that change results: a rerun into the same folder must match them."""
        keys = ("real", "synthetic", "mode", "labels", "shape", "downsample", "crop",
                "channels", "max_epochs", "max_steps", "patience", "batch_size", "lr", "loss", "precision",
                "split_seed", "test_fraction", "val_fraction", "gate_margin", "volume_index")
        d = asdict(self)
        out = {k: d[k] for k in keys}
        out["real"] = str(Path(self.real).resolve())
        out["synthetic"] = str(Path(self.synthetic).resolve())
        return json.loads(json.dumps(out))


# --------------------------------------------------------------------------- files


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    atomic_write_json(path, data)


def read_runs(out: Path) -> list[dict]:
    """Finished (test, seed) records of a benchmark folder."""
    path = Path(out) / "runs.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise RatganError(f"{path} is damaged ({exc}); delete it to rerun every test.") from None


# --------------------------------------------------------------------------- the benchmark


class Benchmark:
    """One benchmark folder: data, synthetic pool, plan and results."""

    def __init__(self, options: BenchOptions) -> None:
        self.opt = options.resolved()
        self.out = Path(self.opt.out)
        self.factor = self.opt.downsample
        self.log_lines: list[str] = []

    # ------------------------------------------------------------------ setup

    def log(self, text: str) -> None:
        """Print a progress line (kept for the summary)."""
        self.log_lines.append(text)
        if self.opt.progress:
            from tqdm.auto import tqdm

            tqdm.write(text)

    def _check_folder(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "segbench.json"
        fp = self.opt.fingerprint()
        if state_path.is_file():
            old = json.loads(state_path.read_text()).get("options", {})
            diff = [k for k in fp if old.get(k) != fp[k]]
            if diff:
                changes = ", ".join(f"{k}: {old.get(k)} -> {fp[k]}" for k in diff)
                raise RatganError(f"output folder {self.out} holds a benchmark made with other "
                                  f"options ({changes}); use a new --out or the same options.")
        return fp

    def load_real(self) -> SegSet:
        """The labelled real scans at full resolution."""
        entries = [e for e in find_entries(self.opt.real) if e.label is not None]
        if len(entries) < 4:
            raise RatganError(f"real set {self.opt.real} holds {len(entries)} scans with label "
                              "maps; the benchmark needs at least 4 (labels/ beside images/).")
        return load_set(entries, self.opt.shape, self.opt.volume_index,
                        progress=self.opt.progress, desc="real scans")

    def setup(self) -> None:
        """Load the real set, split it, build the synthetic pool (generate, label, gate)."""
        fp = self._check_folder()
        self.real = self.load_real()
        self.split: Split = make_split(len(self.real), self.opt.split_seed,
                                       self.opt.test_fraction, self.opt.val_fraction)
        r = len(self.split.train)
        self.box = (brain_box(self.real.labels[self.split.train + self.split.val],
                              multiple=2 ** (len(self.opt.channels) - 1) * self.factor)
                    if self.opt.crop == "brain" else None)
        wanted = self.opt.tests or [t.number for t in TESTS]
        self.needed = max(halves(t.synth_halves, r) for t in TESTS if t.number in wanted)
        if self.needed:
            self.pool, gate_summary = self.synthetic_pool()
        else:  # tests 1 and 10 only: no synthetic scans needed
            self.label_mode = "none"
            self.pool = SegSet(torch.zeros(0, 1, *self.opt.shape),
                               torch.zeros(0, 1, *self.opt.shape, dtype=torch.long), [])
            gate_summary = {"acceptance_rate": 0.0, "n_checked": 0, "n_accepted": 0}
        if len(self.pool) < self.needed:
            raise RatganError(
                f"only {len(self.pool)} synthetic scans passed the quality gate "
                f"(acceptance {gate_summary['acceptance_rate']:.0%}) but the tests need "
                f"{self.needed} for {r} real training scans; add scans to "
                f"{self.opt.synthetic} or pass a run folder so that more are generated.")
        write_json(self.out / "segbench.json", {
            "options": fp,
            "split": {k: [self.real.names[i] for i in v]
                      for k, v in self.split.to_dict().items()},
            "counts": {"real_labelled": len(self.real), "train": r,
                       "val": len(self.split.val), "test": len(self.split.test),
                       "synthetic_pool": len(self.pool),
                       "synthetic_needed_all_tests": synthetic_needed(r)},
            "labels": self.label_mode,
            "box": None if self.box is None else [list(b) for b in self.box],
            "network_input": list(self.opt.net(self.box).input_shape),
            "quality_gate": {k: gate_summary[k] for k in ("acceptance_rate", "n_checked",
                                                           "n_accepted")},
        })
        # the networks' inputs: cropped to the box, pooled by the downsampling factor
        self.real_lo = self._work(self.real)
        self.pool_lo = self._work(self.pool) if len(self.pool) else None

    def _work(self, s: SegSet) -> tuple[torch.Tensor, torch.Tensor]:
        return (downsample_images(crop(s.images, self.box), self.factor),
                downsample_labels(crop(s.labels, self.box), self.factor))

    def _teacher(self):
        from ratgan.segmentation.teacher import cached_teacher

        if getattr(self, "_teacher_model", None) is None:
            self.log("training the teacher on the real training split")
            self._teacher_model = cached_teacher(
                self.out / "teacher" / "teacher.pt", self.real.subset(self.split.train),
                self.real.subset(self.split.val), self.opt.net(self.box), self.opt.settings(),
                self.factor, self.box, seed=self.opt.split_seed, progress=self.opt.progress)
        return self._teacher_model

    def _label(self, syn: SegSet) -> SegSet:
        """Synthetic scans with label maps: their own (joint) or the teacher's."""
        if self.label_mode == "joint":
            return syn
        from ratgan.data.io import read_label, read_scan, write_nifti
        from ratgan.data.transforms import inverse_labels, preprocess_labels

        folder = self.out / "teacher" / "labels"
        todo = [i for i, n in enumerate(syn.names) if not (folder / n).is_file()]
        labels = torch.zeros(syn.images.shape, dtype=torch.int64)
        if todo:
            model = self._teacher()
            pred = segment(model, syn.images[todo], self.box, self.factor, self.opt.precision,
                           self.opt.batch_size)
            for j, i in enumerate(todo):
                native = inverse_labels(pred[j, 0].numpy(), syn.infos[i]).astype(np.uint8)
                write_nifti(folder / syn.names[i], native, syn.affines[i], dtype=np.uint8)
        for i, name in enumerate(syn.names):
            scan = read_scan(syn.images_paths[i], self.opt.volume_index)
            lab = read_label(folder / name, scan)
            labels[i, 0] = torch.from_numpy(preprocess_labels(lab, self.opt.shape, 1))
        return syn.with_labels(labels)

    def synthetic_pool(self) -> tuple[SegSet, dict]:
        """Labelled synthetic scans that pass the quality gate, and the gate's summary."""
        src = Path(self.opt.synthetic)
        known = self.real.labels[self.split.train + self.split.val]
        gate = QualityGate.fit(known, margin=self.opt.gate_margin)
        if not src.exists():
            raise RatganError(f"synthetic source {src} does not exist.")
        records: list[dict] = []
        accepted: list[SegSet] = []

        def gate_set(entries: list, tag: str) -> None:
            has = all(e.label is not None for e in entries)
            self.label_mode = self._resolve_labels(has, src)
            syn = load_set(entries, self.opt.shape, self.opt.volume_index,
                           with_labels=self.label_mode == "joint",
                           progress=self.opt.progress, desc=f"synthetic {tag}")
            syn = self._label(syn)
            res = gate.check(syn.labels)
            for name, ok, frac, why in zip(syn.names, res.accepted, res.fractions,
                                           res.reasons):
                records.append({"file": name, "round": tag, "accepted": bool(ok),
                                "fractions": dict(zip(FRACTIONS, map(float, frac))),
                                "reason": why})
            if res.accepted.any():
                accepted.append(syn.subset(np.flatnonzero(res.accepted)))

        if is_run_folder(src):
            from ratgan.generation import generate_scans

            n_ok, n_all = 0, 0
            for rnd in range(MAX_ROUNDS):
                if n_ok >= self.needed:
                    break
                folder = self.out / "synthetic" / f"round-{rnd:02d}"
                if not (folder / "manifest.json").is_file():
                    rate = max(n_ok / n_all, 0.2) if n_all else 0.8
                    n = max(8, math.ceil((self.needed - n_ok) / rate * 1.1))
                    self.log(f"generating {n} synthetic scans from {src} into {folder}")
                    reference = self.opt.reference or str(self.real.images_paths[0])
                    generate_scans(src, n, folder, seed=1000 + rnd, reference=reference,
                                   device=self.opt.device, progress=self.opt.progress,
                                   prefix=f"r{rnd:02d}")
                before = len(records)
                gate_set(find_entries(folder), f"round-{rnd:02d}")
                n_all = len(records)
                n_ok = sum(r["accepted"] for r in records)
                self.log(f"round {rnd}: {sum(r['accepted'] for r in records[before:])} of "
                         f"{n_all - before} scans accepted")
        else:
            gate_set(find_entries(src), "folder")
        n_ok = sum(r["accepted"] for r in records)
        summary = {"acceptance_rate": n_ok / max(len(records), 1), "n_checked": len(records),
                   "n_accepted": n_ok, "labels": self.label_mode, "gate": gate.to_dict(),
                   "scans": records}
        write_json(self.out / "quality_gate.json", summary)
        self.log(f"quality gate: {n_ok} of {len(records)} synthetic scans accepted "
                 f"({summary['acceptance_rate']:.0%}), labels from {self.label_mode}")
        if not accepted:
            raise RatganError(f"no synthetic scan from {src} passed the quality gate; see "
                              f"{self.out / 'quality_gate.json'}.")
        return concat(accepted), summary

    def _resolve_labels(self, has_labels: bool, src: Path) -> str:
        want = self.opt.labels
        if want == "joint" and not has_labels:
            raise RatganError(f"--labels joint needs a label map for every synthetic scan "
                              f"(in {src}/labels/, or a run trained with label channels).")
        if want == "auto":
            return "joint" if has_labels else "teacher"
        return want

    # ------------------------------------------------------------------ runs

    def plans(self) -> list[PlannedTest]:
        """Every (test, seed) of the benchmark, seed-major."""
        out = []
        for seed in range(self.opt.seeds):
            out += build_plan(self.split, len(self.pool), seed, self.opt.tests)
        return out

    def run_one(self, p: PlannedTest) -> dict:
        """Train and score one (test, seed)."""
        xr, yr = self.real_lo
        parts_x = [xr[p.real]] if p.real else []
        parts_y = [yr[p.real]] if p.real else []
        if p.synthetic:
            xs, ys = self.pool_lo
            parts_x.append(xs[p.synthetic])
            parts_y.append(ys[p.synthetic])
        x, y = torch.cat(parts_x), torch.cat(parts_y)
        augment = None
        if p.augment:
            from ratgan.config import AugmentConfig
            from ratgan.data.augment import BatchAugmenter

            tr = tuple(v / self.factor for v in AugmentConfig().translate_range)
            augment = BatchAugmenter(AugmentConfig(mode="all", translate_range=tr),
                                     seed=1000 * p.seed + p.number)
        res = train_segmenter(x, y, xr[self.split.val], yr[self.split.val],
                              self.opt.net(self.box),
                              self.opt.settings(), seed=1000 * p.seed + p.number,
                              augment=augment, progress=self.opt.progress,
                              desc=f"test {p.number} seed {p.seed}")
        t = time.perf_counter()
        test = self.real.subset(self.split.test)
        pred = segment(res.model, test.images, self.box, self.factor, self.opt.precision,
                       self.opt.batch_size)
        scores = dice_scores(pred, test.labels)
        return {"test": p.number, "seed": p.seed, "name": p.name, "paper": p.paper,
                "n_real": len(p.real), "n_synthetic": len(p.synthetic), "augment": p.augment,
                "scores": summarize(scores),
                "per_scan": {k: [None if np.isnan(v) else float(v) for v in vals]
                             for k, vals in scores.items()},
                "epochs": res.epochs, "steps": res.steps, "best_epoch": res.best_epoch,
                "best_val_loss": res.best_val_loss,
                "train_seconds": round(res.seconds, 2),
                "seconds": round(res.seconds + time.perf_counter() - t, 2),
                "val_loss": [round(h["val_loss"], 5) for h in res.history]}

    def write_plan(self, plans: list[PlannedTest]) -> None:
        """plan.json: the scans each (test, seed) trains on, by file name."""
        rows = [{"test": p.number, "seed": p.seed, "name": p.name, "paper": p.paper,
                 "augment": p.augment, "real": [self.real.names[i] for i in p.real],
                 "synthetic": [self.pool.names[i] for i in p.synthetic]} for p in plans]
        write_json(self.out / "plan.json", {
            "test_split": [self.real.names[i] for i in self.split.test],
            "val_split": [self.real.names[i] for i in self.split.val], "runs": rows})

    def run(self) -> dict:
        """Run every pending (test, seed), then write the reports; returns results.json."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        self.setup()
        plans = self.plans()
        self.write_plan(plans)
        runs = read_runs(self.out)
        done = {(r["test"], r["seed"]) for r in runs}
        todo = [p for p in plans if (p.number, p.seed) not in done]
        if done:
            self.log(f"{len(plans) - len(todo)} of {len(plans)} (test, seed) runs already "
                     f"finished in {self.out / 'runs.json'}; skipping them")
        bar = tqdm(todo, desc="segbench", unit="run", disable=not self.opt.progress)
        for p in bar:
            bar.set_postfix(test=p.number, seed=p.seed, data=p.name)
            record = self.run_one(p)
            runs = [r for r in read_runs(self.out)
                    if (r["test"], r["seed"]) != (p.number, p.seed)] + [record]
            runs.sort(key=lambda r: (r["seed"], r["test"]))
            write_json(self.out / "runs.json", {"runs": runs})
            self.log(f"test {p.number} seed {p.seed} ({p.name}): global Dice "
                     f"{record['scores']['global']:.4f} after {record['epochs']} epochs, "
                     f"{record['seconds']:.0f} s")
        results = write_reports(self.out, runs, self.opt, wall=time.perf_counter() - t0,
                                ran=len(todo))
        return results


def run_benchmark(options: BenchOptions) -> dict:
    """Run (or resume) a benchmark and write its reports; returns the results."""
    return Benchmark(options).run()


# --------------------------------------------------------------------------- reports


def aggregate(runs: list[dict]) -> list[dict]:
    """Per test: mean, sample std and values over seeds of each score."""
    by_test: dict[int, list[dict]] = {}
    for r in runs:
        by_test.setdefault(r["test"], []).append(r)
    out = []
    for number in sorted(by_test):
        rs = sorted(by_test[number], key=lambda r: r["seed"])
        row = {"test": number, "name": rs[0]["name"], "paper": rs[0]["paper"],
               "n_real": rs[0]["n_real"], "n_synthetic": rs[0]["n_synthetic"],
               "augment": rs[0]["augment"], "seeds": [r["seed"] for r in rs],
               "epochs": [r["epochs"] for r in rs],
               "seconds": [r["seconds"] for r in rs], "scores": {}}
        for s in SCORES:
            v = np.array([r["scores"][s] for r in rs], dtype=float)
            row["scores"][s] = {"mean": float(np.nanmean(v)),
                                "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
                                "values": v.tolist()}
        out.append(row)
    return out


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
        for r, m in zip(rows, means):
            cell = f"{m:.4f} ± {r['scores'][s]['std']:.4f}"
            cells.append(f"**{cell}**" if m == best else cell)
        label = "Global Dice" if s == "global" else f"{s} Dice"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = next((r for r in rows if r["test"] == 1), None)
    if base is not None:
        b = base["scores"]["global"]["mean"]
        lines.append("| Δ global vs Test1 | " + " | ".join(
            f"{r['scores']['global']['mean'] - b:+.4f}" for r in rows) + " |")
    lines.append("| Paper's global Dice | " + " | ".join(
        f"{PAPER_TABLE4['global'][r['test'] - 1]:.4f}" for r in rows) + " |")
    return "\n".join(lines) + "\n"


def conclusion(rows: list[dict]) -> str:
    """One honest sentence or two on whether synthetic scans helped."""
    by = {r["test"]: r for r in rows}
    if 1 not in by:
        return "Test 1 (real scans only) has not been run, so there is no baseline to compare."
    base = by[1]["scores"]["global"]
    mixed = [by[t] for t in (2, 3, 4, 5) if t in by]
    parts = []
    if mixed:
        best = max(mixed, key=lambda r: r["scores"]["global"]["mean"])
        d = best["scores"]["global"]["mean"] - base["mean"]
        noise = math.hypot(base["std"], best["scores"]["global"]["std"])
        seeds = min(len(base["values"]), len(best["scores"]["global"]["values"]))
        if seeds < 2:
            verdict = "cannot be judged with one seed (no seed-to-seed spread)"
        else:
            verdict = ("helped" if d > noise else "hurt" if d < -noise else
                       "made no difference beyond the seed-to-seed spread")
        parts.append(f"Adding synthetic scans to the real ones {verdict}: the best mix, test "
                     f"{best['test']} ({best['name']}), scored a global Dice of "
                     f"{best['scores']['global']['mean']:.4f} against {base['mean']:.4f} for "
                     f"real scans only (difference {d:+.4f}, combined seed std {noise:.4f}).")
    if 10 in by:
        d = by[10]["scores"]["global"]["mean"] - base["mean"]
        parts.append(f"Conventional augmentation (test 10) changed the global Dice by {d:+.4f}.")
    syn = [by[t] for t in (6, 7) if t in by]
    if syn:
        d = max(r["scores"]["global"]["mean"] for r in syn) - base["mean"]
        parts.append(f"Synthetic scans alone (tests 6-7) scored at best {d:+.4f} against "
                     "test 1.")
    return " ".join(parts)


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
        ax.bar(xs + (k - 1.5) * width, means, width, yerr=stds, capsize=2,
               label="global" if s == "global" else s)
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


def write_reports(out: Path, runs: list[dict], opt: BenchOptions, wall: float = 0.0,
                  ran: int = 0) -> dict:
    """results.json, table.md and dice.png from the finished runs."""
    out = Path(out)
    rows = aggregate(runs)
    state = json.loads((out / "segbench.json").read_text())
    counts = state["counts"]
    gate = state["quality_gate"]
    header = (f"Segmentation benchmark (paper Table 4) on `{opt.real}`: {counts['real_labelled']} "
              f"labelled real scans split into {counts['train']} training, {counts['val']} "
              f"validation and {counts['test']} test scans; synthetic scans from "
              f"`{opt.synthetic}` labelled by {state['labels']}, {gate['n_accepted']} of "
              f"{gate['n_checked']} accepted by the quality gate "
              f"({gate['acceptance_rate']:.0%}). Mode {opt.mode}: U-Net "
              f"{list(opt.channels)} on {state['network_input']} inputs"
              f"{' (brain box ' + str(state['box']) + ')' if state['box'] else ''}, "
              f"at most {opt.max_steps or 'unlimited'} steps, Dice on whole test volumes; "
              f"{len({r['seed'] for r in runs})} seed(s), mean ± std over seeds.\n")
    text = conclusion(rows)
    md = table_markdown(rows, header) + ("\n" + text + "\n" if text else "")
    total = sum(r["seconds"] for r in runs)
    results = {"options": opt.fingerprint(), "counts": counts, "labels": state["labels"],
               "quality_gate": gate, "tests": rows, "conclusion": text,
               "paper_table4": PAPER_TABLE4,
               "seconds": {"all_runs": round(total, 1), "this_call": round(wall, 1),
                           "runs_this_call": ran}}
    write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", md)
    if rows:
        bar_chart(rows, out / "dice.png")
    return results
