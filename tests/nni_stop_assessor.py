"""A test assessor that NNI loads by className (codeDirectory: tests/): it stops the first
trial it sees at that trial's first intermediate result and lets every other trial run.
A deterministic stand-in for Medianstop, whose decisions depend on the model's scores."""
from nni.assessor import Assessor, AssessResult


class StopFirstTrial(Assessor):
    def __init__(self):
        self.victim = None

    def assess_trial(self, trial_job_id, trial_history):
        self.victim = self.victim or trial_job_id
        return AssessResult.Bad if trial_job_id == self.victim else AssessResult.Good
