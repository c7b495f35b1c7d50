"""Independent numpy references and shared checks for the model tests."""

import importlib.util
import os

import numpy as np

import keras


def load_script(path):
    """The module of a script that is not in a package (benchmarks/, docs/), loaded from its file."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bilinear_resize(x, out_h, out_w):
    """numpy bilinear resize of (b, h, w, c) with half-pixel centers (TF's `tf.image.resize`)."""
    b, h, w, c = x.shape

    def coords(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(out_h, h)
    x0, x1, fx = coords(out_w, w)
    top = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return top[:, :, x0] * (1 - fx)[None, None, :, None] + top[:, :, x1] * fx[None, None, :, None]


def call(model, images):
    """`model` called eagerly on `images`, its outputs (a tensor or a dict of them) as numpy: the
    layers and weights predict() runs, without tracing a graph per model and input size (a trace
    costs seconds, a tiny model's call far less)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(images, training=False))


def random_softmax(rng, shape):
    z = rng.normal(size=shape) * 2.0
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def tiny_kwargs(**overrides):
    """A small ResNet-18 DeepLabV3+ that builds and runs in a second."""
    kwargs = dict(backbone="resnet18", backbone_width=8, head_filters=16, low_level_filters=8)
    kwargs.update(overrides)
    return kwargs


def all_layers(model):
    """Every layer in `model`, nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def assert_save_load_round_trip(model, inputs, path):
    """Saves `model` as .keras, loads it with safe_mode=True and checks identical outputs.

    Both models are called eagerly (`call`): the saved configuration and weights are what is
    checked, and tracing a predict graph for each of the two models cost more than the check."""
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    expected = call(model, inputs)
    got = call(loaded, inputs)
    if isinstance(expected, dict):
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    else:
        np.testing.assert_array_equal(got, expected)
    return loaded
