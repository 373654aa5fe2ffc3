"""What a figure was measured on, and a way to keep a converter's chatter out of the table."""
from __future__ import annotations

import os
import sys
import tempfile

from segmodel.runtime import cpu_name


def machine() -> dict:
    """CPU, cores, the threads a trial would pick, TensorFlow and Python versions, load."""
    import platform

    import tensorflow as tf

    from segmodel import runtime
    from segmodel.experiment.manager import trial_concurrency
    conc, source = trial_concurrency()
    return {"cpu": cpu_name(), "cores": runtime.available_cores(), "trial_concurrency": conc,
            "concurrency_from": source, "threads": runtime.default_threads(conc),
            "cpu_bf16": runtime.cpu_supports_bf16(), "tensorflow": tf.__version__,
            "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 2)}


class QuietFds:
    """Silence file descriptors 1 and 2 (the TFLite converter prints its whole function
    signature from C++ and Python), keeping the text to show if something fails."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.sink = tempfile.TemporaryFile()
        self.saved = [os.dup(1), os.dup(2)]
        for fd in (1, 2):
            os.dup2(self.sink.fileno(), fd)
        return self

    def __exit__(self, kind, *_):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        if kind is not None:
            self.sink.seek(0)
            sys.stderr.write(self.sink.read()[-4000:].decode(errors="replace"))
        self.sink.close()
