"""Bilinear resizing that works with dynamic image sizes inside compiled graphs.

`keras.ops.image.resize` validates `size` with Python comparisons (`size[0] <= 0`), which raises
"Using a symbolic tf.Tensor as a Python bool" when the size comes from a dynamic shape inside
`fit`/`predict`/`tf.function`. The TensorFlow kernel itself accepts a size tensor, so for dynamic
sizes on the TensorFlow backend we call it directly; static sizes (and the JAX backend, whose
shapes are always static) go through `keras.ops`.
"""

import keras
from keras import ops


def _is_static(size):
    return all(isinstance(s, int) for s in size)


def resize_bilinear(images, size):
    """Resize `(batch, h, w, c)` images to `size = (height, width)` with half-pixel bilinear sampling.

    `size` may hold Python ints or scalar tensors (a dynamic shape). The result keeps the input dtype.
    """
    dtype = images.dtype
    if _is_static(size) and tuple(images.shape[1:3]) == tuple(size):
        # Same size: half-pixel bilinear sampling is the identity (no op in an exported graph).
        return images
    if _is_static(size):
        out = ops.image.resize(images, tuple(size), interpolation="bilinear")
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out = tf.image.resize(images, tf.stack([size[0], size[1]]), method="bilinear")
    else:
        raise ValueError(
            f"Dynamic resize to {size} is only supported on the TensorFlow backend; "
            f"the {keras.backend.backend()} backend needs static image sizes."
        )
    return ops.cast(out, dtype)


def spatial_size(x):
    """`(height, width)` of a `(batch, h, w, c)` tensor: ints where known, scalar tensors where not."""
    shape = ops.shape(x)
    return shape[1], shape[2]


@keras.saving.register_keras_serializable(package="synergyseg")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes a feature map to the height and width of a reference tensor.

    Call it on `[x, reference]`: `x` is `(batch, h, w, c)`, `reference` is `(batch, H, W, any)`;
    the output is `(batch, H, W, c)`. Used for U(.) of the paper's eq. 1 and the DeepLabV3+
    decoder, so any input size (odd ones too) comes out exactly at the reference size.

    Example:
        >>> up = ResizeLike()([logits, image])   # logits at stride 4 -> image size
    """

    def call(self, inputs):
        x, reference = inputs
        return resize_bilinear(x, spatial_size(reference))

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="synergyseg")
class Downsample(keras.layers.Layer):
    """Makes the low-scale input: the image resized by `1 / factor` (bilinear, half-pixel centers).

    The size is `ceil(h / factor), ceil(w / factor)`, so odd sizes keep their last row and column.
    At factor 2 and even sizes this is exactly the mean of each 2x2 block.

    Args:
        factor: integer downsampling factor (the paper uses 2).

    Input `(batch, h, w, c)`, output `(batch, ceil(h / factor), ceil(w / factor), c)`.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"Downsample factor must be a positive integer, got {factor!r}")
        self.factor = factor

    def call(self, images):
        h, w = spatial_size(images)
        f = self.factor
        return resize_bilinear(images, ((h + f - 1) // f, (w + f - 1) // f))

    def compute_output_shape(self, input_shape):
        f = self.factor
        ceil = lambda n: None if n is None else (n + f - 1) // f
        return (input_shape[0], ceil(input_shape[1]), ceil(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
