"""segmodel: tune, prune, distil and quantize a multi-class U-Net for aerial imagery.

`segmentation_models` picks its Keras backend from SM_FRAMEWORK at import time;
we set it here, before anything in the package can import it.
"""
import os

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# The Dubai aerial imagery classes, in class-index order, with their mask colours.
CLASS_NAMES = ("Building", "Land", "Road", "Vegetation", "Water", "Unlabeled")
PALETTE = {
    "Building": "#3C1098",
    "Land": "#8429F6",
    "Road": "#6EC1E4",
    "Vegetation": "#FEDD3A",
    "Water": "#E2A929",
    "Unlabeled": "#9B9B9B",
}
