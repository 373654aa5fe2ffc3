"""Per-trial artifacts that need no code from the user: TensorBoard logs while
training, and PNG plots after it (curves, precision-recall, predictions).

Everything here is best effort: a plot that fails prints one warning and the
trial still succeeds, because its model and metrics are already saved.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .data.palette import from_mapping

# ---- TensorBoard, live -----------------------------------------------------------

def tensorboard_writer(log_dir) -> "TensorBoardLog | None":
    """A TensorBoardLog into `log_dir`, or None when tensorboard is not installed."""
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it)
    except ImportError:
        return None
    return TensorBoardLog(log_dir)


class TensorBoardLog:
    """Epoch scalars as keras.callbacks.TensorBoard names them (`epoch_loss` in runs
    `train` and `validation`), but stepped by the trial's epoch across all phases,
    so dense training and fine-tuning draw one continuous curve. It writes the rows a
    `callbacks.History` is given (`History(listeners=[log.write])`)."""

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self._writers = None

    def write(self, row: dict) -> None:
        import tensorflow as tf
        if self._writers is None:
            self._writers = {run: tf.summary.create_file_writer(str(self.log_dir / run))
                             for run in ("train", "validation")}
        step = int(row["epoch"])
        for run, writer in self._writers.items():
            with writer.as_default(step=step):
                for key, value in row.items():
                    if key in ("epoch", "phase") or not isinstance(value, float) or not math.isfinite(value):
                        continue
                    is_val = key.startswith("val_")
                    if is_val == (run == "validation"):
                        tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value)
                if run == "train":
                    tf.summary.text("phase", row["phase"])
            writer.flush()

    def close(self) -> None:
        for writer in (self._writers or {}).values():
            writer.close()
        self._writers = None


# ---- plots after training ------------------------------------------------------------

def write_trial_artifacts(out, sample: "ValidationSample", splits, history, metrics: dict | None = None) -> list[Path]:
    """Write the four PNGs into `out`; return the paths written. `sample`: what the final
    evaluation collected of the model's validation predictions (no pass of its own here)."""
    import matplotlib
    matplotlib.use("Agg")

    out = Path(out)
    written = []
    rows = list(getattr(history, "rows", history) or [])
    jobs = [("iou_vs_epoch.png", lambda p: plot_curves(rows, "mean_iou", "mean IoU", p)),
            ("loss_vs_epoch.png", lambda p: plot_curves(rows, "loss", "loss", p))]
    try:
        images, truth, probs, pr_true, pr_prob = sample.arrays()
        jobs += [("pr_curves.png", lambda p: plot_pr_curves(pr_true, pr_prob, splits.class_names, splits.palette, p)),
                 ("predictions.png", lambda p: plot_prediction_grid(images, truth, probs.argmax(-1),
                                                                    splits.class_names, splits.palette, p))]
    except Exception as e:  # noqa: BLE001 - plots must not fail a finished trial
        _warn(f"no validation predictions for plots: {e}")
    for name, job in jobs:
        path = out / name
        try:
            job(path)
            written.append(path)
        except Exception as e:  # noqa: BLE001
            _warn(f"could not write {path}: {e}")
    return written


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class ValidationSample:
    """What the plots need of the model's validation predictions, collected batch by batch
    during the final evaluation (`add` is its per-batch hook): the first `n_grid` patches
    (image, class index truth, probabilities) and, over at most `max_patches` patches, a
    uniform random subsample of about `max_pixels` pixels (one-hot truth, probabilities)
    for the precision-recall curves."""

    def __init__(self, splits, n_grid: int = 4, max_pixels: int = 200_000, max_patches: int = 256, seed: int = 0):
        self.n_grid, self.max_patches = n_grid, max_patches
        self.keep = min(1.0, max_pixels / (max(1, min(splits.n_val, max_patches)) * splits.patch_size ** 2))
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.grid_x, self.grid_y, self.grid_p, self.pr_y, self.pr_p = [], [], [], [], []

    def add(self, x, y, p) -> None:
        if self.seen >= self.max_patches:
            return
        self.seen += len(x)
        x, y, p = np.asarray(x), np.asarray(y), np.asarray(p, dtype=np.float32)
        if len(self.grid_x) < self.n_grid:
            take = self.n_grid - len(self.grid_x)
            self.grid_x += list(x[:take]); self.grid_y += list(y[:take].argmax(-1)); self.grid_p += list(p[:take])
        flat_y, flat_p = y.reshape(-1, y.shape[-1]), p.reshape(-1, p.shape[-1])
        mask = self.rng.random(len(flat_y)) < self.keep
        self.pr_y.append(flat_y[mask]); self.pr_p.append(flat_p[mask])

    def arrays(self):
        """(images, truth, probabilities) of the grid, then (one-hot truth, probabilities) of the pixels."""
        if not self.grid_x:
            raise ValueError("the validation set is empty")
        return (np.stack(self.grid_x), np.stack(self.grid_y), np.stack(self.grid_p),
                np.concatenate(self.pr_y).astype(bool), np.concatenate(self.pr_p))


