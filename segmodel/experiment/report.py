"""`python -m segmodel report EXPERIMENT`: a leaderboard of an experiment's trials
(table, CSV, Markdown) with what the tuner was told about each, a Pareto plot of mean
IoU against sparsity and model size (or FLOPs: `--pareto-x mflops,gzip_mb`), and the best
`default` so far against time. Of a confirm experiment (`confirm`), also its candidates
ranked by their mean over seeds, the winner against the runner-up seed by seed in one line,
and every seed's result (confirm.csv, confirm.md, seeds.png).

Reads NNI's database read-only, so it works while the experiment runs. Trials that
failed, were early-stopped or still run are listed too, after the ranked ones.

Heavy libraries (TensorFlow, Keras, matplotlib, PIL) are imported inside the functions that
use them: `python -m segmodel --help` imports every command module, and should stay instant.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from ..cli import add_command, default_out
from ..files import gzip_size, write_text_atomic
from . import confirmation, records
from .records import Experiment, Trial

FIXED = ("rank", "trial", "seq", "status", "default", "told", "iou", "dense_iou", "accuracy", "sparsity",
         "gzip_mb", "mflops", "duration_s")
# Pareto x axes: row key -> (label, larger is better)
PARETO_AXES = {"sparsity": ("sparsity (fraction of weights zero, or removed)", True),
               "gzip_mb": ("model.keras gzip size (MB)", False),
               "mflops": ("MFLOPs per patch (multiply-adds, one forward pass)", False),
               "latency_ms": ("TFLite latency at the deploy size, batch 1 (ms, the trials' machine)", False),
               "speedup": ("TFLite speedup over the dense model (x, timed side by side)", True)}
MEASURED = ("latency_ms", "speedup")  # columns of trials run with --deploy-size


def register(subparsers) -> None:
    p = add_command(subparsers, "report", __doc__, "leaderboard + Pareto plot of an NNI experiment's trials")
    p.add_argument("experiment", metavar="EXPERIMENT", help="NNI experiment id, or its folder")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write the files (default: ./report-<id>)")
    p.add_argument("--metric", default="default", help="final-result key to rank by (default: %(default)s; "
                   "direction = the tuner's optimize_mode)")
    p.add_argument("--pareto-x", default="sparsity,gzip_mb", metavar="KEYS",
                   help=f"x axes of the Pareto plot's panels, from {', '.join(PARETO_AXES)} (default: %(default)s)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    axes = [k.strip() for k in args.pareto_x.split(",") if k.strip()]
    bad = [k for k in axes if k not in PARETO_AXES]
    if bad or not axes:
        raise records.ExperimentError(f"--pareto-x: unknown key {', '.join(bad) or '(none)'}; "
                                          f"choose from {', '.join(PARETO_AXES)}")
    exp = records.load(args.experiment)
    out = Path(args.out) if args.out else default_out("report", exp.id)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(exp, args.metric, progress=True)
    params = hyperparameter_names(exp)
    columns = list(FIXED) + [c for c in MEASURED if any(r.get(c) is not None for r in rows)] + params
    print(f"experiment {exp.id} ({exp.status or 'status unknown'}), {len(exp.trials)} trials, "
          f"ranked by {args.metric} ({exp.optimize_mode})")
    print(format_table(rows, columns))
    write_text_atomic(out / "leaderboard.csv", to_csv(rows, columns))
    write_text_atomic(out / "leaderboard.md", to_markdown(exp, rows, columns, args.metric))
    written = ["leaderboard.csv", "leaderboard.md"]
    if plot_pareto(rows, out / "pareto.png", title=f"experiment {exp.id}", axes=axes):
        written.append("pareto.png")
    if plot_best_vs_time(exp, out / "best_vs_time.png"):
        written.append("best_vs_time.png")
    if confirmation.is_confirm(exp):
        written += confirm_section(exp, out, args.metric)
    print(f"wrote {', '.join(str(out / w) for w in written)}", file=sys.stderr)
    return 0


# ---- rows ---------------------------------------------------------------------------

def hyperparameter_names(exp: Experiment) -> list[str]:
    """Search-space names as columns; `hp_<name>` where one clashes with a result column."""
    names = list((exp.config.get("searchSpace") or {}).keys())
    for t in exp.trials:
        names += [k for k in t.parameters if k not in names]
    return [_hp(n) for n in names]


def _hp(name: str) -> str:
    return f"hp_{name}" if name in FIXED or name == "note" else name


def leaderboard(exp: Experiment, metric: str = "default", progress: bool = False) -> list[dict]:
    """One dict per trial, best first; trials without a final result last, with a note."""
    ranked = exp.ranked(metric)
    need_gzip = [t for t in ranked if t.dir and "model_gzip_bytes" not in t.metrics and (t.dir / "model.keras").is_file()]
    if progress and need_gzip:
        print(f"measuring gzip size of {len(need_gzip)} model.keras files...", file=sys.stderr, flush=True)
    rows, rank = [], 0
    stopped = exp.status in ("STOPPED", "DONE", "ERROR")  # nnictl stop leaves killed trials RUNNING in the db
    for t in ranked:
        m = t.metrics
        interrupted = stopped and t.status in ("RUNNING", "WAITING")
        has_final = isinstance(t.final.get(metric), (int, float))
        rank += has_final
        gz = m.get("model_gzip_bytes")
        if gz is None and t in need_gzip:
            gz = gzip_size(t.dir / "model.keras")
        rows.append({
            "rank": rank if has_final else "",
            "trial": t.id, "seq": t.sequence, "status": t.status,
            "default": t.final.get(metric) if has_final else _last_intermediate(t, metric),
            "told": told(t),
            "iou": m.get("iou"), "dense_iou": m.get("dense_iou"), "accuracy": m.get("accuracy"),
            "sparsity": m.get("sparsity"), "gzip_mb": gz / 1e6 if isinstance(gz, (int, float)) else None,
            "mflops": m["flops"] / 1e6 if isinstance(m.get("flops"), (int, float)) else None,
            **{key: m.get(key) for key in MEASURED},
            "duration_s": m.get("duration_s", None if interrupted else t.duration_s),
            **{_hp(k): v for k, v in t.parameters.items()},
            "dir": str(t.dir or ""),
            "note": "" if has_final else (
                f"interrupted: the experiment was stopped after {len(t.intermediate)} epochs (last {metric} shown)"
                if interrupted else _note(t, metric, exp.config.get("maxTrialDuration"))),
        })
    return rows


CONFIRM_COLUMNS = ("rank", "candidate", "n", "mean", "sd", "min", "max", "vs_winner", "vs_winner_p", "vs_reference",
                   "vs_reference_p")


def confirm_section(exp: Experiment, out: Path, metric: str) -> list[str]:
    """A confirm experiment's candidates by mean over seeds (stdout, confirm.csv), the one-line
    verdict on the winner, and every seed's result (seeds.png); returns the files written."""
    ranked = confirmation.candidates(exp, metric, exp.optimize_mode != "minimize")
    rows = confirmation.table(ranked, metric)
    columns = list(dict.fromkeys([c for c in CONFIRM_COLUMNS if any(c in r for r in rows)]
                                 + [k for r in rows for k in r if k not in CONFIRM_COLUMNS]))
    print(f"\ncandidates by mean {metric} over seeds (vs_*: paired by seed, p: paired t-test):")
    print(format_table(rows, columns))
    line = confirmation.verdict(ranked, metric)
    print(line)
    write_text_atomic(out / "confirm.csv", to_csv(rows, columns))
    write_text_atomic(out / "confirm.md", "\n".join([
        f"# Confirm experiment {exp.id}", "", line, "", *markdown_table(rows, columns), "",
        "![every seed's result](seeds.png)", ""]))
    written = ["confirm.csv", "confirm.md"]
    if confirmation.plot_seeds(ranked, out / "seeds.png", metric, f"experiment {exp.id}: {metric} per seed"):
        written.append("seeds.png")
    return written


