"""In-model image normalization, so trained and exported models take plain RGB images."""

import keras
from keras import ops

# Per-channel means of ImageNet in BGR order, as in keras.applications.resnet50.preprocess_input
# ("caffe" mode): the normalization the standard ResNet-50 ImageNet weights were trained with.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


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
        if len(input_shape) != 4 or input_shape[-1] != 3:
            raise ValueError(
                "Expected a batch of RGB images with shape (batch, height, width, 3); "
                f"received shape {tuple(input_shape)}."
            )

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape):
        return input_shape
