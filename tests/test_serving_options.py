"""Serving options: an outputs subset and the strided class map, from the layer to the exported file.

`StridedClassMap` is checked against numpy (a half-pixel bilinear resize of the model's fused map
on the head's grid, argmax, repeat, crop); stride 1 against the Keras model's own argmax; the
TFLite file against the Keras serving graph; and `export_model` / the command line for both
options, their refusals and what metadata.json records. Small random-weight models throughout.
"""

import json

import numpy as np
import pytest
import keras

import synergyseg
from synergyseg.export import (
    StridedClassMap, build_serving_model, check_serving_options, convert_tflite, export_model,
    export_onnx, make_interpreter, run_tflite)
from synergyseg.export.cli import main as cli_main
from synergyseg.export.metadata import read_metadata
from synergyseg.models.lraspp import LOGITS_STRIDE as GRID_STRIDE

NUM_CLASSES = 5
SMALL = dict(backbone="mobilenetv3_small", output_stride=32, head="lraspp")
TOO_LARGE = 2 * GRID_STRIDE  # a class map stride above the head's grid stride
SIZES = [(64, 128), (67, 131)]  # a multiple of every stride, and an odd size every stride crops
# A pixel may take either of two classes whose probabilities are this close (float rounding).
NEAR_TIE = 1e-5
TFLITE_MIN_AGREEMENT = ONNX_MIN_AGREEMENT = 0.999


# Logits of random weights are near-uniform (6% of a stride-2 map's cells had their top two
# classes within 1e-5), as a trained model's are not: the classifiers' weights are scaled by this
# (then under 1% are), so the comparisons below decide almost every pixel.
SHARPEN = 30


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = synergyseg.build_synergyseg(NUM_CLASSES, fuse_at="decoder", **SMALL)
    for name in ("classifier", "skip_classifier"):  # LR-ASPP's logits are their sum
        layer = model.submodel.get_layer(name)
        layer.set_weights([SHARPEN * w for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module")
def images():
    """uint8 images per size: smooth colour ramps plus noise, so maps have regions and boundaries."""
    rng = np.random.default_rng(0)
    batches = {}
    for height, width in SIZES:
        y, x = np.mgrid[0:height, 0:width]
        ramp = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 7.0)], -1)
        noisy = ramp[None] + rng.normal(0, 20, (2, height, width, 3))
        batches[height, width] = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return batches


