"""Export: SavedModel, TFLite (float32/float16/int8) and ONNX each match the Keras model they came from.

The session's tiny run (conftest.py's `synthetic_run`: trained by train.py's code path on the
synthetic scenes, so its predictions are confident, as a real model's are: an untrained model's
near-uniform probabilities flip their argmax under any rounding) is exported once with every
format (`synthetic_export`), and every artifact is compared with Keras.
"""

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf

from synergyseg.data import SYNTHETIC, eval_dataset
from synergyseg.export import (
    QUANTIZATIONS, build_serving_model, check_builtin_ops, check_int8_scales,
    check_tflite_size, export_model, load_synergyseg_model, make_interpreter,
    run_tflite, tflite_ops)
from synergyseg.export.cli import main as cli_main
from synergyseg.models.resize import Downsample

HEIGHT, WIDTH = 48, 96  # conftest.SYNTHETIC_RUN_SIZE: the scenes' size, also the TFLite input size
# float16 stores weights rounded to 11 significant bits. Measured figures (BENCHMARKS.md,
# "Export", printed by `pytest -s`): float16 max |dp| 1.65e-3, 99.96% of classes equal; int8
# 98.95% of the 4 validation scenes' pixels, mIoU 0.2771 -> 0.2777 (2026-11-30).
FLOAT16_TOLERANCE = 1e-2
# Issue 6: full-integer int8 must give Keras's class on at least 97% of pixels (calibrated on 8
# training scenes). Near-tied pixels at class boundaries are what int8 flips: Keras itself with
# +-2 noise on the pixels agreed with an earlier model of this file on 99.5%.
INT8_MIN_AGREEMENT = 0.97
INT8_MAX_MIOU_DROP = 0.02


@pytest.fixture(scope="module")
def data_dir(synthetic_run):
    """The session's synthetic set: 16 training and 4 validation scenes of HEIGHT x WIDTH."""
    assert synthetic_run.size == (HEIGHT, WIDTH)
    return synthetic_run.data_dir


@pytest.fixture(scope="module")
def run_dir(synthetic_run):
    """A train.py run folder (best.keras, final.keras, config.json, ...); read-only (shared by the
    session)."""
    return synthetic_run.run_dir


@pytest.fixture(scope="module")
def model(run_dir):
    return load_synergyseg_model(run_dir)


@pytest.fixture(scope="module")
def exported(synthetic_export):
    """Every artifact of the run's best.keras: TFLite at HEIGHT x WIDTH, int8 calibrated on 8
    training scenes."""
    return synthetic_export


@pytest.fixture(scope="module")
def val_set(data_dir):
    """The synthetic validation scenes: uint8 images (1, h, w, 3) and int32 labels (1, h, w)."""
    return [(tf.cast(image, tf.uint8).numpy(), label.numpy())
            for image, label in eval_dataset(str(data_dir / "val-*"))]


def _keras_outputs(model, images):
    """What the trained Keras model itself says about uint8 `images`, without the serving graph.

    "probabilities": `model.predict` on the float pixels (as in training); "class_map" their
    argmax; "uncertainty": the paper's U(1 - max_c S_lo), from the model's own submodel on the
    half-resolution image, upsampled with tf.image.resize. A serving graph that fed the model other
    pixels, picked another output or another fusion, or upsampled differently would disagree.
    """
    x = images.astype(np.float32)
    probabilities = model.predict(x, batch_size=len(x), verbose=0)
    s_lo = model.submodel.predict(Downsample(2)(x), batch_size=len(x), verbose=0)
    uncertainty = tf.image.resize(1.0 - s_lo.max(axis=-1, keepdims=True), x.shape[1:3],
                                  method="bilinear").numpy()
    return {"probabilities": probabilities, "class_map": probabilities.argmax(-1),
            "uncertainty": uncertainty}


def _assert_same_class_map(class_map, expected, probabilities, tolerance):
    """`class_map` is Keras's argmax wherever Keras's top two classes are further apart than
    `tolerance` (a near-tie may flip under any rounding); elsewhere either of the two is fine."""
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > tolerance
    assert clear.mean() > 0.99, clear.mean()
    np.testing.assert_array_equal(class_map[clear], expected[clear])
    picked = np.take_along_axis(probabilities, class_map[..., None].astype(np.int64), -1)[..., 0]
    assert (picked >= top2[..., 1] - tolerance).all()


def _mean_iou(pred, label, num_classes):
    valid = label != 255
    ious = []
    for c in range(num_classes):
        p, t = (pred == c) & valid, (label == c) & valid
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))


