import numpy as np
import pytest
import tensorflow as tf

from synergyseg.models.resize import Downsample, ResizeLike
from tests.reference import bilinear_resize


def test_resize_like_matches_numpy_bilinear():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    ref = np.zeros((2, 11, 13, 1), "float32")
    got = np.asarray(ResizeLike()([x, ref]))
    np.testing.assert_allclose(got, bilinear_resize(x.astype("float64"), 11, 13), atol=1e-5)


def test_downsample_is_the_2x2_mean_on_even_sizes_and_keeps_odd_edges():
    x = np.random.default_rng(1).uniform(0, 255, size=(1, 8, 6, 3)).astype("float32")
    got = np.asarray(Downsample(2)(x))
    np.testing.assert_allclose(got, x.reshape(1, 4, 2, 3, 2, 3).mean(axis=(2, 4)), atol=1e-4)
    assert Downsample(2)(np.zeros((1, 9, 7, 3), "float32")).shape == (1, 5, 4, 3)
    with pytest.raises(ValueError, match="positive integer"):
        Downsample(0)


def test_dynamic_sizes_resize_inside_a_compiled_graph():
    # keras.ops.image.resize rejects sizes from a dynamic shape inside tf.function (its Python
    # size check); ResizeLike must work there, which is how fit/predict call it.
    layer = ResizeLike()

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 2)), tf.TensorSpec((None, None, None, 1))])
    def run(x, ref):
        return layer([x, ref])

    out = run(tf.ones((1, 3, 5, 2)), tf.zeros((1, 7, 9, 1)))
    assert out.shape == (1, 7, 9, 2)
    np.testing.assert_allclose(out.numpy(), 1.0)
    down = tf.function(Downsample(2), input_signature=[tf.TensorSpec((None, None, None, 3))])
    assert down(tf.zeros((2, 11, 5, 3))).shape == (2, 6, 3, 3)
