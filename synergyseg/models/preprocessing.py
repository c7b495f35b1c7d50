"""In-model image normalization, so trained and exported models take plain RGB images."""

import keras
from keras import ops

from synergyseg.data.info import IMAGENET_MEAN_RGB

# The normalization the standard ResNet-50 ImageNet weights were trained with: BGR, mean subtracted.
IMAGENET_BGR_MEAN = IMAGENET_MEAN_RGB[::-1]


@keras.saving.register_keras_serializable(package="synergyseg")
class ImageNetNormalization(keras.layers.Layer):
    """Turns raw RGB images in [0, 255] (uint8 or float) into ResNet-50's ImageNet input.

    Computes `flip_channels(x) - mean` (RGB -> BGR, then the BGR mean), exactly
    `keras.applications.resnet50.preprocess_input`, inside the model.

    Input `(batch, h, w, 3)`, any numeric dtype; output the same shape in the compute dtype.

    Example:
        >>> x = ImageNetNormalization()(keras.Input((None, None, 3)))
    """

    def build(self, input_shape):
        _check_images(input_shape)

    def call(self, images):
        # Checked at every call too: a retraced predict function relaxes the input to unknown
        # dims (or rank), and Keras then skips its input spec; check those when the graph runs.
        shape = images.shape
        if _rank(shape) is None or shape[-1] is None:
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                images = tf.ensure_shape(images, (None, None, None, 3), name="expect_rgb_images")
        else:
            _check_images(shape)
        x = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)
        # RGB -> BGR as a gather, not ops.flip: TFLite's int8 quantizer gives REVERSE_V2's output
        # its own scale, but the kernel copies bytes, so a full-int8 model saw a distorted image
        # (1.49 * pixel - 115 on one calibration); GATHER keeps its input's scale. Same values.
        return ops.take(x, [2, 1, 0], axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape


def _rank(shape):
    try:
        return len(shape)
    except ValueError:  # a TensorShape of unknown rank
        return None


def _check_images(shape):
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ValueError(
            "Expected a batch of RGB images with shape (batch, height, width, 3); "
            f"received shape {tuple(shape)}."
        )
