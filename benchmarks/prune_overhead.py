"""Training-step overhead of holding pruning masks, side by side in one process.

    python benchmarks/prune_overhead.py --patch_size 64 --batch_size 8 --steps 20 --rounds 3

Prints one JSON line: median step time of the dense U-Net, of the pruned one with masks
held by the kernel constraint (what segmodel ships) and with masks re-applied by a
callback, and their ratios to dense.
"""
import argparse
import json

from segmodel import runtime
from segmodel.params import Params
from segmodel.pruning import measure_step_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--precision", default="auto", help="auto | float32 | mixed_bfloat16 | mixed_float16")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    precision = runtime.configure(Params(precision=args.precision, threads=args.threads))
    result = measure_step_overhead(args.patch_size, args.batch_size, args.sparsity, args.steps, args.rounds)
    print(json.dumps({**result, "precision": precision}))


if __name__ == "__main__":
    main()