def told(t: Trial):
    """The `default` the tuner got for this trial: what segmodel's tuner adapter logged
    (segmodel/experiment/tuner.py), else the final result (every final reaches the tuner); None when
    the tuner was told nothing (a stopped or failed trial under a plain NNI tuner)."""
    if t.told is not None:
        return t.told.get("value")
    value = t.final.get("default")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _last_intermediate(t: Trial, metric: str):
    return t.intermediate[-1].get(metric) if t.intermediate else None


def _note(t: Trial, metric: str, max_duration=None) -> str:
    """Why a trial has no final result: its error line, or how far it got."""
    if t.status == "FAILED":
        return _error_line(t) or t.message or "see the trial's trial.stderr"
    if t.status == "EARLY_STOPPED":
        return f"early-stopped by the assessor after {len(t.intermediate)} epochs (last {metric} shown)"
    if t.status in ("RUNNING", "WAITING"):
        return f"{t.status.lower()}: {len(t.intermediate)} epochs so far (last {metric} shown)"
    if t.status in ("USER_CANCELED", "SYS_CANCELED"):
        limit = f"by the user or at maxTrialDuration {max_duration}" if max_duration else "by the user"
        return f"canceled ({limit}) after {len(t.intermediate)} epochs (last {metric} shown)"
    return t.status.lower().replace("_", " ")


