"""TFLite export at a fixed input size: float32, float16 weights, or full-integer int8, builtin ops only."""

import os
import tempfile

import numpy as np
import tensorflow as tf

from synergyseg.atomic import atomic_output
from synergyseg.export.saved_model import SIGNATURE_KEY, serving_module
from synergyseg.export.serving import SERVING_OUTPUTS, build_serving_model
from synergyseg.models.synergy import as_synergyseg
from synergyseg.quiet import CONVERTER_LINES, start_up_lines_dropped

QUANTIZATIONS = ("float32", "float16", "int8")
# Odd sizes convert and match Keras (tests/test_export.py: 33x47 and 48x96; no multiple needed:
# resizes are builtin RESIZE_BILINEAR, convolutions pad "same"). Below 32 the half-resolution
# branch's stride-16 features are a single pixel, so such sizes are refused.
MIN_TFLITE_SIZE = 32
# Set (to anything but "" or "0") to make `make_interpreter` refuse the tf.lite fallback: the tests
# set it, so "runs in ai-edge-litert" is what they check.
REQUIRE_LITERT_ENV = "SYNERGYSEG_REQUIRE_LITERT"


def check_tflite_size(size, model=None):
    """Returns `size` as `(height, width)` ints, or raises ValueError saying which sizes work
    (at least `MIN_TFLITE_SIZE`, and `model.min_input_size` when a model is given)."""
    try:
        height, width = size
        if not all(float(s) == int(s) for s in size):
            raise ValueError
        height, width = int(height), int(width)
    except (TypeError, ValueError):
        raise ValueError(f"TFLite size must be (height, width) integers, got {size!r}") from None
    if height < MIN_TFLITE_SIZE or width < MIN_TFLITE_SIZE:
        raise ValueError(
            f"TFLite size {height}x{width} is too small: height and width must be at least "
            f"{MIN_TFLITE_SIZE} (the half-resolution branch then still sees 16x16 pixels at "
            "stride 16). Any size from there on works, odd sizes included; no multiple is needed."
        )
    minimum = getattr(model, "min_input_size", 1)
    if height < minimum or width < minimum:
        raise ValueError(f"TFLite size {height}x{width} is too small for {model.name}: it takes at least "
                         f"{minimum}x{minimum} (its `min_input_size`)")
    return height, width


