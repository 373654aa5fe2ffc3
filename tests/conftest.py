import os
import sys
from pathlib import Path

# Tests import helpers from this folder (nni_helpers) and never re-exec trial.py.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
