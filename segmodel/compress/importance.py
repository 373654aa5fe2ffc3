"""How important each output channel is: NNI's pruning criteria, apart from the graph and the pruner.

From the kernels: L1 / L2 norm (L1NormPruner, L2NormPruner), FPGM's distance to the
geometric median (FPGMPruner). From activations on calibration samples (activation_stats):
1 - APoZ (ActivationAPoZRankPruner) and the mean activation (ActivationMeanRankPruner).
Low = pruned first.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError
from ..params import ACTIVATION_CRITERIA, CRITERIA
from .graph import PRODUCERS


def filters_of(layer) -> np.ndarray:
    """The layer's kernel as (output channels, everything else)."""
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    out_axis = PRODUCERS[type(layer).__name__][1]
    return np.moveaxis(kernel, out_axis, 0).reshape(kernel.shape[out_axis], -1)


def importance(filters: np.ndarray, criterion: str) -> np.ndarray:
    """Per-filter score, low = pruned first: L1 or L2 norm, or for FPGM the summed
    Euclidean distance to all other filters (filters near the geometric median are
    the most replaceable; He et al. 2019, NNI's FPGMPruner)."""
    if criterion == "l1":
        return np.abs(filters).sum(1)
    if criterion == "l2":
        return np.sqrt((filters ** 2).sum(1))
    if criterion == "fpgm":
        sq = (filters ** 2).sum(1)  # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: C x C memory, not C x C x k
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * filters @ filters.T, 0)
        np.fill_diagonal(d2, 0)  # exactly: rounding would leave sqrt(1e-16)-sized self-distances
        return np.sqrt(d2).sum(1)
    raise ParamError(f"channel_criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")


def group_score(model, members: list[str], criterion: str, stats, dead: np.ndarray) -> np.ndarray:
    """The tied group's summed importance; channels dead in every member (`dead`) score -inf."""
    if criterion not in ACTIVATION_CRITERIA:
        return sum(importance(filters_of(model.get_layer(m)), criterion) for m in members)
    score = sum(1 - stats.layers[m].apoz if criterion == "apoz" else stats.layers[m].mean for m in members)
    return np.where(dead, -np.inf, score)