def test_export_writes_every_artifact(exported):
    assert set(exported) == {"saved_model", "onnx", "metadata",
                             *(f"tflite_{q}" for q in QUANTIZATIONS)}
    out = os.path.dirname(exported["onnx"])
    assert sorted(os.listdir(out)) == sorted(
        ["saved_model", "model.onnx", "metadata.json", *(f"model_{q}.tflite" for q in QUANTIZATIONS)])
    # Class names and colours travel beside the artifacts (they hold only the serving graph).
    meta = json.loads(open(exported["metadata"]).read())
    assert meta["num_classes"] == SYNTHETIC.num_classes
    assert meta["tflite_size"] == [HEIGHT, WIDTH]
    # No staging folder left beside the output.
    assert [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")] == []


SAVED_MODEL_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
inputs = np.load(sys.argv[2])
outputs = {}
for key in inputs.files:
    result = serve(images=tf.constant(inputs[key]))
    for name, value in result.items():
        outputs[f"{key}/{name}"] = value.numpy()
np.savez(sys.argv[3], **outputs)
print(json.dumps({"synergyseg_imported": any(m.startswith("synergyseg") for m in sys.modules),
                  "signature_inputs": sorted(serve.structured_input_signature[1])}))
"""


def test_saved_model_matches_keras_in_a_fresh_process(model, exported, tmp_path):
    rng = np.random.default_rng(0)
    # A batch at the training size and one odd size: the signature takes any batch and size.
    inputs = {"even": rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8),
              "odd": rng.integers(0, 256, (1, 37, 53, 3), dtype=np.uint8)}
    np.savez(tmp_path / "in.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SAVED_MODEL_SCRIPT, exported["saved_model"],
             str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
            stdout=stdout, stderr=stderr, text=True, env=env, cwd=tmp_path)
    try:  # Keras's answers while the fresh process starts TensorFlow
        keras_outputs = {key: _keras_outputs(model, images) for key, images in inputs.items()}
        returncode = process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    info = json.loads((tmp_path / "stdout").read_text().strip().splitlines()[-1])
    assert info == {"synergyseg_imported": False, "signature_inputs": ["images"]}
    outputs = np.load(tmp_path / "out.npz")
    for key, images in inputs.items():
        expected = keras_outputs[key]
        assert outputs[f"{key}/class_map"].dtype == np.int32
        assert outputs[f"{key}/class_map"].shape == images.shape[:3]
        _assert_same_class_map(outputs[f"{key}/class_map"], expected["class_map"],
                               expected["probabilities"], 1e-5)
        for name in ("probabilities", "uncertainty"):
            assert np.abs(outputs[f"{key}/{name}"] - expected[name]).max() < 1e-5, (key, name)


def test_saved_model_stores_each_variable_once(model, exported):
    weight_bytes = sum(np.prod(v.shape) * 4 for v in model.variables)
    variables = os.path.join(exported["saved_model"], "variables")
    stored = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables))
    # Keras's model.export stored ~1.9x the weights; one copy plus checkpoint metadata is ~1.0x.
    assert weight_bytes <= stored < 1.3 * weight_bytes
    # One checkpoint tensor per model variable, and the SavedModel's variables are the model's
    # by name, shape and value, each once (model.export also stored a second, Keras-named list).
    checkpoint = tf.train.load_checkpoint(os.path.join(variables, "variables"))
    stored_keys = [k for k in checkpoint.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(stored_keys) == len(model.variables)
    loaded = tf.saved_model.load(exported["saved_model"]).serving_variables

    def name(path):  # dropout's seed generators are numbered by load order: drop the number
        return re.sub(r"^seed_generator_\d+/", "seed_generator/", path.removesuffix(":0"))

    assert sorted((name(v.name), tuple(v.shape)) for v in loaded) == sorted(
        (name(v.path), tuple(v.shape)) for v in model.variables)
    weights = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    assert len(weights) == len(model.weights) > 100
    compared = 0
    for i, variable in enumerate(loaded):
        value = checkpoint.get_tensor(f"serving_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(value, variable.numpy())
        if variable.name.removesuffix(":0") in weights:
            np.testing.assert_array_equal(value, weights[variable.name.removesuffix(":0")])
            compared += 1
    assert compared == len(model.weights)


def test_the_serving_function_traces_without_autograph_warnings(model):
    # AutoGraph converted the serving closure and, from its second conversion in a process on,
    # logged "AutoGraph could not transform ... closure mismatch" to every exporting user.
    from synergyseg.export.saved_model import serving_module

    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        for _ in range(2):
            serving_module(build_serving_model(model), (1, 32, 48, 3)).serve.get_concrete_function()
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


def test_onnx_matches_keras_in_onnxruntime(model, exported):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(1)
    for shape in [(2, HEIGHT, WIDTH, 3), (1, 37, 53, 3)]:  # dynamic batch, height and width
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        outputs = dict(zip(names, session.run(None, {"images": images})))
        expected = _keras_outputs(model, images)
        _assert_same_class_map(outputs["class_map"], expected["class_map"],
                               expected["probabilities"], 1e-4)
        for name in ("probabilities", "uncertainty"):
            assert np.abs(outputs[name] - expected[name]).max() < 1e-4, (shape, name)


def test_onnx_export_optimizes_without_graph_copies_and_falls_back_when_an_optimizer_fails(
        tmp_path, monkeypatch):
    """tf2onnx's optimizers run on the graph itself (tf2onnx's catch_errors off: no deep copy of
    the graph before each optimizer); if one fails there, the export converts again tf2onnx's
    default way, and the file still matches Keras."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from tf2onnx import optimizer

    import synergyseg
    from synergyseg.export import export_onnx

    calls, optimize_graph = [], optimizer.optimize_graph

    def first_fails(graph, catch_errors=True, optimizers=None):
        calls.append(catch_errors)
        if len(calls) == 1:
            raise RuntimeError("an optimizer failed on the graph")
        return optimize_graph(graph, catch_errors, optimizers=optimizers)

    monkeypatch.setattr(optimizer, "optimize_graph", first_fails)
    monkeypatch.delenv("TF2ONNX_CATCH_ERRORS", raising=False)
    # The smallest model: which graph tf2onnx optimizes does not matter here.
    model = synergyseg.build_synergyseg(3, backbone="resnet18", backbone_width=8, head="lraspp",
                                        head_filters=8, fusion="high")
    path = export_onnx(model, tmp_path / "model.onnx", outputs=("probabilities",))
    assert calls == [False, True]
    assert "TF2ONNX_CATCH_ERRORS" not in os.environ  # set for the conversion only
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(2).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    (probabilities,) = session.run(None, {"images": images})
    expected = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    assert np.abs(probabilities - expected).max() < 1e-4


