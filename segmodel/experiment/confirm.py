"""`python -m segmodel confirm EXPERIMENT [--top K] [--seeds N] [--reference dense] [-- TRIAL_FLAGS...]`:
re-run the search's top trials on several seeds, as a new NNI experiment, to tell which one
really wins.

Every trial of a search trains on one split and one initialization, and the seed moves a
point by several IoU points: the search's top trials are not told apart by one draw. This
starts a new experiment whose trials are the top K parameter sets (by `--metric`, distinct
sets only) x seeds 0..N-1, on the source's training service (local, remote, Kubernetes),
with its trial command and code: `candidate` (the source trial id) and `seed` are its
hyperparameters, so the web UI groups them. Trial flags after `--` override every cell's
parameters (a longer budget: `-- --epochs 12 --finetune-epochs 8`; then the source's
maxTrialDuration is dropped). `--reference dense` adds the top candidate with pruning off,
on the same seeds, so that the compression's cost is paired by seed. No assessor stops a
cell early, and the experiment has no time limit: it ends when every cell has run.
`nnictl resume` runs only the cells that have no trial yet.

    python -m segmodel confirm abc123 --top 3 --seeds 3 -- --epochs 12 --finetune-epochs 8
    python -m segmodel report <the new id>    # ranks by mean: winner, runner-up, p

The config it starts is written to DIR/config.yml (default ./confirm-<experiment>).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from ..cli import add_command, default_out
from ..errors import ParamError
from ..files import write_text_atomic
from ..params import Params, command_flags, parse_flags, resolve
from . import records
from .confirmation import LABEL, REFERENCE, TUNER, is_confirm

# What a cell of `--reference dense` changes in the top candidate's parameters: no compression.
DENSE = {"sparsity": 0.0, "prune_mode": "weight", "prune_config": "", "prune_target": "", "channel_round": 1, "kd": False}
DEFAULT_PORT = 8081  # the search usually holds 8080


def register(subparsers) -> None:
    p = add_command(subparsers, "confirm", __doc__, "re-run an experiment's top trials on seeds (a new experiment)")
    p.add_argument("experiment", metavar="EXPERIMENT", help="the search: NNI experiment id, or its folder")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many of the best trials (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 for each (default: %(default)s)")
    p.add_argument("--reference", choices=[REFERENCE], default=None,
                   help="also run the top candidate with pruning off, on the same seeds")
    p.add_argument("--metric", default="default", help="final-result key that ranks the search (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the new experiment's web UI port "
                   "(default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where its config.yml is written (default: ./confirm-<experiment>)")
    p.add_argument("--dry-run", action="store_true", help="write the config, start nothing")
    p.set_defaults(func=main, takes_trial_flags=True)


def main(args: argparse.Namespace) -> int:
    if args.seeds < 2:
        raise ParamError(f"--seeds {args.seeds}: a confirmation needs at least 2 seeds (a spread, a paired test)")
    if args.top < 1:
        raise ParamError(f"--top {args.top}: need at least 1 candidate")
    source = records.load(args.experiment)
    if is_confirm(source):
        raise ParamError(f"experiment {source.id} is a confirm experiment already: confirm its source")
    overrides = trial_overrides(args.trial_flags)
    cells = plan(source, args.top, args.seeds, args.metric, overrides, args.reference)
    config = experiment_config(source, cells, args.top, args.seeds, bool(overrides), args.reference)
    check_reachable(config)
    out = args.out or default_out("confirm", source.id)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yml"
    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))
    labels = sorted({c[LABEL] for c in cells}, key=[c[LABEL] for c in cells].index)
    print(f"confirm {source.id}: {', '.join(labels)} x seeds 0..{args.seeds - 1} = {len(cells)} trials "
          f"on {_platform(config)}; config: {path}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    exp_id = start(path, args.port)
    print(f"started experiment {exp_id}: web UI http://127.0.0.1:{args.port}; when it is done: "
          f"python -m segmodel report {exp_id}")
    return 0


def trial_overrides(flags: list[str]) -> dict:
    """The trial flags after `--`, typed as Params has them; the seed and the output folder are
    confirm's own."""
    given = parse_flags(flags, prog="confirm --")
    for own, why in (("seed", "confirm sets each cell's seed (--seeds)"),
                     ("output_dir", "NNI gives each trial its folder")):
        if own in given:
            raise ParamError(f"--{own.replace('_', '-')} after --: {why}")
    params = Params().update(given, "confirm's trial flags")
    return {name: getattr(params, name) for name in given}