def _convert(serving, size, quantization, calibration_images):
    height, width = size
    module = serving_module(serving, input_shape=(1, height, width, 3))
    with tempfile.TemporaryDirectory(prefix="synergyseg-tflite-") as saved_model_dir:
        # Converting from a SavedModel freezes the variables into constants (from a concrete
        # function, TF 2.21 keeps them as resource variables the interpreter cannot initialize).
        tf.saved_model.save(module, saved_model_dir, signatures={SIGNATURE_KEY: module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, [SIGNATURE_KEY])
        # No SELECT_TF_OPS: the file must run in the plain TFLite / LiteRT interpreter.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            images = list(calibration_images)
            if not images:
                raise ValueError("int8 TFLite needs at least one calibration image")
            converter.representative_dataset = lambda: ([image] for image in images)
        with start_up_lines_dropped(CONVERTER_LINES):
            return converter.convert()


def convert_tflite(model, size, quantization="float32", calibration_images=None,
                   outputs=SERVING_OUTPUTS, class_map_stride=1):
    """The TFLite flatbuffer (bytes) of `model`'s serving graph at a fixed `(height, width)`.

    Args:
        model: a trained SynergySeg model.
        size: `(height, width)` of the one-image input batch.
        quantization: "float32"; "float16" (weights stored as float16, math in float32); or
            "int8" (weights and activations int8, calibrated on `calibration_images`).
        calibration_images: for "int8", an iterable of uint8 `(1, height, width, 3)` arrays
            (see `calibration_images`).
        outputs, class_map_stride: as in `build_serving_model` (e.g. `("class_map",)` and 4 for
            the fastest real-time file).

    Returns:
        bytes of a model with signature "serving_default": "images" uint8 `(1, h, w, 3)` ->
        "class_map" int32, "probabilities" and "uncertainty" float32 (those `outputs` names).
        Only builtin TFLite ops.
    """
    size = check_tflite_size(size, as_synergyseg(model))
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8" and calibration_images is None:
        raise ValueError("int8 TFLite needs calibration_images (uint8 (1, h, w, 3) arrays)")
    serving = build_serving_model(model, outputs, class_map_stride)
    content = _convert(serving, size, quantization, calibration_images)
    check_builtin_ops(content)
    if quantization == "int8":
        check_int8_scales(content)
    return content


def export_tflite(model, path, size, quantization="float32", calibration_images=None,
                  outputs=SERVING_OUTPUTS, class_map_stride=1):
    """Writes `convert_tflite(model, size, quantization, calibration_images, outputs,
    class_map_stride)` to `path` atomically."""
    content = convert_tflite(model, size, quantization, calibration_images, outputs, class_map_stride)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return path


def calibration_images(file_pattern, size, num_images=100):
    """uint8 `(1, height, width, 3)` images from TFRecord shards, resized to `size`, for int8 calibration.

    Images come from `synergyseg.data.eval_dataset` (the validation pipeline), resized bilinearly
    to the TFLite input size; labels are ignored.
    """
    from synergyseg.data import eval_dataset

    height, width = check_tflite_size(size)
    dataset = eval_dataset(file_pattern, batch_size=1, limit=num_images)
    for image, _ in dataset:
        resized = tf.image.resize(image, (height, width), method="bilinear")
        yield tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _operators(content):
    """Yields `(op name, operator, subgraph)` for every operator of a TFLite flatbuffer."""
    from synergyseg.export._tflite_schema import schema

    model = schema.Model.GetRootAsModel(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Builtin codes above 127 live in BuiltinCode(); older ones in DeprecatedBuiltinCode().
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            codes.append(names.get(builtin, f"UNKNOWN:{builtin}"))
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(i)
            yield codes[operator.OpcodeIndex()], operator, subgraph


def tflite_ops(content):
    """`{op name: count}` of a TFLite flatbuffer; custom ops (Flex included) appear as "CUSTOM:<code>"."""
    counts = {}
    for name, _, _ in _operators(content):
        counts[name] = counts.get(name, 0) + 1
    return counts


def check_builtin_ops(content):
    """Raises ValueError if the TFLite model uses custom or Flex (select TF) ops."""
    custom = sorted(name for name in tflite_ops(content) if name.startswith(("CUSTOM", "UNKNOWN")))
    if custom:
        raise ValueError(f"TFLite model needs non-builtin ops {custom}; it would not run in LiteRT")


# Ops whose int8 kernels move or pick values (their first input) without rescaling them, so the
# output must carry the input's scale and zero point or every value is misread. TF 2.21's
# quantizer breaks this for REVERSE_V2 (tf.reverse, keras.ops.flip): it calibrates the output a
# scale of its own, and a channel flip of 0..255 pixels came out as 1.49 * pixel - 115.
SAME_SCALE_INT8_OPS = frozenset({
    "BROADCAST_TO", "DEPTH_TO_SPACE", "EXPAND_DIMS", "GATHER", "MAX_POOL_2D", "PAD", "PADV2",
    "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "REVERSE_V2", "SLICE", "SPACE_TO_DEPTH", "SPLIT_V", "SQUEEZE", "STRIDED_SLICE", "TILE",
    "TRANSPOSE",
})


def _int8_params(tensor):
    from synergyseg.export._tflite_schema import schema

    quantization = tensor.Quantization()
    if tensor.Type() != schema.TensorType.INT8 or quantization is None:
        return None
    scales, zero_points = quantization.ScaleAsNumpy(), quantization.ZeroPointAsNumpy()
    return tuple(scales.tolist()), tuple(zero_points.tolist())


def check_int8_scales(content):
    """Raises ValueError if an int8 op that copies values (`SAME_SCALE_INT8_OPS`) rescales them.

    Such a file runs, but that op's output no longer means what the graph computes: a converter
    mistake, caught here rather than shipped as a silently wrong class map.
    """
    wrong = []
    for name, operator, subgraph in _operators(content):
        if name not in SAME_SCALE_INT8_OPS:
            continue
        source = subgraph.Tensors(operator.Inputs(0))
        expected = _int8_params(source)
        for j in range(operator.OutputsLength()):
            output = subgraph.Tensors(operator.Outputs(j))
            got = _int8_params(output)
            if expected is not None and got is not None and got != expected:
                wrong.append(f"{name} {output.Name().decode()!r}: input scale/zero point "
                             f"{expected[0][0]:.6g}/{expected[1][0]}, "
                             f"output {got[0][0]:.6g}/{got[1][0]}")
    if wrong:
        raise ValueError("int8 TFLite model rescales values in ops that cannot rescale (the "
                         "converter mis-quantized them; avoid these ops before export): "
                         + "; ".join(wrong))


def make_interpreter(model_path=None, model_content=None, num_threads=2):
    """A TFLite interpreter (XNNPACK CPU), from `ai-edge-litert` when installed, else `tf.lite`.

    `tf.lite.Interpreter` is deprecated in favour of LiteRT; both run the same builtin ops. With
    the environment variable SYNERGYSEG_REQUIRE_LITERT set, a missing LiteRT raises ImportError.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        if os.environ.get(REQUIRE_LITERT_ENV, "") not in ("", "0"):
            raise ImportError(f"ai-edge-litert is required ({REQUIRE_LITERT_ENV} is set) but "
                              f"cannot be imported: {e}; pip install ai-edge-litert") from e
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=model_path, model_content=model_content,
                              num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def undelegated_ops(content, num_threads=2):
    """`{op name: count}` of the ops of a TFLite flatbuffer that XNNPACK leaves to the interpreter.

    Read from the interpreter itself (XNNPACK is applied when it is created): each XNNPACK
    partition is one DELEGATE node whose inputs and outputs are the partition's; an op is
    delegated when it produces a partition output or feeds only delegated ops, and left out when
    it produces a tensor that a partition, the graph's outputs or another left-out op read. Ops
    left out run the interpreter's reference kernels between partitions (each costs a switch).
    """
    interpreter = make_interpreter(model_content=content, num_threads=num_threads)
    nodes = interpreter._get_ops_details()  # the one way the Python interpreter exposes its nodes
    partitions = [n for n in nodes if n["op_name"] == "DELEGATE"]
    originals = [n for n in nodes if n["op_name"] != "DELEGATE"]
    partition_inputs = {int(t) for n in partitions for t in n["inputs"]}
    partition_outputs = {int(t) for n in partitions for t in n["outputs"]}
    graph_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    consumers = {}
    for node in originals:
        for tensor in node["inputs"]:
            consumers.setdefault(int(tensor), []).append(node["index"])
    delegated = {}
    for node in reversed(originals):  # nodes are in execution (topological) order
        outputs = {int(t) for t in node["outputs"]}
        if outputs & partition_outputs:
            delegated[node["index"]] = True
        elif outputs & (partition_inputs | graph_outputs):
            delegated[node["index"]] = False
        else:
            users = [u for t in outputs for u in consumers.get(t, [])]
            delegated[node["index"]] = bool(users) and all(delegated[u] for u in users)
    counts = {}
    for node in originals:
        if not delegated[node["index"]]:
            counts[node["op_name"]] = counts.get(node["op_name"], 0) + 1
    return counts


def run_tflite(interpreter, images):
    """Runs the "serving_default" signature on uint8 `(1, h, w, 3)` images; returns the output dict."""
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    return runner(images=np.asarray(images, np.uint8))