def _tflite_outputs(path, images):
    interpreter = make_interpreter(model_path=path, num_threads=2)
    return [run_tflite(interpreter, image[None]) for image in images]


@pytest.mark.parametrize("quantization, tolerance", [("float32", 1e-4),
                                                     ("float16", FLOAT16_TOLERANCE)])
def test_tflite_float_matches_keras(model, exported, val_set, quantization, tolerance):
    images = np.concatenate([image for image, _ in val_set])
    expected = _keras_outputs(model, images)
    outputs = _tflite_outputs(exported[f"tflite_{quantization}"], images)
    probabilities = np.concatenate([o["probabilities"] for o in outputs])
    uncertainty = np.concatenate([o["uncertainty"] for o in outputs])
    class_map = np.concatenate([o["class_map"] for o in outputs])
    assert np.abs(probabilities - expected["probabilities"]).max() < tolerance
    assert np.abs(uncertainty - expected["uncertainty"]).max() < tolerance
    assert class_map.dtype == np.int32
    print(f"{quantization}: max |dp| {np.abs(probabilities - expected['probabilities']).max():.2e}, "
          f"class agreement {100 * (class_map == expected['class_map']).mean():.2f}%")
    assert (class_map == expected["class_map"]).mean() > (0.9999 if quantization == "float32"
                                                          else 0.99)


