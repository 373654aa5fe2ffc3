"""Where one whole trial's wall and CPU time go, timed from outside the trial process.

    python -m benchmarks trial-anatomy [--config config.yml] [--repeat 3] [--against DIR]

Runs config.yml's trial command (`python trial.py FLAGS --output-dir TMP`, standalone) as a
child process and stamps each line it prints on stderr as it arrives, with the child's CPU
seconds read from /proc at that moment; nothing in the trial runs for the benchmark (Python
is only told not to buffer its output). The lines are the trial's own: `segmodel: N
intra-op thread(s)` (imports and TensorFlow set up), Keras' `Epoch k/N` and end-of-epoch
lines, `final:` (the result reported), then the metrics JSON on stdout (artifacts written),
then the exit. Stages, in order:

  start -> configured     interpreter, imports, TensorFlow start, threads and precision
  set-up                  data, model build, compression set-up, compile, to epoch 1
  <phase> epochs          each phase's epochs; its first-epoch overhead (trace) is the first
                          epoch's wall minus the phase's steady epoch
  between phases          evaluation, pruning, compiling the next phase
  last epoch -> final     final evaluation, dead channels, saving, latency
  final -> printed        artifacts (plots, after the result is safe)
  printed -> exit         interpreter teardown

Steady training = every epoch at the median wall of the epochs that are not a phase's first
(its validation pass included, as Keras' ms/step includes it); the ratio to quote is
wall / steady training. Achieved GFLOP/s of the steady step: 3 x forward FLOPs (2 x the
dense model's multiply-adds, from metrics.json) x batch / steady step, against the CPU's
peak for the precision used, computed as cores x clock x FLOP per cycle per core (FMA = 2
FLOP x vector lanes x FMA units; AMX-BF16: 1024 bf16 FMA a cycle), the clock from
/proc/cpuinfo and the FMA units an assumption you may correct (--fma-units).

--against DIR runs the same command from another checkout (say `git worktree add
/tmp/base main`) interleaved with this one, round after round, and says whether the two
trials' results are bit for bit the same (every metric but times and latencies).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from segmodel.params import command_flags
from segmodel.runtime import available_cores, cpu_flags, cpu_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGURED = re.compile(r"^segmodel: \d+ intra-op thread")
EPOCH_BEGIN = re.compile(r"^Epoch (\d+)/(\d+)")
EPOCH_END = re.compile(r"^(\d+)/(\d+) - ")
FINAL = re.compile(r"^final: ")
TICK = os.sysconf("SC_CLK_TCK")
# what differs between two runs of the same computation: clocks, and the gzip of a .keras zip
# (its entries carry their write time); not results
TIMING_KEYS = re.compile(r"duration|latency|speedup|_ms$|_s$|gzip")


def add_arguments(p) -> None:
    p.add_argument("--config", default=str(ROOT / "config.yml"), help="NNI config whose trial command to run")
    p.add_argument("--repeat", type=int, default=3, help="trials per checkout (medians are quoted)")
    p.add_argument("--against", default=None, help="another checkout to run interleaved with this one")
    p.add_argument("--fma-units", type=int, default=2, help="FMA units per core, for the float32 peak")
    p.add_argument("--trial-flags", default="", help="more trial flags, after the config's")
    p.add_argument("--json", default=None, help="also write the results here")


def main(args) -> int:
    config = yaml.safe_load(Path(args.config).read_text())
    flags = command_flags(config["trialCommand"]) + shlex.split(args.trial_flags)
    checkouts = {"this": ROOT, **({"against": Path(args.against).resolve()} if args.against else {})}
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for r in range(args.repeat):
        for name, root in checkouts.items():
            print(f"[bench] round {r + 1}/{args.repeat}: {name} ({root})", file=sys.stderr, flush=True)
            runs[name].append(anatomy(run_trial(root, flags)))
    summary = {name: summarize(rs, args.fma_units) for name, rs in runs.items()}
    if args.against:
        a, b = runs["this"][0]["metrics"], runs["against"][0]["metrics"]
        differ = sorted(k for k in set(a) | set(b) if not TIMING_KEYS.search(k) and a.get(k) != b.get(k))
        summary["same_results"] = not differ
        summary["differing_metrics"] = differ
        summary["wall_ratio_this_to_against"] = round(summary["this"]["wall_s"] / summary["against"]["wall_s"], 3)
    summary.update(cpu=cpu_name(), command=f"python3 trial.py {shlex.join(flags)}", repeat=args.repeat)
    print(render(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    return 0


# ---- one trial, from outside --------------------------------------------------------

def run_trial(root: Path, flags: list[str]) -> dict:
    """Run `python trial.py FLAGS` in `root`; every stderr line with (wall, cpu) stamps."""
    with tempfile.TemporaryDirectory(prefix="anatomy-") as out:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEGMODEL_NO_REEXEC": "1"}
        env.pop("NNI_PLATFORM", None)
        start = time.monotonic()
        child = subprocess.Popen([sys.executable, "trial.py", *flags, "--output-dir", out], cwd=root, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        lines: list[tuple[float, float, str]] = []
        stdout: list[tuple[float, float, str]] = []
        readers = [threading.Thread(target=_read, args=(child.stderr, child.pid, start, lines)),
                   threading.Thread(target=_read, args=(child.stdout, child.pid, start, stdout))]
        for t in readers:
            t.start()
        _, status, usage = os.wait4(child.pid, 0)
        end = time.monotonic() - start
        for t in readers:
            t.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            tail = "\n".join(text for _, _, text in lines[-5:])
            raise SystemExit(f"error: the trial in {root} exited {child.returncode}:\n{tail}")
        metrics = json.loads("".join(text + "\n" for _, _, text in stdout))
        return {"lines": lines, "printed_at": stdout[0][:2] if stdout else (end, None), "exit": end,
                "cpu_s": usage.ru_utime + usage.ru_stime, "metrics": metrics,
                "params": json.loads((Path(out) / "params.json").read_text())}


def _read(stream, pid: int, start: float, into: list) -> None:
    for line in stream:
        into.append((time.monotonic() - start, _cpu_s(pid), line.rstrip("\n")))


def _cpu_s(pid: int) -> float | None:
    """User + system seconds of process `pid` so far, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


