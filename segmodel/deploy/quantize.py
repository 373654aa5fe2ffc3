"""TFLite files that LiteRT's XNNPACK delegate runs whole: static shapes, int8 scales it accepts.

XNNPACK is LiteRT's fast CPU path, and one node it refuses costs the whole graph (the
runner falls back to TFLite's own kernels, 3-4x slower in int8). Two things made it
refuse our U-Net:

- TRANSPOSE_CONV is delegated only with a constant output-shape tensor. A SavedModel
  with an unknown batch computes it at run time (SHAPE -> STRIDED_SLICE -> PACK); so
  the converter's input here has a fixed shape (batch, side, side, channels), and the
  converter folds the shape into a constant.
- XNNPACK refuses a conv whose requantization scale (input scale x weight scale /
  output scale) is >= 256 (google/XNNPACK src/operators/convolution-nhwc.c, also
  deconvolution and fully-connected). A dead ReLU layer (0 on every calibration
  patch) calibrates to the range [0, FLT_MIN]: output scale 7.8e-9, requantization
  scale ~1000. `int8()` floors such an output range just enough (requantization
  scale <= FLOOR_REQUANT) and quantizes again. Where the float layer outputs 0 the
  int8 layer still outputs exactly its zero point (its ReLU clamps there), so on the
  calibration data nothing downstream changes; only the scales stop being degenerate.

Weights are per-channel (XNNPACK takes per-channel int8 for CONV_2D and TRANSPOSE_CONV).
XNNPACK has no int8 SOFTMAX, so by default (`int8_output="float"`) the softmax head stays
in float32 after a DEQUANTIZE: int8 input, int8 body, float32 probabilities out, and the
whole graph delegated. `int8_output="int8"` keeps an int8 softmax and int8 output (for
integer-only accelerators; on XNNPACK that one node runs on TFLite's kernel).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..surgery import fresh_copy, resized_config
from .runners import tflite_api

KINDS = ("float32", "float16", "dynamic", "int8")
XNNPACK_REQUANT_LIMIT = 256.0   # XNNPACK: requantization scale must be < 256
FLOOR_REQUANT = 64.0            # what a floored range aims at: well inside the limit
FLOOR_ROUNDS = 4
FLOAT_OPS = ["SOFTMAX"]         # what XNNPACK cannot run in int8: kept float with int8_output="float"
INT8_OUTPUTS = ("float", "int8")
# op -> (index of its data input, index of its weights) in TFLite's operand order
WEIGHTED_OPS = {"CONV_2D": (0, 1), "DEPTHWISE_CONV_2D": (0, 1), "FULLY_CONNECTED": (0, 1),
                "TRANSPOSE_CONV": (2, 1)}


class ConversionError(Exception):
    """The TFLite converter failed (its first line is kept)."""


@dataclass
class Converted:
    """A TFLite flatbuffer and what was done to make XNNPACK accept it."""
    content: bytes
    kind: str
    shape: tuple                                      # the fixed input shape
    floored: list[str] = field(default_factory=list)  # int8: tensors whose calibrated range was floored
    problems: list[str] = field(default_factory=list)  # what XNNPACK will still refuse (one line each)


def at_size(model, side: int):
    """The same weights in a model built for side x side inputs (the U-Net is fully convolutional)."""
    if tuple(model.input_shape[1:3]) == (side, side):
        return model
    return fresh_copy(model, resized_config(model.get_config(), input_shape=(side, side, model.input_shape[-1])))


def float32_model(model):
    """The same weights under a float32 policy: mixed-precision layers (bf16/fp16
    compute) would otherwise put casts in the SavedModel and TFLite graphs."""
    if all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers):
        return model
    config = model.get_config()
    for spec in config["layers"]:
        spec["config"]["dtype"] = "float32"
    return fresh_copy(model, config)


def representative_images(splits, n: int):
    """Up to n training patches (HxWxC float32), what int8 calibrates on."""
    count = 0
    for x, _ in splits.train:
        for img in np.asarray(x):
            if count >= n:
                return
            count += 1
            yield img.astype(np.float32)


def static_saved_model(model, folder: Path, batch: int = 1, side: int | None = None) -> tuple:
    """Write `model` as a SavedModel whose only input shape is (batch, side, side, C)."""
    import tensorflow as tf
    side = side or int(model.input_shape[1])
    sized = at_size(model, side)
    shape = (batch, side, side, int(model.input_shape[-1]))
    sized.export(str(folder), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    return shape


def convert(model, kinds, images=None, batch: int = 1, side: int | None = None,
            int8_output: str = "float") -> dict[str, Converted]:
    """`model` as TFLite files of each of `kinds`, from one SavedModel with a fixed input
    shape (batch, side, side, C). int8 calibrates on `images()`: an iterable of float32
    HxWxC images (tiled up to `side` if smaller)."""
    with tempfile.TemporaryDirectory() as tmp:
        shape = static_saved_model(model, Path(tmp), batch, side)
        return {kind: convert_saved_model(Path(tmp), kind, images, shape, int8_output) for kind in kinds}


def convert_saved_model(saved_dir: Path, kind: str, images=None, shape=None, int8_output: str = "float") -> Converted:
    """A SavedModel as TFLite (float32, float16 weights, dynamic-range int8 weights, or full int8).
    `shape`: the SavedModel's fixed input shape (calibration batches are built to it)."""
    if kind not in KINDS:
        raise ValueError(f"unknown TFLite kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "int8":
        if images is None:
            raise ValueError("int8 needs calibration images")
        return int8(saved_dir, images, shape, int8_output=int8_output)
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    if kind in ("float16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]   # no representative data: weights only
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return Converted(_run(converter, kind), kind, tuple(shape or ()))


def _run(converter, what: str) -> bytes:
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - converter errors are pages long; keep the first line
        raise ConversionError(f"TFLite {what} conversion failed: {str(e).strip().splitlines()[0][:300]}") from None


def calibration_batches(images, shape):
    """Calibration inputs of exactly `shape` (batch, side, side, C): images tiled up to
    the side (a mosaic of the same patch: the same statistics), grouped by batch."""
    def generate():
        batch, side = (shape[0], shape[1]) if shape else (1, None)
        group = []
        for img in images():
            img = np.asarray(img, np.float32)
            if side and img.shape[0] != side:
                reps = -(-side // img.shape[0])
                img = np.tile(img, (reps, reps, 1))[:side, :side]
            group.append(img)
            if len(group) == batch:
                yield [np.stack(group)]
                group = []
        if group:  # a short last group: repeat its images to fill the batch
            yield [np.stack([group[i % len(group)] for i in range(batch)])]
    return generate


def int8(saved_dir: Path, images, shape=None, per_channel: bool = True, int8_output: str = "float",
         floor: bool = True) -> Converted:
    """Integer int8 (int8 input; output as `int8_output`), calibrated on `images()`, with
    every conv's requantization scale below XNNPACK's limit (degenerate output ranges floored)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration_batches(images, shape)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # What convert() does for int8, in two steps, so the ranges can be looked at in between:
    # calibrate (a float model with each tensor's min/max), then quantize (MLIR quantizer).
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the converter's own two-step path
    calibrated = _run(converter, "int8 calibration")
    floors: dict[str, float] = {}
    for _ in range(FLOOR_ROUNDS):
        try:
            content = bytes(mlir_quantize(
                with_range_floors(calibrated, floors), not per_channel, input_data_type=tf.int8,
                output_data_type=tf.float32 if int8_output == "float" else tf.int8,
                denylisted_ops=FLOAT_OPS if int8_output == "float" else None))
        except Exception as e:  # noqa: BLE001
            raise ConversionError(f"TFLite int8 quantization failed: {str(e).strip().splitlines()[0][:300]}") \
                from None
        too_big = requant_scales(content, over=XNNPACK_REQUANT_LIMIT / 2)
        if not too_big or not floor:
            break
        for r in too_big:  # the output scale that brings the requantization scale to FLOOR_REQUANT
            floors[r.output] = max(floors.get(r.output, 0.0), 255 * r.input_scale * r.weight_scale / FLOOR_REQUANT)
    return Converted(content, "int8", tuple(shape or ()), floored=sorted(floors),
                     problems=[r.describe() for r in requant_scales(content)])


def with_range_floors(calibrated: bytes, floors: dict[str, float]) -> bytes:
    """The calibrated model with tensor `name`'s recorded range widened to at least floors[name]."""
    if not floors:
        return calibrated
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    found = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            q = tensor.quantization
            if name in floors and q is not None and q.min is not None and len(q.min) == 1:
                low = min(float(q.min[0]), 0.0)
                q.max = np.array([max(float(q.max[0]), low + floors[name])], np.float32)
                found.add(name)
    missing = set(floors) - found
    if missing:
        raise ConversionError(f"int8: no calibrated range recorded for {', '.join(sorted(missing))}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# ---- what XNNPACK will refuse ---------------------------------------------------------------------

@dataclass
class Requant:
    """One weighted node's largest requantization scale."""
    node: int
    op: str
    output: str          # its output tensor's name
    scale: float         # max over output channels of input * weight / output scale
    input_scale: float
    weight_scale: float  # the channel's (or the tensor's) weight scale
    output_scale: float

    def describe(self) -> str:
        return (f"{self.op} node {self.node} -> '{short_name(self.output)}': requantization scale "
                f"{self.scale:.4g} >= {XNNPACK_REQUANT_LIMIT:g} (input {self.input_scale:.3g} x weight "
                f"{self.weight_scale:.3g} / output {self.output_scale:.3g}), which XNNPACK refuses")


def short_name(tensor: str) -> str:
    """A fused TFLite tensor name's first part ('model/up2_conv2_1/Relu;model/...' -> 'model/up2_conv2_1/Relu')."""
    return tensor.split(";")[0]


def requant_scales(content: bytes, over: float = XNNPACK_REQUANT_LIMIT) -> list[Requant]:
    """The int8 weighted nodes whose requantization scale is >= `over` (XNNPACK's check, per channel)."""
    Interpreter, resolver = tflite_api()
    interp = Interpreter(model_content=content, experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    scales = lambda i: np.asarray(tensors[i]["quantization_parameters"]["scales"], np.float64)  # noqa: E731
    found = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's only view of the graph
        if op["op_name"] not in WEIGHTED_OPS:
            continue
        data, weights = (op["inputs"][i] for i in WEIGHTED_OPS[op["op_name"]])
        out = op["outputs"][0]
        s_in, s_w, s_out = scales(data), scales(weights), scales(out)
        if not (len(s_in) and len(s_w) and len(s_out)):
            continue  # not an int8 node (a float head, say)
        per_channel = s_in[0] * s_w / s_out[0]
        worst = int(np.argmax(per_channel))
        if per_channel[worst] >= over:
            found.append(Requant(int(op["index"]), op["op_name"], tensors[out]["name"], float(per_channel[worst]),
                                 float(s_in[0]), float(s_w[worst]), float(s_out[0])))
    return found