def test_tflite_int8_agrees_with_keras(model, exported, val_set):
    content = open(exported["tflite_int8"], "rb").read()
    _assert_full_integer(content)
    images = np.concatenate([image for image, _ in val_set])
    labels = np.concatenate([label for _, label in val_set])
    expected = _keras_outputs(model, images)["class_map"]
    class_map = np.concatenate([o["class_map"] for o in _tflite_outputs(exported["tflite_int8"],
                                                                        images)])
    agreement = (class_map == expected).mean()
    keras_miou = _mean_iou(expected, labels, SYNTHETIC.num_classes)
    int8_miou = _mean_iou(class_map, labels, SYNTHETIC.num_classes)
    # The figures BENCHMARKS.md quotes (shown with `pytest -s`).
    print(f"int8: class agreement {100 * agreement:.2f}%, mIoU {keras_miou:.4f} -> {int8_miou:.4f}")
    shares = np.bincount(expected.ravel(), minlength=SYNTHETIC.num_classes) / expected.size
    print(f"int8 vs Keras: {agreement:.2%} of pixels agree; mIoU {keras_miou:.3f} -> "
          f"{int8_miou:.3f} (drop {keras_miou - int8_miou:+.3f}); Keras class shares "
          f"{np.round(shares, 3).tolist()}")
    # The model really segments: a constant class map agrees with it on at most shares.max() of
    # the pixels, far below the 97% asked of int8; and at least four classes are predicted.
    assert shares.max() < 0.8 and (shares > 0.05).sum() >= 4, shares
    # Far above a constant map (0.047 on the synthetic set): the agreement below is about a model
    # that segments. The session's run measures 0.277 (this file's earlier Adam-fit model: 0.248).
    assert keras_miou > 0.2
    assert agreement >= INT8_MIN_AGREEMENT
    assert keras_miou - int8_miou <= INT8_MAX_MIOU_DROP


def _assert_full_integer(content):
    """Every convolution of the int8 file reads int8 activations and weights."""
    from synergyseg.export._tflite_schema import schema

    tflite = schema.Model.GetRootAsModel(content, 0)
    graph = tflite.Subgraphs(0)
    conv = [i for i in range(tflite.OperatorCodesLength())
            if max(tflite.OperatorCodes(i).BuiltinCode(),
                   tflite.OperatorCodes(i).DeprecatedBuiltinCode()) == schema.BuiltinOperator.CONV_2D]
    types = set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.OpcodeIndex() in conv:
            types.update(graph.Tensors(op.Inputs(j)).Type() for j in range(2))
    assert types == {schema.TensorType.INT8}


@pytest.mark.parametrize("channel_flip", ["reverse", "gather"])
def test_int8_scale_check_flags_exactly_the_misquantized_copy_ops(channel_flip):
    # The RGB -> BGR flip of ImageNetNormalization, as tf.reverse (REVERSE_V2: TF 2.21's quantizer
    # gives its output a scale of its own, though the kernel copies bytes) and as tf.gather.
    mean = tf.constant([103.939, 116.779, 123.68])

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.uint8)])
    def normalize(images):
        x = tf.cast(images, tf.float32)
        x = tf.reverse(x, [-1]) if channel_flip == "reverse" else tf.gather(x, [2, 1, 0], axis=-1)
        x = x - mean
        return tf.nn.relu(x) * 0.5 + x  # a consumer, as the first conv is in the model

    rng = np.random.default_rng(3)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [normalize.get_concrete_function()], normalize)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: (
        [rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)] for _ in range(8))
    content = converter.convert()
    images = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    interpreter = make_interpreter(model_content=content)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    error = np.abs(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
                   - normalize(images).numpy()).max()
    try:
        check_int8_scales(content)
        flagged = False
    except ValueError as e:
        assert "REVERSE_V2" in str(e)
        flagged = True
    # Output range ~380 in 256 steps: a correct file is off by a step or two (measured 2.2),
    # the mis-scaled flip by ~90.
    assert flagged == (error > 10), (channel_flip, error)
    if channel_flip == "gather":
        assert not flagged


def test_tflite_files_use_builtin_ops_only(exported):
    for quantization in QUANTIZATIONS:
        ops = tflite_ops(open(exported[f"tflite_{quantization}"], "rb").read())
        assert {"CONV_2D", "RESIZE_BILINEAR", "ARG_MAX"} <= set(ops), quantization
        assert not [op for op in ops if op.startswith(("CUSTOM", "UNKNOWN"))], (quantization, ops)


def test_builtin_op_check_rejects_a_flex_op():
    @tf.function(input_signature=[tf.TensorSpec((4,), tf.int32)])
    def bitwise(x):
        return tf.bitwise.bitwise_and(x, 3)  # no builtin kernel: needs the Flex delegate

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [bitwise.get_concrete_function()], bitwise)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    assert "CUSTOM:FlexBitwiseAnd" in tflite_ops(content)
    with pytest.raises(ValueError, match="FlexBitwiseAnd"):
        check_builtin_ops(content)


def test_tflite_size_check_refuses_tiny_and_fractional_sizes():
    # Odd sizes convert and match Keras: test_command_line_exports_an_odd_size_tflite_that_matches_keras.
    assert check_tflite_size([64, 65]) == (64, 65)
    with pytest.raises(ValueError, match="at least 32"):
        check_tflite_size((31, 64))
    with pytest.raises(ValueError, match="integers"):
        check_tflite_size((32.5, 64))


