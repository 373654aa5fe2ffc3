"""NNI's side: experiments, their trials and the manager, seen from outside a trial and in it.

    load(EXPERIMENT) -> Experiment          # records.py: an experiment's trials from NNI's own files
    select_trial(EXPERIMENT, trial_id)      # records.py: the best trial, or a named one
    python -m segmodel report EXPERIMENT    # report.py: leaderboard and plots
    InformedTuner                           # tuner.py: any NNI tuner, told about every trial that ends
    Reporter()                              # nni_bridge.py: the trial's only `nni` import
    trial_concurrency(), free_port()        # manager.py: the manager's REST API and ports
    listening.py, loopback_hook.py          # the web UI on loopback unless asked (docs/security.md)

Names resolve on first use: importing this face loads neither nni nor TensorFlow.
"""
from importlib import import_module

_HOMES = {"load": "records", "select_trial": "records", "Experiment": "records", "Trial": "records",
          "ExperimentError": "records", "InformedTuner": "tuner", "Reporter": "nni_bridge",
          "trial_concurrency": "manager", "free_port": "manager"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