def _error_line(t: Trial) -> str:
    for name in ("trial.stderr", "stderr"):
        path = t.dir / name if t.dir else None
        if path and path.is_file():
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":")[0]]
            if errors or lines:
                return (errors or lines)[-1][:160]
    return ""


# ---- output -------------------------------------------------------------------------

def _fmt(key: str, v) -> str:
    if v is None or v == "":
        return "" if key != "default" else "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if key in ("duration_s",):
            return f"{v:.0f}"
        if key in ("gzip_mb", "mflops", "latency_ms", "speedup"):
            return f"{v:.2f}"
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def format_table(rows: list[dict], columns: list[str]) -> str:
    cols = columns + ["note"]
    cells = [[_fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns + ["note", "dir"], extrasaction="ignore")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(_fmt(c, r.get(c)) for c in columns) + " |" for r in rows)]


def to_markdown(exp: Experiment, rows: list[dict], columns: list[str], metric: str) -> str:
    ranked = [r for r in rows if r["rank"] != ""]
    others = [r for r in rows if r["rank"] == ""]
    md = [f"# Experiment {exp.id}", "",
          f"{len(exp.trials)} trials ({exp.status or 'status unknown'}), ranked by `{metric}` ({exp.optimize_mode}). "
          f"Folder: `{exp.dir}`.", "",
          *markdown_table(ranked, columns)]
    if ranked and ranked[0].get("dir"):
        md += ["", f"Best trial `{ranked[0]['trial']}`: plots and history in `{ranked[0]['dir']}` "
               "(iou_vs_epoch.png, loss_vs_epoch.png, pr_curves.png, predictions.png, history.csv)."]
    md += ["", "## Trials without a final result", ""]
    if others:
        md += [f"- `{r['trial']}` (#{r['seq']}) **{r['status']}**: {r['note']}" for r in others]
    else:
        md.append("None: every trial finished with a result.")
    md += ["", "![Pareto plot](pareto.png)", "", "![Best default against time](best_vs_time.png)", ""]
    return "\n".join(md)


