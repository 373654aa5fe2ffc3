"""The grid's Markdown table: each variant's score over seeds and Δ vs its reference, paired by seed.

A row of `rows` is one finished trial: {"seed", "variant", **its metrics.json}. Scores are
validation mean IoU; Δ is in points (100 x IoU), variant minus reference of the same
seed, so the seed-to-seed spread that both share drops out of it.
"""
from __future__ import annotations

import csv
import shlex
import statistics
from pathlib import Path


def mean_sd(values, digits: int = 3, sign: str = "") -> str:
    """'mean ± sample sd' ('-' for none, sd 0 for one value); sign="+" for differences."""
    values = list(values)
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{sign}.{digits}f} ± {sd:.{digits}f}"


def deltas(cells: list[dict], ref_cells: list[dict], key: str = "iou") -> list[float]:
    """cell - reference cell of the same seed, in points, for every seed that has both (seed order)."""
    ref = {r["seed"]: r[key] for r in ref_cells if r.get(key) is not None}
    return [100 * (c[key] - ref[c["seed"]]) for c in sorted(cells, key=lambda c: c["seed"])
            if c.get(key) is not None and c["seed"] in ref]


def _mean(cells, key, scale: float = 1.0, spec: str = ".3f", suffix: str = "") -> str:
    values = [c[key] / scale for c in cells if c.get(key) is not None]
    return f"{statistics.mean(values):{spec}}{suffix}" if values else ""


def _gzip_ratio(cells, ref_cells) -> str:
    mine, ref = ([c["model_gzip_bytes"] for c in cs if "model_gzip_bytes" in c] for cs in (cells, ref_cells))
    return f"{statistics.mean(mine) / statistics.mean(ref):.2f}" if mine and ref else ""


def _pair_col(fn):
    """A column that compares with the reference: blank on the reference's own line."""
    return lambda cells, ref_cells, is_ref: "" if is_ref else fn(cells, ref_cells)


# name -> (header, cell(the variant's rows, its reference's rows, is it the reference))
COLUMNS = {
    "per_seed": ("val mean IoU per seed", lambda c, r, is_ref: ", ".join(f"{x['iou']:.3f}" for x in c if "iou" in x)),
    "deltas": ("Δ per seed (pt)", _pair_col(lambda c, r: ", ".join(f"{d:+.2f}" for d in deltas(c, r)))),
    "worst": ("worst seed Δ (pt)", _pair_col(lambda c, r: f"{min(deltas(c, r)):+.2f}" if deltas(c, r) else "")),
    "wins": ("better in", _pair_col(lambda c, r: f"{sum(d > 0 for d in deltas(c, r))}/{len(deltas(c, r))}")),
    "sparsity": ("measured sparsity", lambda c, r, is_ref: _mean(c, "sparsity", spec=".4f")),
    "accuracy": ("pixel accuracy", lambda c, r, is_ref: _mean(c, "accuracy")),
    "before": ("IoU before pruning", lambda c, r, is_ref: mean_sd(x["dense_iou"] for x in c if "dense_iou" in x)),
    "before_delta": ("Δ before pruning (pt, paired)", _pair_col(lambda c, r: mean_sd(deltas(c, r, "dense_iou"), 2, "+"))),
    "params": ("params", lambda c, r, is_ref: _mean(c, "params", 1e6, suffix=" M")),
    "mflops": ("MFLOPs", lambda c, r, is_ref: _mean(c, "flops", 1e6, ".0f")),
    "dead": ("dead channels", lambda c, r, is_ref: _mean(c, "dead_channel_fraction", 0.01, ".1f", " %")),
    "size": ("model.keras", lambda c, r, is_ref: _mean(c, "model_bytes", 2**20, ".2f", " MiB")),
    "gzip": ("gzip vs reference", lambda c, r, is_ref: _gzip_ratio(c, r)),
    "time": ("trial time", lambda c, r, is_ref: _mean(c, "duration_s", spec=".0f", suffix=" s")),
}


def paired_table(rows: list[dict], references: dict[str, str], columns=()) -> str:
    """One line per variant (in `references`' order): seeds, val mean IoU mean ± sd, Δ vs
    its reference (pt, paired: mean ± sd over the seeds that have both), extra columns."""
    one_ref = len(set(references.values())) == 1
    delta_head = f"Δ vs {next(iter(references.values()))} (pt, paired)" if one_ref else "Δ vs reference (pt, paired)"
    head = ["variant", "seeds", "val mean IoU", delta_head, *(COLUMNS[c][0] for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for variant, ref in references.items():
        cells = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
        if not cells:
            continue
        ref_cells = [r for r in rows if r["variant"] == ref]
        scored = [c["iou"] for c in cells if c.get("iou") is not None]
        is_ref = variant == ref
        d = deltas(cells, ref_cells)
        delta = "—" if is_ref or not d else mean_sd(d, 2, "+") + ("" if one_ref else f" (vs {ref})")
        line = [variant, str(len(scored)) + (f" (+{len(cells) - len(scored)} diverged)" if len(scored) < len(cells)
                                             else ""), mean_sd(scored), delta,
                *(COLUMNS[c][1](cells, ref_cells, is_ref) for c in columns)]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def reference_curves(out: Path, rows: list[dict], references: dict[str, str]) -> str:
    """Each reference's validation mean IoU after every epoch, mean over its seeds: is the
    budget long enough (has the reference converged)?"""
    lines = []
    for ref in dict.fromkeys(references.values()):
        per_epoch: dict[int, list[float]] = {}
        for seed in sorted({r["seed"] for r in rows if r["variant"] == ref}):
            path = Path(out) / f"s{seed}-{ref}" / "history.csv"
            if path.is_file():
                with open(path) as f:
                    for row in csv.DictReader(f):
                        if row.get("val_mean_iou"):
                            per_epoch.setdefault(int(row["epoch"]), []).append(float(row["val_mean_iou"]))
        if per_epoch:
            lines.append(f"{ref}, val mean IoU by epoch (mean over seeds): "
                         + " ".join(f"{e}:{statistics.mean(v):.3f}" for e, v in sorted(per_epoch.items())))
    return "\n".join(lines)


def legend(variants: dict[str, tuple[list[str], str]]) -> str:
    """What each variant is: its trial flags."""
    return "Variants (trial flags):\n" + "\n".join(f"- {n}: `{shlex.join(flags) or '(none)'}`"
                                                    for n, (flags, _) in variants.items())


def footer(rows: list[dict], command: str, base: str, cpu: str, wall_s: float) -> str:
    precisions = ", ".join(sorted({r["precision"] for r in rows if "precision" in r}))
    trial_s = sum(r.get("duration_s", 0) for r in rows)
    return (f"`{command}`; every trial: `{base}`; {cpu}, precision {precisions}; wall {wall_s:.0f} s "
            f"(finished cells are not rerun; sum of trial times {trial_s:.0f} s)")


def publish(out: Path, result: dict, text: str) -> None:
    """A speed bench's outputs: OUT/results.json and OUT/table.md (each whole or absent), the
    table on stdout, where they went on stderr."""
    import sys

    from segmodel.files import write_json_atomic, write_text_atomic
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}", file=sys.stderr)
