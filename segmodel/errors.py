"""One exception family for every problem a user can fix: the CLI and trial.py
turn it into one readable line and exit status 2 (NNI then marks the trial FAILED)."""


class SegmodelError(Exception):
    """A problem with the user's input, not a bug: print the message, exit 2."""

    exit_code = 2


class ParamError(SegmodelError):
    """A parameter from defaults, flags or NNI is invalid or unknown."""


class DataError(SegmodelError):
    """The dataset is missing, unreadable or inconsistent. Name the file."""


class TrainingDiverged(SegmodelError):
    """The loss became NaN or infinite."""
