"""The serving graph shared by every export format: uint8 RGB images in, class map and fused maps out."""

import keras
from keras import ops

from synergyseg.models.synergy import as_synergyseg
from synergyseg.models.names import FUSED, UNCERTAINTY

# Output names of every exported artifact (SavedModel signature, TFLite signature, ONNX outputs).
# The exported model's outputs, by name, in every format.
CLASS_MAP, PROBABILITIES = "class_map", "probabilities"
SERVING_OUTPUTS = (CLASS_MAP, PROBABILITIES, UNCERTAINTY)


@keras.saving.register_keras_serializable(package="synergyseg")
class ImagesToFloat(keras.layers.Layer):
    """Casts a uint8 image batch to float32 in [0, 255], exactly what Keras does to the model's input.

    Done before the model, not inside it, so the half-resolution branch resizes float pixels as
    in training (resizing uint8 pixels would round them).

    Input `(batch, h, w, 3)` uint8; output the same shape, float32.
    """

    def call(self, images):
        return ops.cast(images, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype="float32")


@keras.saving.register_keras_serializable(package="synergyseg")
class ClassMap(keras.layers.Layer):
    """The predicted class of each pixel: argmax over the last axis of `(batch, h, w, classes)`, int32.

    Output `(batch, h, w)` int32.
    """

    def call(self, probabilities):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # keras.ops.argmax adds a negative-zero fix built on BitwiseAnd, which TFLite has no
            # builtin kernel for; probabilities are never negative, so plain argmax is the same.
            return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return ops.cast(ops.argmax(probabilities, axis=-1), "int32")

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape[:-1], dtype="int32")


def build_serving_model(model):
    """A model sharing `model`'s weights: uint8 `images` -> {class_map, probabilities, uncertainty}.

    Args:
        model: a trained SynergySeg model (from `build_synergyseg` or its `.keras` file).

    Returns:
        A Keras model with input "images" `(batch, h, w, 3)` uint8 of any size and a dict output:
        "class_map" `(batch, h, w)` int32 (argmax of the fused probabilities), "probabilities"
        `(batch, h, w, classes)` float32 (the fused map) and "uncertainty" `(batch, h, w, 1)`
        float32 (the paper's upsampled low-scale uncertainty mask).

    Example:
        >>> serving = build_serving_model(keras.models.load_model("run/best.keras"))
        >>> serving(np.zeros((1, 64, 64, 3), np.uint8))["class_map"].shape   # (1, 64, 64)
    """
    scales = as_synergyseg(model).with_fusion(scale_outputs=True)
    images = keras.Input((None, None, 3), dtype="uint8", name="images")
    outputs = scales(ImagesToFloat(name="images_to_float")(images))
    # Identity layers give each output a stable name in every format.
    probabilities = keras.layers.Identity(name=PROBABILITIES)(outputs[FUSED])
    serving_outputs = {
        CLASS_MAP: ClassMap(name=CLASS_MAP)(probabilities),
        PROBABILITIES: probabilities,
        UNCERTAINTY: keras.layers.Identity(name=UNCERTAINTY)(outputs[UNCERTAINTY]),
    }
    return keras.Model(images, serving_outputs, name=f"{model.name}_serving")