def _resize_bilinear_numpy(x, height, width):
    """tf.image.resize(x, (height, width), "bilinear") without antialias: half-pixel centres,
    edge pixels repeated, in float64."""
    def taps(in_size, out_size):
        source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        low = np.floor(source)
        weight = source - low
        return (np.clip(low, 0, in_size - 1).astype(int),
                np.clip(low + 1, 0, in_size - 1).astype(int), weight)

    y0, y1, wy = taps(x.shape[1], height)
    x0, x1, wx = taps(x.shape[2], width)
    rows = x[:, y0] * (1 - wy)[None, :, None, None] + x[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


def _strided_reference(grid, height, width, stride):
    """The strided class map in numpy, and where its top two classes are clearly apart."""
    coarse = _resize_bilinear_numpy(grid.astype(np.float64), -(-height // stride), -(-width // stride))
    top2 = np.sort(coarse, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > NEAR_TIE

    def repeat(a):
        return np.repeat(np.repeat(a, stride, axis=1), stride, axis=2)[:, :height, :width]

    return repeat(coarse.argmax(-1)), repeat(clear)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride", [2, 4, 8])
def test_strided_class_map_matches_numpy(model, images, size, stride):
    batch = images[size]
    grid = keras.ops.convert_to_numpy(model.fused_on_grid()(batch.astype(np.float32)))
    assert grid.shape[-1] == NUM_CLASSES and grid.shape[1] == size[0] // GRID_STRIDE
    expected, clear = _strided_reference(grid, *size, stride)
    assert clear.mean() > 0.99, clear.mean()
    layer = keras.ops.convert_to_numpy(StridedClassMap(stride)([grid, batch.astype(np.float32)]))
    served = keras.ops.convert_to_numpy(
        build_serving_model(model, ("class_map",), stride)(batch)["class_map"])
    for got in (layer, served):
        assert got.shape == batch.shape[:3] and got.dtype == np.int32
        np.testing.assert_array_equal(got[clear], expected[clear])
    # Not the exact map everywhere (else the option would be pointless to test): it differs
    # from the full-size argmax only at some boundary pixels.
    exact = np.argmax(keras.ops.convert_to_numpy(model(batch.astype(np.float32))), -1)
    assert 0.5 < (served == exact).mean() < 1.0


@pytest.mark.parametrize("size", SIZES)
def test_stride_one_is_the_argmax_of_the_fused_probabilities(model, images, size):
    batch = images[size]
    probabilities = keras.ops.convert_to_numpy(model(batch.astype(np.float32)))
    served = build_serving_model(model, ("class_map", "probabilities"), 1)(batch)
    assert set(served) == {"class_map", "probabilities"}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(served["class_map"]),
                                  probabilities.argmax(-1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(served["probabilities"]), probabilities,
                               atol=1e-6)


def test_tflite_strided_class_map_matches_keras(model, images):
    size = SIZES[1]
    content = convert_tflite(model, size, outputs=("class_map",), class_map_stride=4)
    interpreter = make_interpreter(model_content=content)
    serving = build_serving_model(model, ("class_map",), 4)
    agree = []
    for image in images[size]:
        got = run_tflite(interpreter, image[None])
        assert set(got) == {"class_map"}
        expected = keras.ops.convert_to_numpy(serving(image[None])["class_map"])
        assert got["class_map"].shape == expected.shape == (1, *size)
        agree.append((got["class_map"] == expected).mean())
    assert np.mean(agree) >= TFLITE_MIN_AGREEMENT, agree


def test_onnx_strided_class_map_matches_keras_at_any_size(model, images, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_onnx(model, str(tmp_path / "model.onnx"), outputs=("class_map",),
                       class_map_stride=4)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["class_map"]
    serving = build_serving_model(model, ("class_map",), 4)
    for size in SIZES:  # one file, both sizes: the strided map's size is dynamic too
        got = session.run(None, {"images": images[size]})[0]
        expected = keras.ops.convert_to_numpy(serving(images[size])["class_map"])
        assert got.shape == expected.shape == images[size].shape[:3]
        assert (got == expected).mean() >= ONNX_MIN_AGREEMENT, size


def test_wrong_options_are_refused_with_the_reason(model):
    input_fused = synergyseg.build_synergyseg(NUM_CLASSES, fuse_at="input", **SMALL)
    with pytest.raises(ValueError, match="needs a model fused at the decoder.*use class_map_stride=1"):
        check_serving_options(input_fused, ("class_map",), 4)
    with pytest.raises(ValueError, match=rf"from 1 to the head's grid stride \({GRID_STRIDE}\), "
                                         rf"got {TOO_LARGE}"):
        check_serving_options(model, ("class_map",), TOO_LARGE)
    with pytest.raises(ValueError, match=r"changes only 'class_map'.*\('probabilities',\) leave out"):
        check_serving_options(model, ("probabilities",), 4)
    with pytest.raises(ValueError, match=r"distinct names of .*got \('class_map', 'logits'\)"):
        check_serving_options(model, ("class_map", "logits"))
    with pytest.raises(ValueError, match=r"got \('class_map', 'class_map'\)"):
        check_serving_options(model, ("class_map", "class_map"))
    with pytest.raises(ValueError, match="positive integer, got 0"):
        StridedClassMap(0)
    with pytest.raises(ValueError, match="class_map_stride must be a positive integer, got 0"):
        check_serving_options(model.with_fusion(fuse_at="input"), ("class_map",), 0)
    # Every entry point checks before building anything.
    with pytest.raises(ValueError, match="grid stride"):
        convert_tflite(model, (64, 128), outputs=("class_map",), class_map_stride=TOO_LARGE)
    assert check_serving_options(model, ["class_map"], 8) == (("class_map",), 8)


def test_export_model_and_command_line_refuse_before_any_work(model, tmp_path, capsys):
    path = tmp_path / "model.keras"
    model.save(path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="grid stride"):
        export_model(model, out, formats=("tflite",), tflite_size=(64, 128),
                     quantizations=("float32",), class_map_stride=TOO_LARGE, log=None)
    assert cli_main([str(path), "--out", str(out), "--formats", "tflite", "--tflite-size", "64x128",
                     "--quantizations", "float32", "--outputs", "class_map",
                     "--class-map-stride", str(TOO_LARGE)]) == 2
    assert (f"class_map_stride must be an integer from 1 to the head's grid stride ({GRID_STRIDE}), "
            f"got {TOO_LARGE}") in capsys.readouterr().err
    assert cli_main([str(path), "--out", str(out), "--formats", "saved_model",
                     "--outputs", "probabilities", "--class-map-stride", "4"]) == 2
    assert "changes only 'class_map'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(path), "--out", str(out), "--outputs", "class_map,logits"])
    assert exit_info.value.code == 2
    assert "class_map,probabilities,uncertainty, got 'class_map,logits'" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no staging folder left


def test_export_model_writes_the_strided_class_map_and_records_it(model, images, tmp_path):
    out = tmp_path / "realtime"
    written = export_model(model, out, formats=("tflite",), tflite_size=SIZES[0],
                           quantizations=("float32",), outputs=("class_map",), class_map_stride=4,
                           log=None)
    runner = make_interpreter(model_path=written["tflite_float32"]).get_signature_runner()
    assert set(runner.get_output_details()) == {"class_map"}
    saved = json.loads((out / "metadata.json").read_text())
    assert saved["outputs"] == ["class_map"] and saved["class_map_stride"] == 4
    assert read_metadata(written["tflite_float32"])["class_map_stride"] == 4
    # The file serves the strided map.
    image = images[SIZES[0]][:1]
    got = runner(images=image)["class_map"]
    strided = build_serving_model(model, ("class_map",), 4)(image)["class_map"]
    strided = keras.ops.convert_to_numpy(strided)
    assert (got == strided).mean() >= TFLITE_MIN_AGREEMENT


def test_metadata_without_the_options_reads_as_the_defaults_and_bad_values_are_named(tmp_path):
    artifact = tmp_path / "model_float32.tflite"
    (tmp_path / "metadata.json").write_text(json.dumps({"num_classes": 3}))
    values = read_metadata(artifact)
    assert values["outputs"] == ["class_map", "probabilities", "uncertainty"]
    assert values["class_map_stride"] == 1
    (tmp_path / "metadata.json").write_text(json.dumps({"num_classes": 3, "class_map_stride": 0}))
    with pytest.raises(ValueError, match=r"metadata\.json: class_map_stride must be a positive"):
        read_metadata(artifact)
    (tmp_path / "metadata.json").write_text(json.dumps({"num_classes": 3, "outputs": ["logits"]}))
    with pytest.raises(ValueError, match=r"metadata\.json: outputs must be a list of names"):
        read_metadata(artifact)
