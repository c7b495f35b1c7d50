"""Predict on an export that serves only the class map (`export --outputs class_map --class-map-stride 4`).

A small decoder-fused model is exported as TFLite and SavedModel with its class map at stride 4
and nothing else; `Segmenter` and the command line on those files are checked against the Keras
serving graph (`build_serving_model`) run here, with numpy's nearest-neighbour indexing for
pictures the model runs at another size, and the options that need probabilities are refused.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import synergyseg
from synergyseg.export import build_serving_model, export_model
from synergyseg.predict.cli import main as cli_main
from tests.reference import all_layers

CLASS_NAMES = ["road", "car", "sky", "tree", "person"]
MODEL = dict(backbone="mobilenetv3_small", output_stride=32, head="lraspp", fuse_at="decoder")
SIZE = (64, 128)  # the TFLite input size, and the pictures' size
STRIDE = 4
# float32 TFLite and the SavedModel compute the graph with other kernels than Keras: only
# near-ties of the coarse map may flip (as tests/test_serving_options.py allows).
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def model():
    """Random weights with BatchNorm statistics of one batch (momentum 0 for one training-mode
    call), so the model computes a decisive function rather than near-uniform probabilities."""
    keras.utils.set_random_seed(0)
    model = synergyseg.build_synergyseg(len(CLASS_NAMES), class_names=CLASS_NAMES, **MODEL)
    norms = [l for l in all_layers(model.submodel) if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in norms]
    for layer in norms:
        layer.momentum = 0.0
    model.submodel(_pictures(4, *SIZE, seed=1).astype("float32"), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "class_map_only"
    return export_model(model, out, formats=("saved_model", "tflite"), tflite_size=SIZE,
                        quantizations=("float32",), outputs=("class_map",),
                        class_map_stride=STRIDE, log=None)


@pytest.fixture(scope="module")
def serving(model):
    """The Keras serving graph the files were exported from: (N, h, w, 3) uint8 -> class map."""
    graph = build_serving_model(model, outputs=("class_map",), class_map_stride=STRIDE)
    return lambda images: keras.ops.convert_to_numpy(graph(images)["class_map"])


def _pictures(count, height, width, seed=0):
    """uint8 colour ramps plus noise: regions and boundaries for the class map."""
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 7.0)], -1)
    noisy = ramp[None] + np.random.default_rng(seed).normal(0, 20, (count, height, width, 3))
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _nearest(class_map, height, width):
    """Each pixel of a (height, width) picture takes the id of the map pixel its centre falls in."""
    rows = np.minimum(((np.arange(height) + 0.5) * class_map.shape[0] / height).astype(int),
                      class_map.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * class_map.shape[1] / width).astype(int),
                      class_map.shape[1] - 1)
    return class_map[rows][:, cols]


def _at(images, size):
    """Pictures as Segmenter feeds a model of another size: bilinear on float pixels, then uint8."""
    resized = tf.image.resize(images.astype(np.float32), size, method="bilinear").numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("artifact", ["tflite_float32", "saved_model"])
def test_segmenter_returns_the_served_class_map_and_no_uncertainty(exported, serving, artifact):
    segmenter = synergyseg.Segmenter(exported[artifact])
    assert segmenter.outputs == ("class_map",) and not segmenter.has_probabilities
    assert not segmenter.two_scale and segmenter.class_map_stride == STRIDE
    assert segmenter.num_classes == len(CLASS_NAMES) and segmenter.class_names == CLASS_NAMES
    images = _pictures(2, *SIZE)
    expected = serving(images)
    assert len(np.unique(expected)) >= 2  # a decisive model, not one class everywhere
    results = segmenter.predict(images)
    for result, reference in zip(results, expected):
        assert result.class_map.shape == SIZE and result.class_map.dtype == np.uint8
        assert result.uncertainty is None and result.probabilities is None
        assert (result.class_map == reference).mean() >= MIN_AGREEMENT


def test_pictures_of_another_size_take_the_nearest_class_id(exported, serving):
    # The TFLite file runs at its fixed size; the SavedModel at half the size with resize_factor.
    picture = _pictures(1, 50, 90, seed=2)
    expected = _nearest(serving(_at(picture, SIZE))[0], 50, 90)
    got = synergyseg.Segmenter(exported["tflite_float32"]).predict(picture[0]).class_map
    assert got.shape == (50, 90) and (got == expected).mean() >= MIN_AGREEMENT
    large = _pictures(1, 2 * SIZE[0], 2 * SIZE[1], seed=3)
    expected = _nearest(serving(_at(large, SIZE))[0], *large.shape[1:3])
    got = synergyseg.Segmenter(exported["saved_model"]).predict(large[0], resize_factor=0.5).class_map
    assert got.shape == large.shape[1:3] and (got == expected).mean() >= MIN_AGREEMENT


def test_options_that_need_probabilities_are_refused_naming_the_file(exported, tmp_path, capsys):
    path = exported["tflite_float32"]
    segmenter = synergyseg.Segmenter(path)
    picture = _pictures(1, *SIZE)[0]
    for option in ("flip", "probabilities"):
        with pytest.raises(ValueError, match=rf"^{option} needs the model's 'probabilities' output, "
                                             rf"which '.*model_float32\.tflite' does not serve"):
            segmenter.predict(picture, **{option: True})
    Image.fromarray(picture).save(tmp_path / "street.png")
    out = tmp_path / "out"
    assert cli_main([path, str(tmp_path / "street.png"), "--out", str(out), "--flip",
                     "--no-progress"]) == 2
    assert "flip needs the model's 'probabilities' output" in capsys.readouterr().err
    assert not out.exists()


def test_cli_writes_the_class_map_files_and_no_uncertainty(exported, serving, tmp_path, capsys):
    pictures = _pictures(2, *SIZE, seed=4)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"street{i}.png")
    out = tmp_path / "out"
    assert cli_main([exported["tflite_float32"], str(tmp_path / "street0.png"),
                     str(tmp_path / "street1.png"), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("no NAME_uncertainty.png is written") == 1, printed  # once, not per image
    assert sorted(os.listdir(out)) == [f"street{i}_{kind}.png" for i in range(2)
                                       for kind in ("color", "labels", "overlay")]
    palette = np.array(synergyseg.Segmenter(exported["tflite_float32"]).palette, np.uint8)
    for i, reference in enumerate(serving(pictures)):
        labels = np.asarray(Image.open(out / f"street{i}_labels.png"))
        assert labels.shape == SIZE and (labels == reference).mean() >= MIN_AGREEMENT
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"street{i}_color.png")),
                                      palette[labels])


def test_a_class_map_only_file_needs_its_metadata(exported, tmp_path):
    alone = tmp_path / "alone" / "model.tflite"
    alone.parent.mkdir()
    shutil.copy(exported["tflite_float32"], alone)
    with pytest.raises(ValueError, match=r"serves 'class_map' without 'probabilities'.*"
                                         r"alone/metadata\.json.*there is none"):
        synergyseg.Segmenter(str(alone))
    values = json.loads(open(exported["metadata"]).read())
    (tmp_path / "alone" / "metadata.json").write_text(json.dumps({**values, "outputs": [
        "class_map", "probabilities", "uncertainty"]}))
    with pytest.raises(ValueError, match=r"serves \['class_map'\] but .*metadata\.json' beside it "
                                         r"records outputs \['class_map', 'probabilities', "
                                         r"'uncertainty'\]: the file comes from another export"):
        synergyseg.Segmenter(str(alone))
