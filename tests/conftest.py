import os
import sys
from pathlib import Path

import pytest

# Tests import helpers from this folder (nni_helpers) and never re-exec trial.py.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# export and predict refuse AMX to their process for good (segmodel/amx.py); the tests call them
# in this process, which trains afterwards: keep AMX here (tests/test_amx.py refuses it in children)
os.environ.setdefault("SEGMODEL_KEEP_AMX", "1")


@pytest.fixture
def policy():
    """Set Keras' dtype policy for one test (`policy("mixed_bfloat16")`); the process
    gets back the policy it had. Both precisions run on any x86 CPU (bf16 is only
    slow without AMX), so precision-dependent behaviour is tested on every machine."""
    import keras
    before = keras.mixed_precision.global_policy().name
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(before)


# ---- tiny real artifacts, built once per session (tests/artifact_helpers.py) ----------------

@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """The session's folder of tiny shared inputs: a dataset, a trial, its export."""
    base = tmp_path_factory.getbasetemp() / "segmodel-artifacts"
    base.mkdir(exist_ok=True)
    return base


@pytest.fixture(scope="session")
def trial(artifacts):
    """A finished tiny trial folder."""
    from artifact_helpers import tiny_trial
    return tiny_trial(artifacts)


@pytest.fixture(scope="session")
def exported(artifacts, trial):
    """`export` of the tiny trial, every format."""
    from artifact_helpers import tiny_export
    return tiny_export(artifacts)


@pytest.fixture(scope="module")
def unet():
    """The seed's U-Net at 32 px with random weights (every channel distinct), for pruning tests."""
    import keras
    from channel_helpers import randomize

    from segmodel.model import multi_unet_model
    keras.utils.set_random_seed(0)
    return randomize(multi_unet_model(0.1, 6, 32, 32, 3))