# ---- the stages --------------------------------------------------------------------

def anatomy(run: dict) -> dict:
    """Stage walls and CPU seconds of one trial run, from its stamped lines."""
    configured = next(s for s in run["lines"] if CONFIGURED.search(s[2]))
    final = next((s for s in run["lines"] if FINAL.search(s[2])), None)
    phases: list[list[dict]] = []
    begin = None
    for stamp in run["lines"]:
        if m := EPOCH_BEGIN.search(stamp[2]):
            if m.group(1) == "1":
                phases.append([])
            begin = stamp
        elif (m := EPOCH_END.search(stamp[2])) and begin is not None:
            phases[-1].append({"wall": stamp[0] - begin[0], "cpu": _diff(stamp[1], begin[1]), "steps": int(m.group(2)),
                               "begin": begin[:2], "end": stamp[:2]})
            begin = None
    if not phases:
        raise SystemExit("error: no epochs in the trial's output")
    later = [e["wall"] for p in phases for e in p[1:]]
    steady_epoch = statistics.median(later) if later else min(p[0]["wall"] for p in phases)
    stages = {"start -> configured": (configured[0], configured[1]),
              "set-up -> epoch 1": (phases[0][0]["begin"][0] - configured[0],
                                    _diff(phases[0][0]["begin"][1], configured[1]))}
    for i, phase in enumerate(phases):
        if i:
            prev = phases[i - 1][-1]["end"]
            stages[f"between phases {i}/{i + 1}"] = (phase[0]["begin"][0] - prev[0],
                                                     _diff(phase[0]["begin"][1], prev[1]))
        stages[f"phase {i + 1} epochs ({len(phase)})"] = (phase[-1]["end"][0] - phase[0]["begin"][0],
                                                         _diff(phase[-1]["end"][1], phase[0]["begin"][1]))
    last = phases[-1][-1]["end"]
    printed = run["printed_at"]
    if final:  # a trial older than its `final:` line has the two stages as one
        stages["last epoch -> final"] = (final[0] - last[0], _diff(final[1], last[1]))
        stages["final -> metrics printed"] = (printed[0] - final[0], _diff(printed[1], final[1]))
    else:
        stages["last epoch -> metrics printed"] = (printed[0] - last[0], _diff(printed[1], last[1]))
    stages["metrics printed -> exit"] = (run["exit"] - printed[0], _diff(run["cpu_s"], printed[1]))
    n_epochs = sum(len(p) for p in phases)
    steps = phases[0][0]["steps"]
    return {"stages": {k: [round(w, 2), None if c is None else round(c, 2)] for k, (w, c) in stages.items()},
            "first_epoch_overhead_s": [round(p[0]["wall"] - steady_epoch, 2) for p in phases],
            "steady_epoch_s": round(steady_epoch, 3), "steps_per_epoch": steps, "epochs": n_epochs,
            "steady_training_s": round(steady_epoch * n_epochs, 2), "wall_s": round(run["exit"], 2),
            "cpu_s": round(run["cpu_s"], 2), "metrics": run["metrics"],
            "batch_size": run["params"]["batch_size"], "precision": run["metrics"].get("precision")}