# --- bad input: a clear error and nothing written -------------------------------------------

def _listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else None


def test_a_model_that_is_not_synergyseg_is_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    plain.save(tmp_path / "plain.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"plain\.keras.*is not a SynergySeg model"):
        export_model(tmp_path / "plain.keras", out, formats=("saved_model",), log=None)
    with pytest.raises(ValueError, match=r"Cannot load .*junk\.keras"):
        export_model(tmp_path / "junk.keras", out, formats=("saved_model",), log=None)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        export_model(tmp_path / "missing.keras", out, log=None)
    with pytest.raises(FileNotFoundError, match="neither best.keras nor final.keras"):
        export_model(tmp_path, out, formats=("saved_model",), log=None)
    assert not out.exists()


def test_bad_tflite_size_and_missing_calibration_are_refused_before_any_work(run_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="at least 32"):
        export_model(run_dir, out, tflite_size=(16, 64), calibration="x", log=None)
    with pytest.raises(ValueError, match="tflite_size"):
        export_model(run_dir, out, formats=("tflite",), log=None)
    with pytest.raises(FileNotFoundError, match="nowhere/val-"):
        export_model(run_dir, out, tflite_size=(32, 32),
                     calibration=str(tmp_path / "nowhere/val-*.tfrecord"), log=None)
    with pytest.raises(ValueError, match="calibration"):
        export_model(run_dir, out, formats=("tflite",), tflite_size=(32, 32), log=None)
    assert not out.exists()


def test_a_late_failure_leaves_the_output_folder_as_it_was(run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    # Calibration files exist but are not TFRecords: the SavedModel is built first (a folder in
    # the staging), then int8 calibration fails while reading. One artifact built before the
    # failure shows that the staging goes; a float32 TFLite file between them cost a conversion.
    (tmp_path / "val-00000.tfrecord").write_bytes(b"garbage" * 10)
    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        export_model(run_dir, out, formats=("saved_model", "tflite"), quantizations=("int8",),
                     tflite_size=(32, 32), calibration=str(tmp_path / "val-*.tfrecord"), log=None)
    assert _listing(out) == ["keep.txt"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_command_line_exports_an_odd_size_tflite_that_matches_keras(run_dir, model, tmp_path, capsys):
    # One conversion checks both the command line's flags and an odd size (no multiple of the
    # stride needed): convert_tflite(model, (33, 47)) was a second conversion of its own.
    out = tmp_path / "cli"
    assert cli_main([str(run_dir), "--out", str(out), "--formats", "tflite",
                     "--quantizations", "float32", "--tflite-size", "33x47"]) == 0
    assert _listing(out) == ["metadata.json", "model_float32.tflite"]
    interpreter = make_interpreter(model_path=str(out / "model_float32.tflite"))
    assert list(interpreter.get_signature_runner().get_input_details()["images"]["shape"]) == [
        1, 33, 47, 3]
    images = np.random.default_rng(2).integers(0, 256, (1, 33, 47, 3), dtype=np.uint8)
    outputs = run_tflite(interpreter, images)
    expected = _keras_outputs(model, images)
    assert np.abs(outputs["probabilities"] - expected["probabilities"]).max() < 1e-4
    assert cli_main([str(tmp_path / "nope.keras"), "--out", str(out)]) == 2
    assert "nope.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(run_dir), "--out", str(out), "--tflite-size", "32by40"])
    assert exit_info.value.code == 2
    assert "expected HEIGHTxWIDTH like 512x1024, got '32by40'" in capsys.readouterr().err


def test_interpreter_is_litert_and_its_tf_lite_fallback_fails_loudly_under_tests(monkeypatch):
    from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def add_one(x):
        return x + 1.0

    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [add_one.get_concrete_function()], add_one).convert()
    assert os.environ.get("SYNERGYSEG_REQUIRE_LITERT") == "1"  # set by conftest.py
    assert type(make_interpreter(model_content=content)) is LiteRTInterpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now fails
    with pytest.raises(ImportError, match="ai-edge-litert is required .SYNERGYSEG_REQUIRE_LITERT"):
        make_interpreter(model_content=content)
    monkeypatch.delenv("SYNERGYSEG_REQUIRE_LITERT")
    assert type(make_interpreter(model_content=content)) is tf.lite.Interpreter  # users' fallback
