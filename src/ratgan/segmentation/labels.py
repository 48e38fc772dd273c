"""The synthetic pool of the benchmark: scans generated or read, labelled, then screened.

Label sources (``--labels``):

* ``atlas`` (default): :mod:`ratgan.segmentation.atlas`, K labelled real training scans
  registered to each synthetic scan with ANTs; independent of the U-Nets under test.  Its own
  accuracy is measured by labelling the held-out real test scans the same way.
* ``teacher``: a U-Net trained on the real training split (circular: it shares the data and
  the architecture of test 1's networks, so a gain may be self-training).
* ``joint``: the label maps a joint model generated with each scan.

A GAN run given as the synthetic source must not have seen a real test scan: its data.json
is compared with the test split by path and by file content.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ratgan.atomic import atomic_write_json
from ratgan.digests import FileDigests, shared_files
from ratgan.errors import RatganError
from ratgan.runs import is_run_folder, read_run_data
from ratgan.segmentation.data import SegSet, check_one_space, concat, find_entries, load_set
from ratgan.segmentation.files import check_unique_names
from ratgan.segmentation.quality_gate import FRACTIONS, GateResult, QualityGate

from ratgan.segmentation.state import LABEL_SOURCES, BenchState

MAX_ROUNDS = 5
"""Generation rounds from a run folder before giving up on filling the pool."""


@dataclass
class Pool:
    """Labelled synthetic scans that passed the quality gate, and how they were obtained."""

    scans: SegSet
    labels: str
    """atlas, teacher, joint, or none (no synthetic scans needed)."""
    gate: dict[str, Any]
    atlas: dict[str, Any] | None = None


def empty_pool(shape: tuple[int, int, int]) -> Pool:
    """The pool of a benchmark whose tests need no synthetic scans."""
    return Pool(
        SegSet(torch.zeros(0, 1, *shape), torch.zeros(0, 1, *shape, dtype=torch.long), []),
        "none",
        {"acceptance_rate": 0.0, "n_checked": 0, "n_accepted": 0},
    )


# ----------------------------------------------------------------------------- overlap


def gan_overlap(
    source: str | Path, held_out: list[Path], digest: FileDigests | None = None
) -> dict[str, Any]:
    """Which of the ``held_out`` real scans (test and validation) the synthetic ``source``
    holds, or, for a run folder, its GAN was trained on: the same file, the same bytes or the
    same image (voxel values in RAS order, whatever the file's format or name).

    A run's training scans are compared as they are on disk and by the digests its data.json
    recorded at training, so moving them afterwards hides nothing; ``unverified`` counts
    training scans that are gone and were recorded without a digest. (The check used to
    compare the files' bytes at their recorded paths only, and a folder of scans not at all:
    real test scans passed as synthetic ones were trained on without a word.)
    """
    from ratgan.data.io import scan_content_sha256

    digest = digest or FileDigests()
    image = FileDigests(scan_content_sha256)
    if is_run_folder(source):
        entries = read_run_data(source).entries
        present = [Path(e.image) for e in entries if Path(e.image).is_file()]
        recorded = {e.sha256 for e in entries if e.sha256}
        unverified = sum(1 for e in entries if not Path(e.image).is_file() and not e.sha256)
        kind = "run"
    else:
        present = [Path(e.image) for e in find_entries(source)]
        recorded, unverified, kind = set(), 0, "folder"
    same = {p for p, _ in shared_files(held_out, present, digest)}  # path, or bytes
    same |= {p for p in held_out if digest(p) in recorded}
    by_image = {image(p) for p in present}
    files = [str(p) for p in held_out if p in same or image(p) in by_image]
    return {"checked": True, "source": kind, "files": files, "unverified": unverified}


#: Written by ``ratgan label`` beside its label maps: which labelled scans made them.
ATLAS_RECORD = ".atlases.json"


def record_atlases(out: Path, atlases: list) -> None:
    """Add to ``out/.atlases.json`` the atlases (scan entries) behind the label maps in
    ``out``, with the SHA-256 of their files and of their images, so a benchmark can tell
    maps made from its test scans (a second ``ratgan label`` into ``out`` adds its own)."""
    from ratgan.data.io import scan_content_sha256
    from ratgan.digests import file_sha256

    path = Path(out) / ATLAS_RECORD
    known = json.loads(path.read_text()).get("atlases", []) if path.is_file() else []
    new = [
        {
            "image": str(a.image),
            "sha256": file_sha256(a.image),
            "image_sha256": scan_content_sha256(a.image),
        }
        for a in atlases
    ]
    seen = {a["sha256"] for a in known}
    atomic_write_json(path, {"atlases": known + [a for a in new if a["sha256"] not in seen]})


def check_label_atlases(
    label_paths: list[Path], held_out: list[Path], allow: bool, digest: FileDigests
) -> None:
    """Raise RatganError (unless ``allow``) when label maps written by ``ratgan label`` were
    made with atlases among the ``held_out`` real scans: each map carries its atlases' labels,
    so the synthetic tests would be taught the test scans' anatomy. Folders without the record
    pass (nothing says how their maps were made)."""
    from ratgan.data.io import scan_content_sha256

    records = [
        folder / ATLAS_RECORD
        for folder in sorted(
            {Path(p).parent for p in label_paths} | {Path(p).resolve().parent for p in label_paths}
        )
        if (folder / ATLAS_RECORD).is_file()
    ]
    if not records:
        return
    held = {digest(p): p for p in held_out}
    held.update({scan_content_sha256(p): p for p in held_out})  # the image saved another way
    used: dict[str, Path] = {}
    for record in records:
        for atlas in json.loads(record.read_text()).get("atlases", []):
            for key in (atlas.get("sha256"), atlas.get("image_sha256")):
                if key in held:
                    used[key] = record.parent
    if used and not allow:
        names = ", ".join(sorted({held[d].name for d in used}))
        raise RatganError(
            f"the label maps in {next(iter(used.values()))} were made by ratgan label with "
            f"atlases that are real test or validation scans ({names}); label the synthetic "
            "scans with atlases from the training split only, or pass --allow-overlap."
        )


def check_synthetic_source(source: str | Path, needed: int, n_train: int) -> None:
    """Raise RatganError, before any labelling, for a synthetic source that does not exist, a
    folder of an unfinished ``ratgan generate`` (its manifest.json not complete) or a folder
    holding fewer scans than the tests need even if the gate accepted every one."""
    from ratgan.generation.output import refuse_unfinished

    src = Path(source)
    if not src.exists():
        raise RatganError(f"synthetic source {src} does not exist.")
    if is_run_folder(src):
        return
    if src.is_dir():
        refuse_unfinished([src], "--synthetic")
    n = len(find_entries(src))
    if n < needed:
        raise RatganError(
            f"synthetic folder {src} holds {n} scans but the tests need {needed} for "
            f"{n_train} real training scans, before the quality gate rejects any; add scans "
            "or pass a run folder so that more are generated."
        )


def check_overlap(
    source: str | Path, held_out: list[Path], allow: bool, digest: FileDigests | None = None
) -> dict[str, Any]:
    """:func:`gan_overlap`, raising RatganError on any overlap unless ``allow``."""
    ov = gan_overlap(source, held_out, digest)
    if ov["files"] and not allow:
        names = ", ".join(Path(f).name for f in ov["files"])
        what = (
            f"the GAN run {source} was trained on {len(ov['files'])} of the real test and "
            f"validation scans ({names}), so its synthetic scans may copy them; train it on "
            "the training split only"
            if ov["source"] == "run"
            else f"the synthetic folder {source} holds {len(ov['files'])} of the real test and "
            f"validation scans ({names}), which would be trained on; leave them out"
        )
        raise RatganError(f"{what}, or pass --allow-overlap.")
    ov["allowed"] = bool(allow)
    return ov


# ----------------------------------------------------------------------------- labellers


def atlas_labels(state: BenchState, syn: SegSet, folder: str = "labels") -> SegSet:
    """``syn`` labelled by the atlases (label maps written to OUT/atlas/<folder>)."""
    from ratgan.segmentation.atlas import label_scans

    paths = label_scans(
        list(syn.images_paths),
        state.atlases,
        state.out / "atlas" / folder,
        state.atlas_params,
        cache_dir=state.out / "atlas" / "cache",
        workers=state.opt.workers,
        volume_index=state.opt.volume_index,
        progress=state.opt.progress,
        desc=f"atlas labels ({folder})",
    )
    return syn.with_labels(_read_native_labels(state, syn, paths))


def atlas_accuracy(state: BenchState) -> dict[str, Any]:
    """Dice per tissue of the atlas labels of the held-out real test scans vs their truth."""
    from ratgan.segmentation.metrics import dice_scores

    test = state.real.subset(state.split.test)
    labelled = atlas_labels(state, test, folder="test-labels")
    scores = dice_scores(labelled.label_maps(), test.label_maps())
    return {
        s: {
            "mean": float(np.nanmean(v)),
            "std": float(np.nanstd(v, ddof=1)),
            "per_scan": [float(x) for x in v],
        }
        for s, v in scores.items()
        if s in ("global", "GM", "WM", "CSF")
    }


def teacher_labels(state: BenchState, syn: SegSet) -> SegSet:
    """``syn`` labelled by the teacher U-Net (label maps written to OUT/teacher/labels by file
    name, so two scans may not share one).  A label map is reused only for a scan of the same
    content labelled by the same teacher: OUT/teacher/labels.json records the SHA-256 of each
    scan labelled and the teacher's data, settings and the volume index read."""
    from ratgan.data.io import write_nifti
    from ratgan.data.transforms import inverse_labels
    from ratgan.segmentation.teacher import (
        cached_teacher,
        data_digest,
        teacher_key,
        teacher_recipe,
    )
    from ratgan.segmentation.train import segment

    check_unique_names(syn.images_paths)
    folder = state.out / "teacher" / "labels"
    record = state.out / "teacher" / "labels.json"
    train, val = state.real.subset(state.split.train), state.real.subset(state.split.val)
    recipe = teacher_recipe(
        state.opt.net(state.box),
        state.opt.settings(),
        state.opt.downsample,
        state.box,
        state.opt.split_seed,
    )
    data = data_digest(train, val)
    labeller = {"teacher": teacher_key(data, recipe), "volume_index": state.opt.volume_index}
    digests = [state.digest(p) for p in syn.images_paths]
    made = _labelled_scans(record, labeller)
    todo = [
        i
        for i, n in enumerate(syn.names)
        if not (folder / n).is_file() or made.get(n) != digests[i]
    ]
    if todo:
        state.log("training the teacher on the real training split (or reading it)")
        model = cached_teacher(
            state.out / "teacher" / "teacher.pt",
            train,
            val,
            state.opt.net(state.box),
            state.opt.settings(),
            state.opt.downsample,
            state.box,
            seed=state.opt.split_seed,
            progress=state.opt.progress,
            data=data,
        )
        pred = segment(
            model,
            syn.images[todo],
            state.box,
            state.opt.downsample,
            state.opt.precision,
            state.opt.batch_size,
        )
        # the record forgets these scans before their maps are overwritten: a map written for
        # new content must not pass for the old one's if the command dies before the end
        for i in todo:
            made.pop(syn.names[i], None)
        atomic_write_json(record, {"labeller": labeller, "scans": made})
        for j, i in enumerate(todo):
            native = inverse_labels(pred[j, 0].numpy(), syn.infos[i]).astype(np.uint8)
            write_nifti(folder / syn.names[i], native, syn.affines[i], dtype=np.dtype(np.uint8))
        made.update({syn.names[i]: digests[i] for i in todo})
        atomic_write_json(record, {"labeller": labeller, "scans": made})
    return syn.with_labels(_read_native_labels(state, syn, [folder / n for n in syn.names]))


def _labelled_scans(record: Path, labeller: dict[str, Any]) -> dict[str, str]:
    """File name -> SHA-256 of the scans whose teacher label maps are in OUT/teacher/labels
    (empty when the record is missing or damaged, or names another ``labeller``, as one
    written before the labeller was recorded does not: every scan is labelled again)."""
    try:
        saved = json.loads(record.read_text())
        scans, made_by = saved["scans"], saved.get("labeller")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return scans if isinstance(scans, dict) and made_by == labeller else {}


def _read_native_labels(state: BenchState, syn: SegSet, paths: list[Path]) -> torch.Tensor:
    from ratgan.data.io import read_label, read_scan
    from ratgan.data.transforms import preprocess_labels

    labels = torch.zeros(syn.images.shape, dtype=torch.int64)
    for i, path in enumerate(paths):
        scan = read_scan(syn.images_paths[i], state.opt.volume_index)
        labels[i, 0] = torch.from_numpy(
            preprocess_labels(read_label(path, scan), state.opt.shape, 1)
        )
    return labels


# ----------------------------------------------------------------------------- the pool


def _label_mode(want: str, has_labels: bool, src: Path) -> str:
    if want not in LABEL_SOURCES:
        raise RatganError(f"--labels must be one of {', '.join(LABEL_SOURCES)} (got {want!r}).")
    if want == "joint" and not has_labels:
        raise RatganError(
            f"--labels joint needs a label map for every synthetic scan "
            f"(in {src}/labels/, or a run trained with label channels)."
        )
    return want


def synthetic_pool(state: BenchState) -> Pool:
    """Generate (from a run folder) or read synthetic scans, label them, keep those that pass
    the quality gate; writes OUT/quality_gate.json."""
    opt = state.opt
    src = Path(opt.synthetic)
    check_synthetic_source(src, 0, len(state.split.train))
    gate = QualityGate.fit(
        state.real.label_maps()[state.split.train + state.split.val], margin=opt.gate_margin
    )
    records: list[dict] = []
    accepted: list[SegSet] = []

    def gate_set(entries: list, tag: str) -> None:
        mode = _label_mode(opt.labels, all(e.label is not None for e in entries), src)
        if mode != "joint":  # label maps are written by file name
            check_unique_names([e.image for e in entries])
        syn = load_set(
            entries,
            opt.shape,
            opt.volume_index,
            with_labels=mode == "joint",
            progress=opt.progress,
            desc=f"synthetic {tag}",
        )
        check_one_space(syn, "synthetic scan", like=state.real)
        if mode == "joint":
            held = [state.real.images_paths[i] for i in state.split.test + state.split.val]
            labels = [e.label for e in entries if e.label is not None]
            check_label_atlases(labels, held, opt.allow_overlap, state.digest)
        if mode == "atlas":
            _probe(state, syn, gate, records)
            syn = atlas_labels(state, syn)  # the probe's label maps come from the cache
        elif mode == "teacher":
            syn = teacher_labels(state, syn)
        res = gate.check(syn.label_maps())
        records.extend(_verdicts(syn, res, tag))
        if res.accepted.any():
            accepted.append(syn.subset(np.flatnonzero(res.accepted)))
        _stop_if_probe_failed(state, gate, records)

    if is_run_folder(src):
        _generate_rounds(state, src, records, gate_set)
    else:
        gate_set(find_entries(src), "folder")
    summary = _write_gate_summary(state, gate, records)
    n_ok = summary["n_accepted"]
    state.log(
        f"quality gate: {n_ok} of {len(records)} synthetic scans accepted "
        f"({summary['acceptance_rate']:.0%}), labels from {opt.labels}"
    )
    if not accepted:
        raise RatganError(
            f"no synthetic scan from {src} passed the quality gate; see "
            f"{state.out / 'quality_gate.json'}."
        )
    atlas = None
    if opt.labels == "atlas":
        atlas = {
            "k": opt.atlases,
            "params": state.atlas_params.to_dict(),
            "atlases": [a.image.name for a in state.atlases],
            "accuracy": atlas_accuracy(state),
        }
        acc = atlas["accuracy"]
        state.log(
            "atlas labeller on the held-out real test scans: Dice "
            + ", ".join(f"{k} {acc[k]['mean']:.4f}" for k in ("GM", "WM", "CSF"))
        )
    return Pool(concat(accepted), opt.labels, summary, atlas)


def _verdicts(syn: SegSet, res: GateResult, tag: str) -> list[dict]:
    """One quality_gate.json record per scan of ``syn``."""
    return [
        {
            "file": name,
            "round": tag,
            "accepted": bool(ok),
            "fractions": dict(zip(FRACTIONS, map(float, frac), strict=True)),
            "reason": why,
        }
        for name, ok, frac, why in zip(
            syn.names, res.accepted, res.fractions, res.reasons, strict=True
        )
    ]


def _write_gate_summary(state: BenchState, gate: QualityGate, records: list[dict]) -> dict:
    """OUT/quality_gate.json: the gate, every verdict and the acceptance rate."""
    n_ok = sum(r["accepted"] for r in records)
    summary = {
        "acceptance_rate": n_ok / max(len(records), 1),
        "n_checked": len(records),
        "n_accepted": n_ok,
        "labels": state.opt.labels,
        "gate": gate.to_dict(),
        "scans": records,
    }
    atomic_write_json(state.out / "quality_gate.json", summary)
    return summary


def _probe(state: BenchState, syn: SegSet, gate: QualityGate, records: list[dict]) -> None:
    """Before labelling a whole set with the atlases, label the first scans that complete the
    probe (``--gate-probe``, counted over every set labelled so far) and stop if none of the
    probe passes the gate: minutes of registrations would most likely end in an empty pool."""
    probe = state.opt.gate_probe
    k = probe - len(records)
    if probe == 0 or k <= 0 or k >= len(syn):  # no probe, done already, or no work saved
        return
    head = syn.subset(list(range(k)))
    res = gate.check(atlas_labels(state, head).label_maps())
    _stop_if_probe_failed(state, gate, records + _verdicts(head, res, "probe"))


def _stop_if_probe_failed(state: BenchState, gate: QualityGate, records: list[dict]) -> None:
    """Raise (after writing quality_gate.json) when at least ``--gate-probe`` synthetic scans
    have been labelled and none of them passed the gate."""
    probe, n = state.opt.gate_probe, len(records)
    if probe == 0 or n < probe or any(r["accepted"] for r in records):
        return
    _write_gate_summary(state, gate, records)
    # reasons read "GM fraction 0.765 outside [0.721, 0.757]; brain fraction ..."
    failing = Counter(part.split()[0] for r in records for part in r["reason"].split("; ") if part)
    common, count = failing.most_common(1)[0]
    # With no acceptance in n scans, the rate's one-sided 95% upper bound is 1 - 0.05^(1/n).
    bound = 1 - 0.05 ** (1 / n)
    raise RatganError(
        f"none of the {n} synthetic scans labelled so far passed the quality gate (the "
        f"{common} fraction was out of the real range in {count}), so the acceptance rate is below "
        f"{bound:.0%} with 95% confidence and segbench stops before labelling more; see "
        f"{state.out / 'quality_gate.json'}, or pass --gate-probe 0 to label every scan."
    )


def _check_round(state: BenchState, src: Path, folder: Path, reference: str) -> None:
    """Raise RatganError when a finished generation round in ``folder`` was made from another
    checkpoint than the run's newest one, or written with another reference scan than
    ``reference``: a benchmark stopped before it recorded its data would otherwise mix the
    scans of two checkpoints, or two headers and affines, in one pool."""
    from ratgan.generation.output import MANIFEST

    newest = set((state.data.get("synthetic") or {}).keys())
    try:
        settings = json.loads((folder / MANIFEST).read_text())["settings"]
        made, made_ref = settings["checkpoint"], settings.get("reference")
    except (OSError, ValueError, KeyError, TypeError):
        made, made_ref = None, None
    if newest and made not in newest:
        raise RatganError(
            f"{folder} holds scans generated from checkpoint {made} but the run {src} now "
            f"has the newest checkpoint {', '.join(sorted(newest))}; use a new --out to "
            "benchmark the run as it is now."
        )
    wanted = str(Path(reference).resolve())
    if made_ref != wanted:
        raise RatganError(
            f"{folder} holds scans written with the reference scan {made_ref} but this "
            f"benchmark writes them with {wanted}; use a new --out, or the first call's "
            "--reference."
        )


def _recorded_checkpoint(state: BenchState) -> str | None:
    """The run's checkpoint whose digest the benchmark recorded (``data['synthetic']``), or
    None when the run had none (generation then says so)."""
    recorded = sorted((state.data.get("synthetic") or {}).keys())
    return recorded[0] if recorded else None


def _generate_rounds(state: BenchState, src: Path, records: list[dict], gate_set) -> None:
    from ratgan.generation import generate_scans
    from ratgan.generation.output import is_complete_set

    opt = state.opt
    # the checkpoint recorded when the benchmark started, not the run's newest one now: a run
    # still training saves newer ones meanwhile, whose scans would join the pool unrecorded
    checkpoint = _recorded_checkpoint(state)
    n_ok, n_all = 0, 0
    for rnd in range(MAX_ROUNDS):
        folder = state.out / "synthetic" / f"round-{rnd:02d}"
        complete = is_complete_set(folder)
        # a round an earlier call finished stays in the pool even when enough scans passed
        # without it: finished runs may have trained on its scans, and a call asking for fewer
        # tests would otherwise drop them, and their verdicts, from the pool and the records
        if n_ok >= state.needed and not complete:
            break
        reference = opt.reference or str(state.real.images_paths[0])
        if complete:
            _check_round(state, src, folder, reference)
        else:
            rate = max(n_ok / n_all, 0.2) if n_all else 0.8
            n = max(8, math.ceil((state.needed - n_ok) / rate * 1.1))
            state.log(f"generating {n} synthetic scans from {src} into {folder}")
            generate_scans(
                src,
                n,
                folder,
                seed=1000 + rnd,
                reference=reference,
                checkpoint=checkpoint,
                device=opt.device,
                progress=opt.progress,
                prefix=f"r{rnd:02d}",
            )
        before = len(records)
        gate_set(find_entries(folder), f"round-{rnd:02d}")
        n_all = len(records)
        n_ok = sum(r["accepted"] for r in records)
        state.log(
            f"round {rnd}: {sum(r['accepted'] for r in records[before:])} of "
            f"{n_all - before} scans accepted"
        )
