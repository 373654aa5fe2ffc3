"""Run any exported model file the same way: `.keras`, a SavedModel folder, or
`.tflite` (float or full-integer). Export measures with these runners and predict
uses them, so both see exactly what a deployment would.

Every runner takes float32 NHWC images in [0, 1] and returns class probabilities.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ..errors import SegmodelError


class ModelFileError(SegmodelError):
    """A model file is missing, of an unknown kind, or unreadable."""


def load_runner(path, threads: int | None = None):
    """The runner for a model file; ModelFileError (one line) if it can't be used."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no such model file: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelFileError(f"{path}: a folder, but not a SavedModel (no saved_model.pb)")
        return SavedModelRunner(path)
    if path.suffix == ".keras":
        return KerasRunner(path)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, threads)
    raise ModelFileError(f"{path}: unknown model format (expected .keras, .tflite or a SavedModel folder)")


class Runner:
    patch_size: int | None = None   # the square input side the model was built for (None = any)
    n_classes: int = 0

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class index per pixel."""
        return self.probabilities(x).argmax(-1)


class KerasRunner(Runner):
    def __init__(self, path: Path):
        import keras
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 - zip/h5/config errors: one line is enough
            raise ModelFileError(f"{path}: cannot load Keras model ({str(e).splitlines()[0][:200]})") from None
        shape = self.model.input_shape
        self.patch_size = shape[1] if shape[1] == shape[2] else None
        self.n_classes = int(self.model.output_shape[-1])

    def probabilities(self, x):
        return np.asarray(self.model(np.asarray(x, np.float32), training=False), np.float32)


class SavedModelRunner(Runner):
    def __init__(self, path: Path):
        import tensorflow as tf
        self._tf = tf
        self.loaded = tf.saved_model.load(str(path))  # keep a reference: `serve` needs its variables
        fn = self.loaded.signatures.get("serving_default") if hasattr(self.loaded, "signatures") else None
        spec = fn.structured_input_signature[1] if fn is not None else {}
        shape = next(iter(spec.values())).shape if spec else None
        self.patch_size = int(shape[1]) if shape is not None and shape[1] and shape[1] == shape[2] else None
        out = fn.structured_outputs if fn is not None else {}
        self.n_classes = int(next(iter(out.values())).shape[-1]) if out else 0

    def probabilities(self, x):
        return np.asarray(self.loaded.serve(self._tf.constant(np.asarray(x, np.float32))), np.float32)


def tflite_api():
    """(Interpreter, OpResolverType) of LiteRT (`ai-edge-litert`, the successor of
    tf.lite's) when installed, else of tf.lite: same constructors and methods."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return Interpreter, OpResolverType


def tflite_interpreter_class():
    return tflite_api()[0]


class TFLiteRunner(Runner):
    """The TFLite interpreter, quantizing the input and dequantizing the output
    when the file has integer I/O (scale and zero point read from the file).

    TFLite applies its XNNPACK delegate by default. When the delegate cannot be made
    (XNNPACK refuses a node: "failed to create XNNPACK runtime"; or it failed while
    another process was starting) a measurement must not die on that: the runner says
    so in one line on stderr and goes on with TFLite's own kernels (same results,
    slower). `delegation` says which runtime ran, from the interpreter's graph.

    A file with a fixed batch (segmodel's exports: batch 1) is fed in chunks of that
    batch; one with a free batch is resized to each call's batch."""

    def __init__(self, path: Path | bytes, threads: int | None = None, xnnpack: bool = True):
        """`path`: a .tflite file, or a converted model's bytes (what the benches time)."""
        self.content = path if isinstance(path, bytes) else None
        self.path, self.threads = Path("model.tflite" if self.content else path), threads or _cores()
        self.xnnpack = xnnpack
        self.delegate_error: str | None = None
        self.interpreter = self._open()
        signature = self.input.get("shape_signature", self.input["shape"])
        self.fixed_batch = int(signature[0]) if int(signature[0]) > 0 else None
        self._batch = int(self.input["shape"][0])
        self.patch_size = int(self.input["shape"][1])
        self.n_classes = int(self.output["shape"][-1])
        self._retrying_without_xnnpack(lambda: self.interpreter.allocate_tensors())

    def _open(self):
        Interpreter, resolver = tflite_api()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            try:
                source = {"model_content": self.content} if self.content else {"model_path": str(self.path)}
                interpreter = Interpreter(
                    **source, num_threads=self.threads,
                    experimental_op_resolver_type=resolver.AUTO if self.xnnpack
                    else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            except ValueError as e:
                raise ModelFileError(f"{self.path}: not a TFLite model ({str(e).splitlines()[0][:200]})") from None
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        return interpreter

    def _retrying_without_xnnpack(self, step):
        """Run step(); if the XNNPACK delegate fails, reopen without it and run it again."""
        try:
            return step()
        except RuntimeError as e:
            if not self.xnnpack:
                raise
            self.delegate_error = " ".join(str(e).split())[:200]
            print(f"warning: {self.path.name}: XNNPACK delegate failed ({str(e).splitlines()[0][:120]}); "
                  "running without it", file=sys.stderr)
            self.xnnpack = False
            self.interpreter = self._open()
            self._batch = None  # not allocated yet: the next call resizes and allocates
            if self.fixed_batch:
                self.interpreter.allocate_tensors()
                self._batch = self.fixed_batch
            return step()

    @property
    def delegation(self) -> dict:
        """Which runtime runs the file: `runtime` "xnnpack" (every node delegated), "xnnpack
        partial" or "builtin"; `delegated_ops` of `ops`; the nodes left out; the delegate's error."""
        ops = self.interpreter._get_ops_details()  # noqa: SLF001 - the graph, as the interpreter holds it
        delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
        plain = [op for op in ops if op["op_name"] != "DELEGATE"]
        covered = delegated_nodes(plain, delegates) if self.xnnpack else set()
        # with nothing delegated, every node is left out: the delegate's error says why
        left = [f"{op['op_name']} node {op['index']}" for op in plain if covered and op["index"] not in covered]
        runtime = "builtin" if not covered else "xnnpack" if not left else "xnnpack partial"
        return {"runtime": runtime, "delegated_ops": len(covered), "ops": len(plain),
                "not_delegated": left, "delegate_error": self.delegate_error}

    def _resize(self, batch: int):
        self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input["shape"][1:]])
        self._batch = batch
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def _invoke(self, x):
        if self.fixed_batch:
            return self._invoke_in_chunks(x, self.fixed_batch)
        if self._batch != len(x):
            self._resize(len(x))
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def _invoke_in_chunks(self, x, batch: int):
        """A fixed-batch file: `batch` images per call, the last chunk padded by repeating its images."""
        outs = []
        for start in range(0, len(x), batch):
            chunk = x[start:start + batch]
            if len(chunk) < batch:
                chunk = chunk[np.arange(batch) % len(chunk)]
            self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(chunk))
            self.interpreter.invoke()
            outs.append(self.interpreter.get_tensor(self.output["index"])[:len(x) - start])
        return np.concatenate(outs)

    def probabilities(self, x):
        x = np.asarray(x, np.float32)
        if self.input["dtype"] in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input["dtype"])
        y = self._retrying_without_xnnpack(lambda: self._invoke(x))
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


def delegated_nodes(plain: list[dict], delegates: list[dict]) -> set[int]:
    """Indices of the original nodes a delegate replaced. TFLite keeps the original nodes
    and appends one node per delegated partition, whose inputs and outputs are the
    partition's boundary: walking back from its outputs to its inputs finds its nodes."""
    producer = {int(t): op for op in plain for t in op["outputs"]}
    covered: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            op = producer[t]
            covered.add(int(op["index"]))
            stack += [int(u) for u in op["inputs"] if u >= 0]
    return covered


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