def plan(source, top: int, seeds: int, metric: str, overrides: dict, reference: str | None) -> list[dict]:
    """The cells: the top `top` distinct finished parameter sets x seeds, seed by seed (so that a
    partial run is already paired), each checked as a trial would check it."""
    chosen, seen = [], set()
    for t in source.ranked(metric):
        value = t.final.get(metric)
        if t.status != "SUCCEEDED" or not isinstance(value, (int, float)) or not t.parameters:
            continue
        key = json.dumps(t.parameters, sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append(t)
    if len(chosen) < top:
        raise ParamError(f"experiment {source.id} has {len(chosen)} finished trial(s) with a {metric} and "
                         f"distinct parameters; --top {top} needs {top}")
    candidates = [(t.id, {**t.parameters, **overrides}) for t in chosen[:top]]
    if reference:
        candidates.append((REFERENCE, {**chosen[0].parameters, **overrides, **DENSE}))
    cells = [{**params, "seed": seed, LABEL: label} for seed in range(seeds) for label, params in candidates]
    flags = parse_flags(command_flags(source.config.get("trialCommand", "")), prog="the source's trialCommand")
    for cell in cells[:len(candidates)]:  # one seed checks them all: the seed is always valid
        resolve(flags, {k: v for k, v in cell.items() if k != LABEL})
    return cells


def experiment_config(source, cells: list[dict], top: int, seeds: int, budget_changed: bool,
                      reference: str | None) -> dict:
    """The source's config (training service, trial command and code, concurrency) with the
    cells as its tuner, no assessor and no time limit."""
    config = copy.deepcopy(source.config)
    for key in ("searchSpaceFile", "assessor", "advisor", "maxExperimentDuration", "experimentName", "searchSpace"):
        config.pop(key, None)
    if budget_changed:
        config.pop("maxTrialDuration", None)
    labels = list(dict.fromkeys(c[LABEL] for c in cells))
    tuner = {"className": TUNER, "classArgs": {"cells": cells, "optimize_mode": source.optimize_mode}}
    code = (source.config.get("tuner") or {}).get("codeDirectory")
    if code:
        tuner["codeDirectory"] = code
    return {"experimentName": f"confirm {source.id}: top {top} x {seeds} seeds" + (" + dense" if reference else ""),
            **config,
            "searchSpace": {LABEL: {"_type": "choice", "_value": labels},
                            "seed": {"_type": "choice", "_value": list(range(seeds))}},
            "tuner": tuner, "maxTrialNumber": len(cells)}


def _services(config: dict) -> list[dict]:
    service = config.get("trainingService") or {"platform": "local"}
    return [s for s in (service if isinstance(service, list) else [service]) if isinstance(s, dict)]


def _platform(config: dict) -> str:
    return "+".join(str(s.get("platform", "local")) for s in _services(config))


def check_reachable(config: dict, timeout: float = 5.0) -> None:
    """Every SSH machine of a remote training service answers on its port (the other platforms
    are the cluster's to check)."""
    for service in _services(config):
        if service.get("platform") != "remote":
            continue
        for machine in service.get("machineList") or []:
            host, port = machine.get("host"), int(machine.get("port") or 22)
            try:
                socket.create_connection((host, port), timeout=timeout).close()
            except OSError as e:
                raise ParamError(f"the source's training service is not reachable: remote machine {host}:{port} "
                                 f"({e.strerror or e})") from None


def start(config_path: Path, port: int) -> str:
    """`nnictl create` the config (this venv's nnictl, so the web UI stays on loopback); its id."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ParamError(f"port {port} is in use (the search's web UI?): give --port") from None
    bin_dir = Path(sys.executable).parent
    nnictl = bin_dir / "nnictl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(nnictl) if nnictl.exists() else "nnictl", "create", "--config", str(config_path),
                           "--port", str(port)], env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r'nnictl stop ([A-Za-z0-9]+)"', done.stdout + done.stderr)  # nnictl's own hint line
    if done.returncode or not found:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise records.ExperimentError(f"nnictl create failed (exit {done.returncode}): {last}")
    return found.group(1)
