"""Branch a run at one of its checkpoints into a new run folder with some settings changed.

    python benchmarks/branch_run.py RUN --iteration 8011 --out BRANCH \
        --set train.ema_half_life_images=200 [--set optim.lr=1.0e-4 ...] [--reinit G.output_noise]
    ratgan train --resume --out BRANCH --iterations 9011

An ablation on one trajectory: two branches of the same checkpoint that change only, say, the
EMA's half-life share G's raw weights bit for bit (the EMA does not feed back into training),
so their difference is the change alone, not a second seed.  ``ratgan train --resume`` refuses
to change a stored config (a resumed run continues exactly); this script writes a new run
folder instead: the source's config with the ``--set`` values (validated like any config),
its data record, its metrics up to the checkpoint, and the checkpoint itself.  An ``optim.lr``
change is also written into the checkpoint's optimiser states, since resuming restores the
learning rate from them.  ``--reinit G.output_noise`` starts the named parameters afresh (their
initial values in the raw and EMA weights, no optimiser state), for a change that alters what
they mean; parameters that a ``--set`` adds (a new option's) start afresh the same way, those
it removes are dropped, and the optimiser states are re-laid out by parameter name.  The
source run is only read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, values read as YAML (``200`` is an int, ``[0.5, 0.9]`` a list).

    PyYAML follows YAML 1.1, which reads ``1e-4`` (no dot) as a string; such a value that
    Python reads as a number becomes that number.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1.0e-4")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key] = parsed
    return out


def optimiser_layout(cfg: Any, nets: Any = None) -> dict[str, list[list[str]]]:
    """Parameter names of each network of ``cfg`` (built now unless ``nets`` is given), per
    group of its optimiser, in order."""
    from ratgan.models import build_networks
    from ratgan.training.alphagan import build_optimizers

    nets = build_networks(cfg.model) if nets is None else nets
    layout = {}
    for key, opt in build_optimizers(nets, cfg).items():
        names = {id(p): n for n, p in nets.as_dict()[key].named_parameters()}
        layout[key] = [[names[id(p)] for p in group["params"]] for group in opt.param_groups]
    return layout


def reindex_optimiser(
    opt: dict[str, Any], old: list[list[str]], new: list[list[str]], fresh: set[str]
) -> dict[str, Any]:
    """An optimiser state_dict laid out for parameter groups ``old`` (names) re-laid out for
    ``new``; parameters that are new or in ``fresh`` start without state (Adam then starts
    their moments at zero, as for a new run)."""
    if len(old) != len(new):
        raise SystemExit("the changed config changes the number of optimiser groups")
    flat_old = [name for group in old for name in group]
    by_name = {name: opt["state"][i] for i, name in enumerate(flat_old) if i in opt["state"]}
    groups, state, index = [], {}, 0
    for template, names in zip(opt["param_groups"], new, strict=True):
        params = []
        for name in names:
            if name in by_name and name not in fresh:
                state[index] = by_name[name]
            params.append(index)
            index += 1
        groups.append({**template, "params": params})
    return {"state": state, "param_groups": groups}


def reinitialise(state: dict[str, Any], old_cfg: Any, cfg: Any, prefixes: list[str]) -> list[str]:
    """Give the parameters named ``NET.PREFIX...`` (e.g. ``G.output_noise``) and those that
    ``cfg`` adds to ``old_cfg``'s networks their initial values (in the raw and the EMA
    weights; networks built after seeding with ``cfg.train.seed``, as training does) and fresh
    optimiser state.
    Returns the ``NET.NAME`` of every parameter so set."""
    import torch

    from ratgan.models import build_networks

    torch.manual_seed(cfg.train.seed)
    nets = build_networks(cfg.model)
    init = {key: net.state_dict() for key, net in nets.as_dict().items()}
    old_layout, new_layout = optimiser_layout(old_cfg), optimiser_layout(cfg, nets)
    changed = []
    for key, fresh in init.items():
        asked = [p.split(".", 1)[1] for p in prefixes if p.split(".", 1)[0] == key]
        names = [
            n
            for n in fresh
            if n not in state["networks"][key] or any(n.startswith(a) for a in asked)
        ]
        for n in names:
            state["networks"][key][n] = fresh[n].clone()
            if key in state.get("ema", {}):
                state["ema"][key][n] = fresh[n].clone()
        for weights in (state["networks"], state.get("ema", {})):
            for n in [n for n in weights.get(key, {}) if n not in fresh]:
                del weights[key][n]  # an option switched off: its parameters go
        if names or old_layout[key] != new_layout[key]:
            state["optimizers"][key] = reindex_optimiser(
                state["optimizers"][key], old_layout[key], new_layout[key], set(names)
            )
        changed += [f"{key}.{n}" for n in names]
    return changed


def branch(
    run: Path, iteration: int, out: Path, changes: dict[str, Any], reinit: list[str] | None = None
) -> Path:
    """Write the branch folder; returns the copied checkpoint's path."""
    import torch

    from ratgan.config import config_from_dict
    from ratgan.runs import read_run_config
    from ratgan.training.checkpoint import checkpoint_path

    source = checkpoint_path(run, iteration)
    if not source.is_file():
        raise SystemExit(f"{run} has no checkpoint of iteration {iteration} ({source}).")
    if out.exists():
        raise SystemExit(f"{out} exists: a branch is written to a new folder.")
    data = read_run_config(run).to_dict()
    if data.get("family") == "ldm":
        # the re-layout of parameters and optimiser states below is the alpha-GAN's (G, E, D, C)
        raise SystemExit(f"{run} is a latent diffusion run: branch_run.py branches alpha-GAN runs.")
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--set {dotted}: the config has no such field.")
        node[leaf] = value
    old_cfg = read_run_config(run)
    cfg = config_from_dict(data)  # validates the changed config
    state = torch.load(source, map_location="cpu", weights_only=False)
    state["config"] = cfg.to_dict()
    for name in reinitialise(state, old_cfg, cfg, reinit or []):
        print(f"  {name}: initial value, fresh optimiser state")
    if "optim.lr" in changes:
        for opt in state["optimizers"].values():
            for group in opt["param_groups"]:
                group["lr"] = float(changes["optim.lr"])
    return write_run_folder(run, out, cfg, state, iteration)


