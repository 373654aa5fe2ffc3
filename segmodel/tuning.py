"""The tuner's old home, kept because NNI stores the class path in every experiment's profile:
an experiment created with `className: segmodel.tuning.InformedTuner` still resumes and views.
New configs name `segmodel.experiment.tuner.InformedTuner`."""
from .experiment.tuner import InformedTuner  # noqa: F401
