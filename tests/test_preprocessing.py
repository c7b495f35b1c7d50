"""The in-model normalization equals keras.applications' ResNet-50 preprocessing."""

import keras
import numpy as np

from synergyseg.data.info import IMAGENET_MEAN_RGB
from synergyseg.models.preprocessing import ImageNetNormalization


def test_normalization_equals_keras_applications_resnet50_preprocess_input():
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(images.copy())
    got = np.asarray(ImageNetNormalization()(images))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # uint8 input too, and the padding value of the training crops maps to zero.
    np.testing.assert_allclose(np.asarray(ImageNetNormalization()(images.astype("uint8"))),
                               keras.applications.resnet50.preprocess_input(
                                   images.astype("uint8").astype("float32")), atol=1e-4)
    pad = np.broadcast_to(np.asarray(IMAGENET_MEAN_RGB, "float32"), (1, 2, 2, 3))
    np.testing.assert_allclose(np.asarray(ImageNetNormalization()(pad)), 0.0, atol=1e-4)
