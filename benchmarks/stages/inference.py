"""Section 6 of `stages`: inference images/s of dense, pruned and the pruned model's TFLite file."""
from __future__ import annotations

from ..machine import QuietFds
from ..timing import timed_calls


def tflite_bytes(model) -> bytes:
    import tensorflow as tf

    with QuietFds():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def inference_throughput(dense, pruned_model, x, sizes, threads: int) -> dict:
    """Images/s of a traced forward pass (dense, pruned) and of the pruned model's TFLite
    export through the runner `predict` uses, all float32, same batches, interleaved."""
    import numpy as np
    import tensorflow as tf

    from segmodel.deploy.runners import TFLiteRunner

    bs, n = sizes["batch_size"], sizes["infer_batches"]
    batch = np.ascontiguousarray(x[:bs])
    tflite = tflite_bytes(pruned_model)
    runner = TFLiteRunner(tflite, threads=threads)
    runners = {"tflite pruned": lambda: runner.probabilities(batch)}
    for name, model in (("dense", dense), ("pruned", pruned_model)):
        fn = tf.function(lambda b, m=model: m(b, training=False))
        runners[name] = lambda fn=fn: fn(batch).numpy()
    result = {name: round(bs / t, 1) for name, t in timed_calls(runners, n).items()}
    pruned_pred = np.argmax(tf.function(lambda b: pruned_model(b, training=False))(batch).numpy(), -1)
    agree = float(np.mean(runner(batch) == pruned_pred))
    return {"img_s": result, "tflite_kb": round(len(tflite) / 1024), "tflite_pixel_agreement": round(agree, 4)}
