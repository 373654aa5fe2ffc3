"""Section 5 of `stages`: the seed's way of training a pruned model against ours.

NNI 2.x's TensorFlow pruners wrapped each layer and re-applied the masks eagerly before
every forward pass; NNI 3.0 no longer has them, so `nni2_style_pruned` rebuilds what they did.
"""
from __future__ import annotations

from ..timing import timed_rounds
from .common import SPARSITY, log
from .training import build


def nni2_style_pruned(params, n_classes: int, sparsity: float = 0.8):
    """The seed's training setup, faithfully: float32, NNI 2.x's TensorFlow LevelPruner
    wrappers, which before every forward pass multiply each pruned layer's weights by
    its mask and write them back with `layer.set_weights([w.numpy() ...])` — only
    possible eagerly, so the model is compiled with run_eagerly=True (NNI 2.x: "the
    compressed model can only execute in eager mode")."""
    import keras
    import numpy as np
    from keras import ops

    from segmodel.compress.config_list import prunable_weights, weighted_layers
    from segmodel.compress.pruning import magnitude_mask
    from segmodel.losses import task_loss
    from segmodel.metrics import jacard_coef
    from segmodel.model import multi_unet_model

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(params.seed)
    inner = multi_unet_model(params.dropout_rate, n_classes, params.patch_size, params.patch_size, 3)
    wrapped = []  # (layer, [mask or None per weight]) as PrunerLayerWrapper.masks
    for layer in weighted_layers(inner):
        keep = {id(w) for w in prunable_weights(layer)}
        masks = [magnitude_mask(ops.convert_to_numpy(w), sparsity).astype("float32") if id(w) in keep else None
                 for w in layer.weights]
        wrapped.append((layer, masks))

    class NNI2PrunedUNet(keras.Model):
        def __init__(self):
            super().__init__(name="nni2_pruned_unet")
            self.inner = inner

        def call(self, x, training=False):
            for layer, masks in wrapped:  # PrunerLayerWrapper._update_weights
                new = [w if m is None else w * m for w, m in zip(layer.weights, masks)]
                layer.set_weights([np.asarray(ops.convert_to_numpy(w)) for w in new])
            return self.inner(x, training=training)

    model = NNI2PrunedUNet()
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=task_loss(params.class_weights),
                  metrics=["accuracy", jacard_coef], run_eagerly=True)
    return model


def seed_vs_ours(params, splits, x, y, sizes) -> dict:
    """Seed: whole set as numpy, fit(batch_size=8), eager mask re-application, float32.
    Ours: the tf.data pipeline, graph mode, constraint masks, precision auto."""
    import keras

    from segmodel import runtime

    bs = sizes["batch_size"]
    seed = nni2_style_pruned(params, splits.n_classes, SPARSITY)
    seed.fit(x[:2 * bs], y[:2 * bs], batch_size=bs, epochs=1, verbose=0)  # build + first eager step
    auto = runtime.choose_precision("auto")
    ours, _ = build(params, splits.n_classes, auto, pruned=True, ds_spec=splits.train.element_spec)
    train = splits.train.repeat()
    ours.fit(train, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    n_seed = sizes["baseline_steps"]
    variants = {
        "seed": ("float32", lambda n, cb: seed.fit(x[:bs * min(n, n_seed + 1)], y[:bs * min(n, n_seed + 1)],
                                                   batch_size=bs, epochs=1, verbose=0, callbacks=cb)),
        "ours": (auto, lambda n, cb: ours.fit(train, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False,
                                              callbacks=cb)),
    }
    log(f"seed-style vs ours: {max(2, sizes['rounds'] - 1)} rounds")
    step = timed_rounds(variants, max(2, sizes["rounds"] - 1), sizes["steps"])
    keras.mixed_precision.set_global_policy("float32")
    return {"seed_step_ms": round(step["seed"] * 1e3, 1), "seed_img_s": round(bs / step["seed"], 1),
            "ours_step_ms": round(step["ours"] * 1e3, 1), "ours_img_s": round(bs / step["ours"], 1),
            "ours_precision": auto, "speed-up": round(step["seed"] / step["ours"], 2)}
