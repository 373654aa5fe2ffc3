"""The seed's task loss: weighted Dice + 1 x categorical focal (segmentation_models)."""
from __future__ import annotations

from typing import Sequence

import segmentation_models as sm

import segmodel  # noqa: F401  (sets SM_FRAMEWORK before segmentation_models is imported)


def task_loss(class_weights: Sequence[float]):
    """DiceLoss(class_weights) + 1 * CategoricalFocalLoss; inputs are one-hot truth and softmax probabilities."""
    return sm.losses.DiceLoss(class_weights=list(class_weights)) + 1 * sm.losses.CategoricalFocalLoss()