def _phase_spans(rows):
    """[(phase, first_epoch, last_epoch)] for consecutive runs of the same phase."""
    spans = []
    for row in rows:
        e, ph = int(row["epoch"]), str(row["phase"])
        if spans and spans[-1][0] == ph:
            spans[-1][2] = e
        else:
            spans.append([ph, e, e])
    return spans


PHASE_COLOURS = {"dense": "#4C72B0", "finetune": "#DD8452", "pruned": "#55A868"}


def plot_curves(rows, key: str, label: str, path) -> None:
    """Train and validation `key` against the trial's epoch, phases shaded and named."""
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no epochs in the history")
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for ph, a, b in _phase_spans(rows):
        colour = PHASE_COLOURS.get(ph, "#8172B3")
        ax.axvspan(a - 0.5, b + 0.5, color=colour, alpha=0.12, lw=0)
        ax.text((a + b) / 2, 1.01, ph, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9,
                color=colour)
        if a > epochs[0]:
            ax.axvline(a - 0.5, color="#888888", ls="--", lw=0.8)
    for k, name, style in ((key, "train", "-o"), (f"val_{key}", "validation", "-s")):
        ys = [float(r.get(k, "nan") or "nan") for r in rows]
        if any(math.isfinite(v) for v in ys):
            ax.plot(epochs, ys, style, ms=4, lw=1.6, label=name)
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs epoch", pad=16)
    ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def precision_recall(y_true: np.ndarray, score: np.ndarray):
    """Precision, recall at every threshold (descending score) and average precision
    (the step-wise area, as sklearn's average_precision_score)."""
    order = np.argsort(-score, kind="stable")
    y = y_true[order].astype(np.float64)
    s = score[order]
    tp = np.cumsum(y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp, k = tp[last], last + 1
    positives = y.sum()
    if positives == 0:
        return np.array([1.0]), np.array([0.0]), float("nan")
    precision, recall = tp / k, tp / positives
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return precision, recall, ap


def plot_pr_curves(y_true: np.ndarray, probs: np.ndarray, class_names, palette: dict, path) -> None:
    """One precision-recall curve per class (one-vs-rest on softmax probabilities)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    for c, name in enumerate(class_names):
        precision, recall, ap = precision_recall(y_true[:, c], probs[:, c])
        if math.isnan(ap):
            ax.plot([], [], color=palette.get(name, None), label=f"{name} (absent)")
            continue
        ax.plot(recall, precision, color=palette.get(name, None), lw=2.2, label=f"{name}  AP={ap:.2f}",
                path_effects=_outline())
    ax.set_xlim(0, 1); ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall"); ax.set_ylabel("precision")
    ax.set_title(f"precision-recall per class (validation, {len(y_true):,} pixels)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _outline():
    """A thin dark edge so light palette colours (yellow, grey) read on white."""
    from matplotlib import patheffects
    return [patheffects.Stroke(linewidth=3.2, foreground="#33333355"), patheffects.Normal()]


def colourize(labels: np.ndarray, class_names, palette: dict) -> np.ndarray:
    """Class-index map HxW -> RGB uint8 image in the palette's colours."""
    lut = from_mapping({n: palette[n] for n in class_names}, "palette").colors
    return lut[np.clip(labels, 0, len(lut) - 1)]


def plot_prediction_grid(images, truth, pred, class_names, palette: dict, path) -> None:
    """Rows of image | truth | prediction, with a colour legend of the classes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n + 0.7), dpi=110, squeeze=False)
    for i in range(n):
        acc = float((truth[i] == pred[i]).mean())
        panels = ((np.clip(images[i], 0, 1), "image"), (colourize(truth[i], class_names, palette), "truth"),
                  (colourize(pred[i], class_names, palette), f"prediction ({acc:.0%} px correct)"))
        for ax, (img, title) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([])
            if i == 0 or title.startswith("prediction"):
                ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=palette.get(n, "#000000"), edgecolor="#333333", label=n) for n in class_names]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=9, frameon=False)
    fig.suptitle("validation predictions", fontsize=11)
    fig.tight_layout(rect=(0, 0.45 / (2.5 * n + 0.7), 1, 1))
    fig.savefig(path)
    plt.close(fig)
