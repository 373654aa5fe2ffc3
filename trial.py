"""One NNI trial: parameters = defaults, then command-line flags, then what NNI sends;
then segmodel does the work. Run it alone too: `python trial.py --help`."""
import os
import sys
from pathlib import Path

# Run with the project's interpreter even when NNI started us with another `python3`
# (nnictl launched from a non-activated venv): re-exec into ./.venv if it exists.
_venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
if _venv_python.exists() and Path(sys.prefix).resolve() != _venv_python.parent.parent.resolve() \
        and not os.environ.get("SEGMODEL_NO_REEXEC"):
    os.execv(str(_venv_python), [str(_venv_python), *sys.argv])

# Keras imports scikit-learn and pandas when they are installed (NNI installs both) for its
# sklearn wrapper and DataFrame inputs; a trial uses neither, and importing them is about half
# a second of every trial's start (docs/machines.md, "Where a trial's time goes").
sys.modules.update(dict.fromkeys(("sklearn", "pandas"), None))

from segmodel.cli_trial import main  # noqa: E402

if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Every file is written (atomically) and the result reported: skip the interpreter's
    # teardown of TensorFlow, most of a second of every trial between its result and its exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
