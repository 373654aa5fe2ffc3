"""`trial.py` and `python -m segmodel train`: resolve parameters, run the trial, exit
0 on success and 2 with one readable line on a problem the user can fix. stdout gets
the final metrics alone (one JSON object); everything else goes to stderr."""
from __future__ import annotations

import contextlib
import json
import sys

from .errors import SegmodelError
from .experiment import nni_bridge
from .params import parse_flags, resolve


def main(argv: list[str] | None = None, prog: str = "trial.py") -> int:
    flags = parse_flags(argv, prog)
    try:
        params = resolve(flags, nni_bridge.tuned_parameters())
        out_dir = params.output_dir or nni_bridge.output_dir() or "out"
        with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines are progress: stderr
            # after the parameters are valid: importing TensorFlow takes seconds
            from .train import run_trial
            metrics = run_trial(params, nni_bridge.Reporter(), out_dir)
    except SegmodelError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
