"""What the stages bench's sections share: the precisions and sparsity compared, a log line, memory."""
from __future__ import annotations

import resource
import sys

COMPARED = ("float32", "mixed_bfloat16")  # the precisions timed side by side (params.COMPARED: what a trial accepts)
SPARSITY = 0.8  # the seed's config_list


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> dict:
    import psutil
    return {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