def pareto_front(points: list[tuple[float, float]], maximize_x: bool) -> list[int]:
    """Indices of points not dominated (higher IoU and better x), sorted by x."""
    sign = 1 if maximize_x else -1
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((sign * x2 >= sign * x and y2 >= y) and (sign * x2 > sign * x or y2 > y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(rows: list[dict], path: Path, title: str = "", axes=("sparsity", "gzip_mb")) -> bool:
    """Mean IoU against each of `axes` (PARETO_AXES keys), one panel each, Pareto front
    drawn (the best IoU at each budget), best trial starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if isinstance(r.get("iou"), (int, float)) and math.isfinite(r["iou"])]
    if not done:
        print("no finished trial with an IoU yet: no Pareto plot", file=sys.stderr)
        return False
    panels = [(key, *PARETO_AXES[key]) for key in axes]
    fig, subplots = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), dpi=110, squeeze=False)
    best = min((r for r in done if r["rank"] != ""), key=lambda r: r["rank"], default=None)
    for ax, (key, label, maximize_x) in zip(subplots[0], panels):
        pts = [(r[key], r["iou"], r) for r in done if isinstance(r.get(key), (int, float))]
        if not pts:
            ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(label)
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.scatter(xs, ys, s=36, color="#4C72B0", alpha=0.8, label="trial", zorder=2)
        front = pareto_front([(x, y) for x, y, _ in pts], maximize_x)
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.step(fx, fy, where="post" if not maximize_x else "pre", color="#DD8452", lw=1.5, zorder=1)
        ax.scatter(fx, fy, s=60, facecolor="none", edgecolor="#DD8452", lw=1.5, label="Pareto front", zorder=3)
        for x, y, r in pts:
            ax.annotate(f"#{r['seq']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color="#333333")
        if best is not None and isinstance(best.get(key), (int, float)):
            ax.scatter([best[key]], [best["iou"]], marker="*", s=220, color="#C44E52", zorder=4,
                       label=f"best by default (#{best['seq']})")
        ax.set_xlabel(label)
        ax.set_ylabel("validation mean IoU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}: mean IoU against {' and '.join(PARETO_AXES[k][0].split(' (')[0] for k in axes)}"
                 .strip(": "))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def best_so_far(exp: Experiment, metric: str = "default") -> list[tuple[float, float, Trial]]:
    """(minutes since the experiment started, best final `metric` so far, trial that set it),
    one point per finished trial, in the order they ended."""
    sign = -1 if exp.optimize_mode == "minimize" else 1
    start = exp.began_ms
    done = sorted((t for t in exp.trials if t.end_ms and isinstance(t.final.get(metric), (int, float))),
                  key=lambda t: t.end_ms)
    points, best = [], None
    for t in done:
        if best is None or sign * t.final[metric] > sign * best.final[metric]:
            best = t
        points.append(((t.end_ms - start) / 60000, best.final[metric], best))
    return points


def best_curve(exp: Experiment, metric: str = "default") -> tuple[list[float], list[float]]:
    """`best_so_far` as the points of a step curve (minutes, best), held to the last trial's
    end: where the run stopped, not where its best was set. Empty before a trial finished."""
    points = best_so_far(exp, metric)
    if not points:
        return [], []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    last = max((t.end_ms for t in exp.trials if t.end_ms), default=exp.began_ms)
    return xs + [max(xs[-1], (last - exp.began_ms) / 60000)], ys + ys[-1:]


def plot_best_vs_time(exp: Experiment, path: Path, metric: str = "default") -> bool:
    """Best final `metric` so far against minutes since the start (the curve that says
    whether more time would pay), each trial's final result and the stopped trials' told values."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = best_curve(exp, metric)
    if not xs:
        print("no finished trial yet: no best-vs-time plot", file=sys.stderr)
        return False
    start = exp.began_ms
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.step(xs, ys, where="post", color="#C44E52", lw=2, label=f"best {metric} so far")
    finals = [((t.end_ms - start) / 60000, t.final[metric]) for t in exp.trials
              if t.end_ms and isinstance(t.final.get(metric), (int, float))]
    ax.scatter(*zip(*finals), s=28, color="#4C72B0", label="finished trial", zorder=3)
    stopped = [((t.end_ms - start) / 60000, told(t)) for t in exp.trials
               if t.end_ms and not t.final and told(t) is not None]
    if stopped:
        ax.scatter(*zip(*stopped), marker="x", s=36, color="#8C8C8C",
                   label="stopped / failed (value told the tuner)", zorder=3)
    ax.set_xlabel("minutes since the experiment started")
    ax.set_ylabel(metric)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"experiment {exp.id}: best {metric} {ys[-1]:.4f} at {xs[ys.index(ys[-1])]:.1f} min")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