def write_run_folder(run: Path, out: Path, cfg: Any, state: dict[str, Any], iteration: int) -> Path:
    """A new run folder ``out`` (written under a temporary name, then renamed): ``cfg``, the data
    record and the metrics up to ``iteration`` of ``run``, and ``state`` as the checkpoint of
    ``iteration``.  Returns the checkpoint's path."""
    import torch

    from ratgan.runs import run_paths, write_run_config
    from ratgan.training.checkpoint import checkpoint_path

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    src_paths, dst_paths = run_paths(run), run_paths(staging)
    dst_paths.checkpoints.mkdir(parents=True)
    write_run_config(staging, cfg)
    shutil.copy(src_paths.data, dst_paths.data)
    if src_paths.metrics.is_file():
        kept = [
            line
            for line in src_paths.metrics.read_text().splitlines()
            if line.strip() and json.loads(line).get("iteration", 0) <= iteration
        ]
        dst_paths.metrics.write_text("".join(f"{line}\n" for line in kept))
    torch.save(state, checkpoint_path(staging, iteration))
    staging.rename(out)
    return checkpoint_path(out, iteration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--reinit",
        action="append",
        default=[],
        metavar="NET.PREFIX",
        help="start these parameters afresh, e.g. G.output_noise (parameters that a --set "
        "adds always start afresh)",
    )
    args = parser.parse_args(argv)
    changes = parse_sets(args.set)
    path = branch(args.run, args.iteration, args.out, changes, args.reinit)
    print(f"branched {args.run} at iteration {args.iteration} into {path}")
    for key, value in changes.items():
        print(f"  {key} = {value!r}")
    print(f"continue with: ratgan train --resume --out {args.out} --iterations N")
    return 0


if __name__ == "__main__":
    sys.exit(main())
