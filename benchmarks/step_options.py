"""The steady training step under what the field tries on CPUs: precision x XLA, side by side.

    python -m benchmarks step-options [--patch-size 64] [--batch-size 16] [--rounds 5] [--steps 10]

The trial's model (its default architecture, or --architecture) on fixed in-memory batches,
compiled as a trial compiles it, in float32 and mixed_bfloat16, each with TensorFlow's graph
(what trials use) and with XLA (`jit_compile=True`), and the graph steps again with the
trial's DivergenceGuard (a check of every weight after every batch). Each variant's first call (trace, and
XLA's compilation) is timed apart, then all variants are timed interleaved in rounds
(benchmarks/timing.py): quote the ratios and name the CPU. oneDNN stays on (TensorFlow's x86
default), threads are the trial's (cores // 1).
"""
from __future__ import annotations

import json
import time

PRECISIONS = ("float32", "mixed_bfloat16")


def add_arguments(p) -> None:
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--architecture", default=None, help="the trial's default unless given")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)


def main(args) -> int:
    from segmodel import data as datasets
    from segmodel import runtime
    from segmodel.callbacks import DivergenceGuard
    from segmodel.params import Params
    from segmodel.runtime import cpu_name

    from .stages.common import log
    from .stages.training import build, fixed_batches
    from .timing import timed_rounds

    params = Params(patch_size=args.patch_size, batch_size=args.batch_size, epochs=1, finetune_epochs=0,
                    **({"architecture": args.architecture} if args.architecture else {})).validate()
    runtime.configure(params)
    splits = datasets.load(params)
    _, _, ds = fixed_batches(splits, args.batch_size, n_batches=4)
    def steps(model, extra=()):  # run(n, callbacks) for timed_rounds: n steps of fit()
        return lambda n, cb: model.fit(ds, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False, callbacks=[*extra, *cb])

    variants, first_call = {}, {}
    for precision in PRECISIONS:
        for xla in (False, True):
            name = f"{precision}{' XLA' if xla else ''}"
            log(f"building, tracing{' and compiling' if xla else ''} {name}")
            model, _ = build(params, splits.n_classes, precision, False, ds.element_spec)
            model.jit_compile = xla
            t = time.perf_counter()
            steps(model)(1, [])
            first_call[name] = round(time.perf_counter() - t, 2)
            variants[name] = (precision, steps(model))
            if not xla:  # what a trial adds to every step: its divergence guard's check of the weights
                variants[f"{name} + guard"] = (precision, steps(model, [DivergenceGuard()]))
                first_call[f"{name} + guard"] = first_call[name]
    log(f"timing {len(variants)} variants x {args.rounds} rounds x {args.steps} steps")
    step = timed_rounds(variants, args.rounds, args.steps)
    base = step["float32"]
    rows = {name: {"step_ms": round(1e3 * s, 1), "speed_vs_float32": round(base / s, 3),
                   "first_call_s": first_call[name]} for name, s in step.items()}
    print(f"# Training step options: {params.architecture} U-Net, patch {args.patch_size}, batch {args.batch_size}, "
          f"{args.rounds} rounds x {args.steps} steps interleaved\nCPU: {cpu_name()}\n\n"
          "| variant | step (ms) | speed vs float32 graph | first call: trace (+ XLA compile) (s) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['step_ms']} | {r['speed_vs_float32']:.2f}x | {r['first_call_s']} |")
    print(json.dumps({"cpu": cpu_name(), "variants": rows}))
    return 0
