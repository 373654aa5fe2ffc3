"""How sure we are of a winner: a confirm experiment's trials grouped by candidate, ranked
by their mean over seeds, the top two compared seed by seed.

A confirm experiment (`python -m segmodel confirm`) runs every candidate on the same seeds,
so two candidates are compared on their differences seed by seed (a paired t-test):
the seed moves every point by several IoU points, and pairing takes that shared part out.

Works on any object with `.trials` (each with `.parameters`, `.final`, `.status`) and
`.config`: records.Experiment, or trials built in a test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

TUNER = "segmodel.experiment.confirm_tuner.ConfirmTuner"
LABEL = "candidate"   # the hyperparameter that names a cell's candidate (a source trial id, or "dense")
REFERENCE = "dense"   # the label of the reference candidate (`confirm --reference dense`)
LEVEL = 0.05          # the two-sided level the one-line verdict uses


@dataclass
class Candidate:
    label: str
    by_seed: dict[int, float] = field(default_factory=dict)  # seed -> final metric
    parameters: dict = field(default_factory=dict)           # what its cells share (no seed, no label)
    trials: dict[int, object] = field(default_factory=dict)  # seed -> its trial

    @property
    def values(self) -> list[float]:
        return [self.by_seed[s] for s in sorted(self.by_seed)]

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation (n - 1); nan below two seeds."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class Paired:
    """`a` - `b` over the seeds both have: mean, sd, n, Student's t and its two-sided p."""
    mean: float
    sd: float
    n: int
    t: float
    p: float

    def distinguishable(self, level: float = LEVEL) -> bool:
        return self.n >= 2 and self.p < level


def is_confirm(exp) -> bool:
    return (exp.config.get("tuner") or {}).get("className") == TUNER


def candidates(exp, metric: str = "default", maximize: bool = True) -> list[Candidate]:
    """The experiment's candidates, best mean first; a cell counts once it has a final `metric`."""
    found: dict[str, Candidate] = {}
    for t in exp.trials:
        label = t.parameters.get(LABEL)
        if label is None:
            continue
        c = found.setdefault(str(label), Candidate(str(label)))
        if not c.parameters:
            c.parameters = {k: v for k, v in t.parameters.items() if k not in (LABEL, "seed")}
        value = t.final.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            seed = int(t.parameters.get("seed", 0))
            c.by_seed[seed], c.trials[seed] = float(value), t
    scored = [c for c in found.values() if c.n]
    scored.sort(key=lambda c: c.mean, reverse=maximize)
    return scored + [c for c in found.values() if not c.n]


def contenders(ranked: list[Candidate]) -> list[Candidate]:
    """The candidates that can win: those with a result, the reference aside; best first."""
    return [c for c in ranked if c.n and c.label != REFERENCE]


def paired(a: Candidate, b: Candidate) -> Paired:
    seeds = sorted(set(a.by_seed) & set(b.by_seed))
    diffs = [a.by_seed[s] - b.by_seed[s] for s in seeds]
    n = len(diffs)
    if n < 2:
        return Paired(diffs[0] if diffs else math.nan, math.nan, n, math.nan, math.nan)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return Paired(mean, 0.0, n, math.copysign(math.inf, mean) if mean else math.nan, 0.0 if mean else 1.0)
    t = mean / (sd / math.sqrt(n))
    return Paired(mean, sd, n, t, t_two_sided_p(t, n - 1))


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction
    (Lentz's method, as in Numerical Recipes' betai): no SciPy in the product."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h / a


def verdict(ranked: list[Candidate], metric: str, level: float = LEVEL) -> str:
    """One line: the winner, and whether the runner-up is told apart from it seed by seed."""
    able = contenders(ranked)
    if not able:
        return f"no candidate has a final {metric} yet"
    win = able[0]
    head = f"winner {win.label}: {metric} {win.mean:.4f} ± {win.sd:.4f} over {win.n} seeds"
    if len(able) < 2:
        return head + "; no runner-up to compare"
    second = able[1]
    d = paired(win, second)
    if d.n < 2:
        return head + f"; {second.label} shares fewer than 2 seeds with it: not compared"
    told = "distinguishable" if d.distinguishable(level) else "NOT distinguishable"
    return (f"{head}; vs runner-up {second.label}: {d.mean:+.4f} ± {d.sd:.4f} paired over {d.n} seeds, "
            f"p {d.p:.3f} (paired t): {told} at {level:g}")


def table(ranked: list[Candidate], metric: str) -> list[dict]:
    """One row per candidate: n, mean, sd, min, max, the paired difference to the winner and to
    the reference (when there is one), then its parameters."""
    able = contenders(ranked)
    reference = next((c for c in ranked if c.label == REFERENCE and c.n), None)
    rows = []
    for rank, c in enumerate(ranked, start=1):
        row = {"rank": rank if c.n else "", "candidate": c.label, "n": c.n, "mean": c.mean if c.n else None,
               "sd": None if math.isnan(c.sd) else c.sd, "min": min(c.values, default=None),
               "max": max(c.values, default=None)}
        if able and c is not able[0] and c.n:
            d = paired(c, able[0])
            row.update(vs_winner=d.mean, vs_winner_p=None if math.isnan(d.p) else d.p)
        if reference is not None and c is not reference and c.n:
            d = paired(c, reference)
            row.update(vs_reference=d.mean, vs_reference_p=None if math.isnan(d.p) else d.p)
        rows.append({**row, **c.parameters})
    return rows


def winner_trial(exp, metric: str = "default", maximize: bool = True):
    """The winning candidate's (best mean, the reference aside) trial with the best seed: what
    retrain and export take from a confirm experiment."""
    able = contenders(candidates(exp, metric, maximize))
    if not able:
        return None
    win = able[0]
    pick = max if maximize else min
    return win.trials[pick(win.by_seed, key=win.by_seed.get)]


def plot_seeds(ranked: list[Candidate], path, metric: str, title: str = "") -> bool:
    """Every seed's result per candidate (a strip plot, each seed's points joined across the
    candidates: the pairing), each candidate's mean as a bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in ranked if c.n]
    if not shown:
        return False
    seeds = sorted({s for c in shown for s in c.by_seed})
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(shown) + 2), 4.2), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, seed in enumerate(seeds):
        xs = [x for x, c in enumerate(shown) if seed in c.by_seed]
        ys = [shown[x].by_seed[seed] for x in xs]
        ax.plot(xs, ys, "-o", color=colours(i % 10), alpha=0.75, lw=1, ms=6, label=f"seed {seed}")
    for x, c in enumerate(shown):
        ax.hlines(c.mean, x - 0.25, x + 0.25, color="black", lw=2.5, zorder=3)
    ax.set_xticks(range(len(shown)), [f"{c.label}\n(n {c.n})" for c in shown], fontsize=8)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or f"{metric} per seed; bar = mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
