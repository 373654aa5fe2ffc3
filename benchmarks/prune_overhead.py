"""Training-step cost of holding pruning masks: dense vs constraint (ours) vs callback.

    python -m benchmarks prune-overhead --patch-size 64 --batch-size 8 --steps 20 --rounds 4

Three U-Nets in this process, timed in interleaved rounds on the same random batches:
dense, masks held by each kernel's constraint (what segmodel ships), and masks
re-applied by a callback after every batch (the alternative). Prints one JSON line:
median step times and their ratios to dense.
"""
from __future__ import annotations

import json

from .timing import timed_rounds

METHODS = ("dense", "constraint", "callback")


def add_arguments(p) -> None:
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sparsity", type=float, default=0.8)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    p.add_argument("--precision", default="auto", help="auto | float32 | mixed_bfloat16 | mixed_float16")
    p.add_argument("--threads", type=int, default=0)


def main(args) -> int:
    from segmodel import runtime
    from segmodel.params import Params

    params = Params(precision=args.precision, threads=args.threads).validate()
    runtime.configure(params)
    print(json.dumps(measure(args.patch_size, args.batch_size, args.sparsity, args.steps, args.rounds)))
    return 0


def reapply_masks(pairs):
    """The alternative to the constraint: a callback that re-multiplies weights by their
    masks after each batch."""
    import keras

    def apply(batch, logs=None):
        for w, mask in pairs:
            w.assign(w * mask)
    return keras.callbacks.LambdaCallback(on_train_batch_end=apply)


def _model(method: str, patch: int, n_classes: int, sparsity: float):
    """A compiled U-Net and the callbacks its training needs."""
    import keras

    from segmodel.compress.config_list import prunable_weights, weighted_layers
    from segmodel.compress.pruning import Pruner, magnitude_mask
    from segmodel.losses import task_loss
    from segmodel.metrics import training_metrics
    from segmodel.model import multi_unet_model

    keras.utils.set_random_seed(0)
    model = multi_unet_model(0.1, n_classes, patch, patch, 3)
    callbacks = []
    if method == "constraint":
        Pruner(model, [{"sparsity": sparsity, "op_types": ["default"]}]).prune()
    elif method == "callback":
        pairs = []
        for layer in weighted_layers(model):
            for w in prunable_weights(layer):
                mask = magnitude_mask(w.numpy(), sparsity)
                w.assign(w.numpy() * mask)
                pairs.append((w, keras.Variable(mask.astype(w.dtype), dtype=w.dtype, trainable=False)))
        callbacks.append(reapply_masks(pairs))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=task_loss([1 / n_classes] * n_classes),
                  metrics=training_metrics(n_classes))
    return model, callbacks


def measure(patch_size: int = 64, batch_size: int = 8, sparsity: float = 0.8, steps: int = 20, rounds: int = 3,
            n_classes: int = 6) -> dict:
    """Median seconds per training step of each method, in the current dtype policy."""
    import keras
    import numpy as np

    policy = keras.mixed_precision.global_policy().name
    rng = np.random.default_rng(0)
    n = batch_size * (steps + 1)
    x = rng.random((n, patch_size, patch_size, 3), dtype=np.float32)
    y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, (n, patch_size, patch_size))]
    variants = {}
    for method in METHODS:
        model, callbacks = _model(method, patch_size, n_classes, sparsity)
        model.fit(x[:2 * batch_size], y[:2 * batch_size], batch_size=batch_size, epochs=1, verbose=0,
                  callbacks=callbacks)  # trace once, outside the clock

        def run(n_steps, clock, model=model, callbacks=callbacks):
            model.fit(x[:n_steps * batch_size], y[:n_steps * batch_size], batch_size=batch_size, epochs=1,
                      verbose=0, shuffle=False, callbacks=[*callbacks, *clock])
        variants[method] = (policy, run)
    step = timed_rounds(variants, rounds, steps)
    return {"patch_size": patch_size, "batch_size": batch_size, "sparsity": sparsity, "steps": steps * rounds,
            "precision": policy, **{f"{m}_step_s": round(s, 5) for m, s in step.items()},
            "constraint_ratio": round(step["constraint"] / step["dense"], 3),
            "callback_ratio": round(step["callback"] / step["dense"], 3)}