def _diff(a, b):
    return None if a is None or b is None else a - b


def summarize(runs: list[dict], fma_units: int) -> dict:
    """Medians over the runs of one checkout, and the steady step's arithmetic."""
    med = lambda f: round(statistics.median(f(r) for r in runs), 3)  # noqa: E731
    stages = {k: [med(lambda r, k=k, i=i: r["stages"][k][i] or 0.0) for i in (0, 1)] for k in runs[0]["stages"]}
    first = runs[0]
    step_s = med(lambda r: r["steady_epoch_s"]) / first["steps_per_epoch"]
    flop = 3 * 2 * first["metrics"]["dense_flops"] * first["batch_size"]
    peak = peak_gflops(first["precision"], fma_units)
    wall, steady = med(lambda r: r["wall_s"]), med(lambda r: r["steady_training_s"])
    return {"wall_s": wall, "cpu_s": med(lambda r: r["cpu_s"]), "steady_training_s": steady,
            "wall_over_steady": round(wall / steady, 3), "stages": stages,
            "first_epoch_overhead_s": [round(statistics.median(v), 2) for v in zip(*(r["first_epoch_overhead_s"] for r in runs))],
            "steady_step_ms": round(1000 * step_s, 1), "train_step_gflop": round(flop / 1e9, 3),
            "achieved_gflop_s": round(flop / 1e9 / step_s, 1), "peak": peak,
            "share_of_peak": round(flop / 1e9 / step_s / peak["gflop_s"], 3) if peak["gflop_s"] else None,
            "precision": first["precision"], "walls": [r["wall_s"] for r in runs]}


def peak_gflops(precision: str, fma_units: int) -> dict:
    """Theoretical peak of this machine's cores for `precision`, with how it is computed."""
    flags, cores = cpu_flags(), available_cores()
    ghz = _clock_ghz()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    if "bfloat16" in (precision or "") and "amx_bf16" in flags:
        per_cycle, how = 2048, "AMX-BF16: 1024 bf16 FMA/cycle"
    elif "bfloat16" in (precision or "") and "avx512_bf16" in flags:
        per_cycle, how = 2 * 2 * 16 * fma_units, f"AVX512-BF16: 2 bf16 FMA per 32-bit lane x 16 x {fma_units} units"
    else:
        per_cycle, how = 2 * lanes * fma_units, f"float32 FMA: {lanes} lanes x {fma_units} units"
    return {"gflop_s": round(cores * ghz * per_cycle, 1) if ghz else None,
            "how": f"{cores} cores x {ghz} GHz x {per_cycle} FLOP/cycle ({how}, FMA = 2 FLOP)"}


def _clock_ghz() -> float | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) / 1000, 2)
    except OSError:
        pass
    return None


def render(s: dict) -> str:
    names = [n for n in ("this", "against") if n in s]
    out = [f"# Trial anatomy: `{s['command']}`", f"CPU: {s['cpu']}; median of {s['repeat']} trial(s) each"
           f"{' , interleaved' if len(names) > 1 else ''}; wall / CPU seconds", "",
           "| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for stage in dict.fromkeys(k for n in names for k in s[n]["stages"]):
        cells = [("{:.2f} / {:.2f}".format(*s[n]["stages"][stage]) if stage in s[n]["stages"] else "-") for n in names]
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    for label, key, fmt in [("wall (s)", "wall_s", "{:.2f}"), ("CPU (s)", "cpu_s", "{:.2f}"),
                            ("steady training (s)", "steady_training_s", "{:.2f}"),
                            ("**wall / steady training**", "wall_over_steady", "**{:.2f}**"),
                            ("first-epoch overhead per phase (s)", "first_epoch_overhead_s", "{}"),
                            ("steady step (ms)", "steady_step_ms", "{:.1f}"),
                            ("achieved GFLOP/s", "achieved_gflop_s", "{:.1f}"),
                            ("share of peak", "share_of_peak", "{:.1%}"), ("precision", "precision", "{}")]:
        out.append(f"| {label} | " + " | ".join(fmt.format(s[n][key]) if s[n][key] is not None else "-"
                                                for n in names) + " |")
    out += ["", f"Peak: {s[names[0]]['peak']['how']} = {s[names[0]]['peak']['gflop_s']} GFLOP/s; "
                f"a training step = 3 x forward = {s[names[0]]['train_step_gflop']} GFLOP."]
    if "same_results" in s:
        out.append(f"this / against wall: {s['wall_ratio_this_to_against']:.3f}; results bit for bit the same: "
                   f"{'yes' if s['same_results'] else 'no: ' + ', '.join(s['differing_metrics'])}")
    return "\n".join(out)
