"""segmodel: tune, prune, distil and quantize a multi-class U-Net for aerial imagery.

`segmentation_models` picks its Keras backend from SM_FRAMEWORK at import time;
we set it here, before anything in the package can import it.
"""
import os

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
