"""`ratgan demo`: the whole pipeline on the built-in phantom cohort, with a report.

phantom cohort (training + held-out subjects) -> train the `demo` preset on the training
subjects, tracking quality -> generate scans -> evaluate against the training scans with the
held-out ones as the real reference -> report.md.  Like the CLI, this module sits on top of
every stage; re-running it on the same folder continues an interrupted training run instead of
starting again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ratgan.atomic import atomic_write_text
from ratgan.config import Config, load_config
from ratgan.data.io import list_scans, read_scan
from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
from ratgan.runs import run_paths
from ratgan.training import checkpoint as ckpt


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], progress: bool) -> Iterator[None]:
    """Time a stage into ``timings`` and announce it."""
    if progress:
        print(f"[ratgan demo] {name} ...", flush=True)
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0


def run_demo(
    out: str | Path,
    subjects: int = 64,
    iterations: int | None = None,
    n_synthetic: int = 32,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    heldout: int = 32,
    config: str = "demo",
    codes: str = "kde",
    kde_width: float | None = None,
) -> Path:
    """Run the demo into ``out`` and return the path of its Markdown report.

    ``subjects`` phantom scans train the GAN; ``heldout`` more subjects of the same cohort,
    never seen by it, are the real reference of the evaluation.  The scans are generated with
    ``codes`` (``kde``: a kernel density of width ``kde_width``, default 1.5, around the
    encoder's codes of the training scans, measured closer to the held-out scans than prior
    codes; ``prior``).  A ``kde_width`` with ``prior`` codes raises RatganError, as the
    command line does, before any work.
    """
    from ratgan.evaluation.tracking import quality_probe_factory
    from ratgan.generation import generate_scans
    from ratgan.generation.code_density import kde_width_for
    from ratgan.training.figures import plot_loss_curves, plot_quality_curves
    from ratgan.training.run import train

    width = kde_width_for(codes, kde_width)  # refused before any work, as the command line does
    out = Path(out)
    # the stages lock their own folders inside this one (the lock is re-entrant per process)
    with FolderLock(out, "ratgan demo") as lock:
        timings: dict[str, float] = {}
        data_dir, run_dir, synth_dir = out / "phantom", out / "run", out / "synthetic"

        overrides: dict = {"train.seed": seed, "train.device": device}
        if iterations is not None:
            overrides["train.iterations"] = iterations
        cfg = load_config(config, overrides)
        _refuse_another_demo(out, cfg, seed, subjects + heldout)
        lock.create()

        with _stage("phantom cohort", timings, progress):
            train_dir, held_dir = demo_cohort(data_dir, subjects, heldout, seed, progress)

        with _stage("training", timings, progress):
            # an earlier demo's run goes on; one killed before its first checkpoint starts again
            resume = bool(ckpt.list_checkpoints(run_dir)) or run_paths(run_dir).data.is_file()
            train(
                cfg,
                train_dir,
                run_dir,
                resume=resume,
                progress=progress,
                probe_factory=quality_probe_factory,
            )
            paths = run_paths(run_dir)
            plot_loss_curves(paths.metrics, paths.loss_curves)
            plot_quality_curves(paths.metrics, paths.quality_curves)

        with _stage("generation", timings, progress):
            shutil.rmtree(synth_dir, ignore_errors=True)  # the demo's own scans of an earlier run
            generate_scans(
                run_dir,
                n_synthetic,
                synth_dir,
                seed=seed,
                device=device,
                progress=progress,
                codes=codes,
                kde_width=kde_width,
            )

        with _stage("figures", timings, progress):
            figures = _figures(held_dir, synth_dir, out / "figures")

        with _stage("evaluation", timings, progress):
            evaluation = _evaluate(
                train_dir, held_dir, synth_dir, out / "evaluation", seed, progress
            )

        report = out / "report.md"
        sampling = (
            f"codes from a kernel density of width {width:g} around the encoder's codes of "
            "the training scans (`--codes kde`; the memorisation table below checks them for "
            "near-copies)"
            if codes == "kde"
            else "codes from the prior N(0, I)"
        )
        _write_report(
            report, cfg, run_dir, figures, evaluation, timings, subjects, heldout, n_synthetic,
            sampling,
        )  # fmt: skip
        return report


def _refuse_another_demo(out: Path, cfg: Config, seed: int, cohort_size: int) -> None:
    """An earlier demo in ``out`` goes on (more iterations) only if it is the same demo: its
    run would keep its own config and train on its own cohort whatever was asked now."""
    from ratgan.training.run_folder import settings_a_resume_would_ignore

    run_dir = out / "run"
    differ = settings_a_resume_would_ignore(run_dir, cfg)
    recorded = _recorded(out / "phantom" / "phantom.json")
    if run_paths(run_dir).config.is_file() and recorded not in (None, (seed, cohort_size)):
        differ.append("the phantom cohort (--seed, --subjects, --heldout)")
    if differ:
        raise RatganError(
            f"{out} holds an earlier demo that differs from this one in {', '.join(differ)}; "
            f"choose another --out, or delete {out} to start again."
        )


def demo_cohort(
    data_dir: Path, subjects: int, heldout: int, seed: int, progress: bool
) -> tuple[Path, Path]:
    """Training and held-out subjects of one phantom cohort, in two folders.

    Subject i depends only on (seed, i): the held-out subjects are subjects+0 ...
    subjects+heldout-1 of the same cohort, written to their own folder.  A cohort already in
    ``data_dir`` is reused only when its ``phantom.json`` records the same seed and size;
    that record is removed before any file is moved and written back last, so files left by
    an interrupted move are never reused.
    """
    from ratgan.data.phantom import write_cohort

    train_dir, held_dir = data_dir / "train", data_dir / "heldout"
    record = data_dir / "phantom.json"
    if (
        _recorded(record) != (seed, subjects + heldout)
        or _count(train_dir) != subjects
        or _count(held_dir) != heldout
    ):
        record.unlink(missing_ok=True)
        staging = data_dir / "all"
        write_cohort(staging, subjects=subjects + heldout, seed=seed, progress=progress)
        for folder, names in (
            (train_dir, range(subjects)),
            (held_dir, range(subjects, subjects + heldout)),
        ):
            for kind in ("images", "labels"):
                (folder / kind).mkdir(parents=True, exist_ok=True)
                for old in (folder / kind).glob("sub-*.nii.gz"):
                    old.unlink()
                for i in names:
                    name = f"sub-{i:03d}.nii.gz"
                    os.replace(staging / kind / name, folder / kind / name)
        for kind in ("images", "labels"):
            (staging / kind).rmdir()
        os.replace(staging / "phantom.json", record)
        staging.rmdir()
    return train_dir, held_dir


def _recorded(record: Path) -> tuple[int, int] | None:
    """The seed and size a cohort's ``phantom.json`` records (None when unreadable)."""
    try:
        manifest = json.loads(record.read_text())
        return int(manifest["seed"]), int(manifest["subjects"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _count(folder: Path) -> int:
    images = folder / "images"
    return len(list(images.glob("sub-*.nii.gz"))) if images.is_dir() else -1


def _figures(data_dir: Path, synth_dir: Path, fig_dir: Path) -> dict[str, Path]:
    from ratgan.viz import montage, orthogonal_views

    fig_dir.mkdir(parents=True, exist_ok=True)
    real = [read_scan(e.image) for e in list_scans(data_dir)[:3]]
    synth = [read_scan(e.image) for e in list_scans(synth_dir)[:3]]
    zooms = tuple(float(z) for z in real[0].header.get_zooms()[:3])
    views = orthogonal_views(
        [s.data for s in real + synth],
        fig_dir / "real_vs_synthetic.png",
        titles=[f"real {i + 1}" for i in range(len(real))]
        + [f"synthetic {i + 1}" for i in range(len(synth))],
        zooms=zooms,
    )
    axial = montage(
        [[s.data] for s in real + synth],
        fig_dir / "axial_montage.png",
        row_titles=[f"real {i + 1}" for i in range(len(real))]
        + [f"synthetic {i + 1}" for i in range(len(synth))],
        axis=2,
        n_slices=8,
    )
    return {"views": views, "axial": axial}


def _evaluate(
    train_dir: Path, held_dir: Path, synth_dir: Path, eval_dir: Path, seed: int, progress: bool
) -> dict:
    """The paper's metrics for the demo (quick settings), held-out scans as the real row."""
    from ratgan.evaluation import evaluate_sets

    # The anatomy feature space needs a segmentation network fitted on the real (training)
    # scans: about 11 minutes on a 2-core CPU, beyond the demo's budget, so ratgan ships the
    # network fitted on the default demo cohort (anatomy.BUNDLED_DIR); another cohort (other
    # --seed or --subjects) fits its own, and the report gives the time.
    return evaluate_sets(
        real=train_dir,
        synthetic={"demo": synth_dir},
        out=eval_dir,
        seed=seed,
        progress=progress,
        quick=True,
        heldout=held_dir,
        anatomy=True,
    )


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _write_report(
    report: Path,
    cfg,
    run_dir: Path,
    figures: dict[str, Path],
    evaluation: dict,
    timings: dict[str, float],
    subjects: int,
    heldout: int,
    n_synthetic: int,
    sampling: str,
) -> None:
    from ratgan.training.figures import read_metrics

    root = report.parent
    paths = run_paths(run_dir)
    last = read_metrics(paths.metrics, kind=None)[-1]
    options = [
        name
        for name, on in (
            ("EMA of G", cfg.train.ema_half_life_images > 0),
            ("G output noise", cfg.model.g_output_noise),
            ("adaptive critic augmentation", cfg.ada.enabled),
            ("standardised encoder codes", cfg.model.e_standardise and not cfg.model.e_whiten),
            ("standardised and whitened encoder codes", cfg.model.e_whiten),
            ("minibatch std in D", cfg.model.d_mbstd_group > 0),
        )
        if on
    ]
    beta1, beta2 = cfg.optim.betas
    steps = "G stepped twice" if cfg.optim.double_generator_step else "one G step"
    options.append(f"Adam betas {beta1:g} / {beta2:g}, {steps} per iteration")
    lines = [
        "# ratgan demo report",
        "",
        (
            f"Built-in phantom cohort: {subjects} rat-brain EPI scans (64x64x40) to train on and "
            f"{heldout} held-out scans of the same cohort that the GAN never sees. The "
            f"`{cfg.name}` preset ({'x'.join(map(str, cfg.model.volume_shape))}, "
            f"latent {cfg.model.latent_dim}, "
            f"{cfg.train.iterations} iterations, batch {cfg.train.batch_size}, "
            f"{cfg.train.precision}"
            + (f"; {', '.join(options)}" if options else "")
            + f"), {n_synthetic} synthetic scans, {sampling}."
        ),
        "",
        "## Real and synthetic scans",
        "",
        f"![orthogonal views]({_rel(figures['views'], root)})",
        "",
        f"![axial slices]({_rel(figures['axial'], root)})",
        "",
        "## Training",
        "",
        f"![loss curves]({_rel(run_paths(run_dir).loss_curves, root)})",
        "",
        *(
            [f"![quality curves]({_rel(paths.quality_curves, root)})", ""]
            if paths.quality_curves.is_file()
            else []
        ),
        f"Last logged losses (iteration {last['iteration']}): "
        + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("iteration", "seconds"))
        + ".",
        "",
    ]
    lines += ["## Evaluation", "", evaluation.get("table_markdown", ""), ""]
    for title, path in evaluation.get("figures", {}).items():
        lines += [f"![{title}]({_rel(Path(path), root)})", ""]
    lines += ["## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += [f"| total | {sum(timings.values()):.1f} |", ""]
    atomic_write_text(report, "\n".join(lines))
