"""SavedModel export with a `serving_default` signature that runs without synergyseg installed."""

import tensorflow as tf

from synergyseg.atomic import atomic_output
from synergyseg.export.serving import SERVING_OUTPUTS, build_serving_model
from synergyseg.models.names import INPUT

SIGNATURE_KEY = "serving_default"


def serving_module(serving, input_shape=(None, None, None, 3)):
    """A `tf.Module` holding `serving`'s variables once and a `serve` function over uint8 images.

    Keras's `model.export` tracks the model and its own variable list, which stored every
    variable twice (309 MB for 162 MB of weights); tracking only the variables and the traced
    function stores them once. `input_shape` fixes the input size (TFLite needs a static one).
    """
    module = tf.Module()
    module.serving_variables = [v.value for v in serving.variables]

    # No AutoGraph: nothing here to convert (the Keras model is traced as it is), and converting
    # this closure a second time in one process fails with a warning ("closure mismatch").
    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.uint8, name=INPUT)], autograph=False)
    def serve(images):
        return serving(images, training=False)

    module.serve = serve
    return module


def export_saved_model(model, path, outputs=SERVING_OUTPUTS, class_map_stride=1):
    """Writes `model` as a SavedModel whose `serving_default` maps uint8 images to the class map.

    The signature takes "images" `(batch, h, w, 3)` uint8 RGB of any batch and size and returns
    "class_map" `(batch, h, w)` int32, "probabilities" `(batch, h, w, classes)` float32 (fused)
    and "uncertainty" `(batch, h, w, 1)` float32 (those `outputs` names). It loads with
    `tf.saved_model.load` alone.

    Args:
        model: a trained SynergySeg model.
        path: the SavedModel folder to write (replaced if it exists, only once complete).
        outputs, class_map_stride: as in `build_serving_model`.

    Example:
        >>> export_saved_model(model, "export/saved_model")
        >>> serve = tf.saved_model.load("export/saved_model").signatures["serving_default"]
        >>> serve(images=tf.zeros((1, 512, 1024, 3), tf.uint8))["class_map"]
    """
    module = serving_module(build_serving_model(model, outputs, class_map_stride))
    with atomic_output(path) as tmp:
        tf.saved_model.save(module, tmp, signatures={SIGNATURE_KEY: module.serve})
    return path
